"""Dataset fingerprints kept beside each trainer's cache, so a run re-caches exactly when the data changed.

What is hashed, and why:
- every media file's relative path, byte size, and a SHA-256 of its first and last 64 KiB. A re-encode, trim or
  replacement changes the container header, the index at the end (MP4 moov/Matroska cues) or the size; reading
  128 KiB per file keeps a 50 GB dataset at a few seconds, where a full SHA-256 would cost minutes on every run.
  mtime is left out on purpose: copying or touching files must not throw away a valid cache. The blind spot is
  an in-place edit of the middle of a file that keeps its size, head and tail, which re-encoders do not produce.
- every caption file in full (they are small, and a changed caption changes the text-encoder cache).
- the settings that shape the caches: trainer, T2V or I2V, resolutions, frames, source_fps, caption extension.
  Not repeats, seed or learning rate: those do not change a cached latent.

diffusion-pipe's own cache check covers paths, captions and buckets but not media bytes; musubi has none.
"""

from __future__ import annotations

import hashlib
import json
import os
from enum import Enum
from pathlib import Path

from pydantic import BaseModel

from runner.data.media import media_files
from runner.spec import Dataset, Task, Trainer

FILE_NAME = "runner-fingerprint.json"
VERSION = 1
_EDGE = 64 * 1024


class CacheState(str, Enum):
    fresh = "fresh"
    stale = "stale"
    missing = "missing"


class Fingerprint(BaseModel):
    version: int = VERSION
    settings: dict
    media: str
    captions: str
    files: int

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def _edges(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(f.read(_EDGE))
        if size > 2 * _EDGE:
            f.seek(-_EDGE, os.SEEK_END)
        h.update(f.read(_EDGE))
    return size, h.hexdigest()


def fingerprint(dataset: Dataset, trainer: Trainer, task: Task, media: list[Path] | None = None) -> Fingerprint:
    """The fingerprint of `dataset` as `trainer` would cache it for `task`; media: its media files when they
    are already listed (media.media_files with the dataset's caption extension)."""
    if media is None:
        media = media_files(dataset.path, dataset.caption_extension)[0]
    caption_ext = ".txt" if trainer is Trainer.diffpipe else dataset.caption_extension
    media_hash, caption_hash = hashlib.sha256(), hashlib.sha256()
    for path in media:
        size, edges = _edges(path)
        media_hash.update(f"{path.name}\0{size}\0{edges}\n".encode())
        caption = path.with_name(path.stem + caption_ext)
        text = caption.read_bytes() if caption.is_file() else b"\0missing"
        caption_hash.update(path.name.encode() + b"\0" + hashlib.sha256(text).digest())
    settings = {
        "trainer": trainer.value,
        "i2v": task.is_i2v,
        "resolutions": [list(r) if isinstance(r, tuple) else r for r in dataset.resolutions],
        "frames": dataset.frames,
        "source_fps": dataset.source_fps,
        "caption_extension": caption_ext,
    }
    return Fingerprint(settings=settings, media=media_hash.hexdigest(), captions=caption_hash.hexdigest(), files=len(media))


def state_of(recorded_text: str | None, fp: Fingerprint) -> CacheState:
    """fresh: the cache was recorded for exactly this data and settings; stale: it was made for something else
    (re-cache: diffpipe --regenerate_cache, musubi re-running both caching scripts); missing: no cache or no record.
    `recorded_text` is the FILE_NAME beside the cache (None: none), read from whichever host holds the cache."""
    try:
        recorded = Fingerprint.model_validate_json(recorded_text) if recorded_text is not None else None
    except ValueError:
        recorded = None
    if recorded is None:
        return CacheState.missing
    return CacheState.fresh if recorded.digest == fp.digest else CacheState.stale


def why_stale(recorded_text: str, fp: Fingerprint) -> list[str]:
    """What differs from the recorded fingerprint, in words."""
    old = json.loads(recorded_text)
    new = fp.model_dump()
    out = [f"{k}: {old['settings'].get(k)!r} → {v!r}" for k, v in new["settings"].items() if old.get("settings", {}).get(k) != v]
    if old.get("files") != new["files"]:
        out.append(f"files: {old.get('files')} → {new['files']}")
    elif old.get("media") != new["media"]:
        out.append("media content changed")
    if old.get("captions") != new["captions"]:
        out.append("captions changed")
    return out
