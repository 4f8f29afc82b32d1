"""`runner download`: fetch a preset through huggingface_hub, verified against the hub's own metadata.

- The plan (files, sizes, what is already there) comes from the hub's file metadata before any byte moves.
- Files go through `hf_hub_download`, which resumes `.incomplete` files with HTTP ranges.
- Every file is checked after download: size, then SHA-256 for LFS files or the git blob SHA-1 for small ones.
  A record of verified files (size, mtime, hash) beside the models makes a second run fetch and hash nothing.
- HF_ENDPOINT (mirrors) and HF_TOKEN are read from the environment at call time; the token is never written,
  and huggingface_hub's stored login is not used (token=False when HF_TOKEN is unset).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
from rich.progress import Progress

from runner.errors import UserError
from runner.models import captioner
from runner.models.hubfetch import Mismatch, Verified, bring, expected
from runner.models.presets import Format, Want, get_preset, wanted
from runner.spec import Trainer

State = Literal["present", "unverified", "partial", "missing"]


@dataclass(frozen=True)
class Item:
    repo: str
    revision: str  # the commit the metadata was read at
    ref: str  # what was asked for ("main"); the HF cache records refs/<ref> -> revision
    filename: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob SHA-1, for the rest
    dest: Path
    folder: Path | None  # local folder, or None for the HF cache
    cache_dir: Path

    @property
    def watch_dir(self) -> Path:
        """Where huggingface_hub keeps this file's `.incomplete` while downloading."""
        if self.folder is None:
            return self.cache_dir / f"models--{self.repo.replace('/', '--')}" / "blobs"
        return self.folder / ".cache" / "huggingface" / "download" / Path(self.filename).parent


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"


def hub_token() -> str | bool:
    return os.environ.get("HF_TOKEN") or False


def plan(preset: str, fmt: Format, trainers: list[Trainer], root: Path, hf_cache: Path, revision: str = "main") -> list[Item]:
    """Every file to have, from the hub's metadata (one API call per repository)."""
    api = HfApi(endpoint=hub_endpoint(), token=hub_token())
    items: list[Item] = []
    wants = captioner.wants(preset) if preset.lower() in captioner.PRESETS else wanted(get_preset(preset), Format(fmt), trainers)
    for want in wants:
        items += _items(api, want, root, hf_cache, revision)
    return items


def _items(api: HfApi, want: Want, root: Path, hf_cache: Path, revision: str) -> list[Item]:
    try:
        info = api.model_info(want.repo, revision=revision, files_metadata=True)
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"{hub_endpoint()}/{want.repo}", f"cannot read the repository's file list ({e}).", "check HF_ENDPOINT, HF_TOKEN and the network") from e
    siblings = [s for s in info.siblings or [] if want.matches(s.rfilename)]
    missing = [p for p in want.patterns if not any(Want(want.repo, (p,), None).matches(s.rfilename) for s in siblings)]
    if missing:
        raise UserError(want.repo, f"has no file matching {', '.join(missing)} at revision {info.sha}.", "report it: the preset needs updating")
    out = []
    for s in siblings:
        if want.folder is None:
            dest = hf_cache / f"models--{want.repo.replace('/', '--')}" / "snapshots" / str(info.sha) / s.rfilename
        else:
            dest = root / want.folder / s.rfilename
        out.append(
            Item(
                repo=want.repo,
                revision=str(info.sha),
                ref=revision,
                filename=s.rfilename,
                size=int(s.size or 0),
                sha256=s.lfs.sha256 if s.lfs else None,
                blob_id=None if s.lfs else s.blob_id,
                dest=dest,
                folder=root / want.folder if want.folder else None,
                cache_dir=hf_cache,
            )
        )
    return out


def _state(verified: Verified, item: Item) -> State:
    return verified.state(item.dest, item.size, _expected(item), _incomplete(item))  # type: ignore[return-value]


def _incomplete(item: Item) -> bool:
    return item.watch_dir.is_dir() and any(item.watch_dir.glob("*.incomplete"))


def _expected(item: Item) -> str:
    return expected(item.sha256, item.blob_id)


def _fetch(item: Item, force: bool) -> None:
    common = dict(repo_id=item.repo, filename=item.filename, token=hub_token(), endpoint=hub_endpoint(), force_download=force)
    if item.folder is None:
        hf_hub_download(revision=item.ref, cache_dir=item.cache_dir, **common)
    else:
        hf_hub_download(revision=item.revision, local_dir=item.folder, **common)


def _watch(item: Item, progress: Progress, task, stop: threading.Event) -> None:
    while not stop.wait(0.2):
        sizes = [p.stat().st_size for p in item.watch_dir.glob("*.incomplete")] if item.watch_dir.is_dir() else []
        progress.update(task, completed=max(sizes, default=0))


def fetch(items: list[Item], root: Path, progress: Progress | None = None) -> dict[str, int]:
    """Bring every item to `present`. Returns counts: fetched, verified (already there, hashed once), skipped."""
    verified = Verified(root)
    counts = {"fetched": 0, "verified": 0, "skipped": 0}
    total = progress.add_task("total", total=sum(i.size for i in items)) if progress else None
    disable_progress_bars()
    try:
        for item in items:
            try:
                done = bring(verified, item.dest, item.size, _expected(item), _incomplete(item),
                             lambda force, it=item: _download(it, force, progress))
            except Mismatch as e:
                raise UserError(f"{item.repo}/{item.filename}", f"{e}.",
                                "run the command again; if it repeats, the mirror (HF_ENDPOINT) serves a different file") from None
            counts[done] += 1
            if progress and total is not None:
                progress.advance(total, item.size)
    finally:
        enable_progress_bars()
    return counts


def _download(item: Item, force: bool, progress: Progress | None) -> None:
    stop = threading.Event()
    watcher = None
    if progress:
        task = progress.add_task(item.filename, total=item.size)
        watcher = threading.Thread(target=_watch, args=(item, progress, task, stop), daemon=True)
        watcher.start()
    try:
        _fetch(item, force)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise UserError(f"{item.repo}/{item.filename}", f"download failed ({e}); what arrived is kept.", "run the command again to resume") from e
    finally:
        stop.set()
        if watcher:
            watcher.join()
            progress.update(task, completed=item.size, visible=False)  # type: ignore[union-attr]




def summarize(items: list[Item], root: Path) -> list[tuple[Item, State]]:
    verified = Verified(root)
    return [(item, _state(verified, item)) for item in items]
