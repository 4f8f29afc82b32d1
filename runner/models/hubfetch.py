"""Verify model files against the hub's hashes, and fetch them with the standard library only.

This file runs in two places: runner.models.download imports it here (verification and its record), and
`runner download --host` sends it to the machine that downloads, where a bare Python (the trainer image's) runs it:

    python hubfetch.py states|fetch ITEMS.json

ITEMS.json: {"root": models folder, "items": [{"repo", "revision", "filename", "size", "sha256", "blob_id", "dest"}]}.
HF_ENDPOINT and HF_TOKEN come from the environment (the token never from an argument or a file). Output: one line
per event, `runner-fetch {json}`: {"file", "state"} (states: present, unverified, partial, missing; fetch: skipped,
verified, fetched), {"file", "done"} while bytes arrive, {"file", "error"} before exit 1.

A file is fetched into `.NAME.incomplete` beside it, resumed with an HTTP Range request after an interruption, hashed
(SHA-256 for LFS files, the git blob SHA-1 for the rest) and only then renamed into place. The record of verified
files (size, mtime, hash) beside the models makes a later run fetch and hash nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlsplit

RECORD = ".runner-verified.json"
PREFIX = "runner-fetch "
CHUNK = 1 << 20


class Mismatch(Exception):
    """A downloaded file's hash is not the hub's; the file was deleted."""


def expected(sha256: str | None, blob_id: str | None) -> str:
    return f"sha256:{sha256}" if sha256 else f"git:{blob_id}"


def actual(path: Path, lfs: bool) -> str:
    if lfs:
        h = hashlib.sha256()
    else:
        h = hashlib.sha1()
        h.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return f"{'sha256' if lfs else 'git'}:{h.hexdigest()}"


class Verified:
    """The record of files already checked against the hub's hashes, keyed by absolute path."""

    def __init__(self, root: Path):
        self.path = root / RECORD
        try:
            self.data: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def state(self, dest: Path, size: int, want: str, partial: bool) -> str:
        """present, unverified (whole, not hashed yet), partial or missing; partial: an interrupted download is kept."""
        try:
            st = dest.stat()
        except OSError:
            return "partial" if partial else "missing"
        if st.st_size != size:
            return "partial"
        seen = self.data.get(str(dest.resolve()))
        return "present" if seen == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": want} else "unverified"

    def add(self, dest: Path, want: str) -> None:
        st = dest.stat()
        self.data[str(dest.resolve())] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": want}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{RECORD}.")
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def bring(verified: Verified, dest: Path, size: int, want: str, partial: bool, download: Callable[[bool], None]) -> str:
    """Make `dest` a verified copy: skipped (recorded already), verified (whole, hashed now) or fetched (download(force),
    force: a whole file of the right size with other bytes is replaced). Mismatch when the download's hash is wrong."""
    state = verified.state(dest, size, want, partial)
    if state == "present":
        return "skipped"
    lfs = want.startswith("sha256:")
    if state == "unverified" and actual(dest, lfs) == want:
        verified.add(dest, want)
        return "verified"
    download(state == "unverified")
    if actual(dest, lfs) != want:
        dest.unlink()
        raise Mismatch(f"does not match the hub's hash ({want}); the file was deleted")
    verified.add(dest, want)
    return "fetched"


# --- the machine that downloads ----------------------------------------------------------------------------------


def partial_of(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.incomplete")


class _TokenStaysOnTheHub(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the token only to the host it was meant for (the hub's CDN gets signed URLs)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


def _get(item: dict, endpoint: str, token: str, report: Callable[[int], None]) -> None:
    dest, size = Path(item["dest"]), item["size"]
    part = partial_of(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        have = 0
    request = urllib.request.Request(f"{endpoint}/{item['repo']}/resolve/{item['revision']}/{quote(item['filename'])}",
                                     headers={"User-Agent": "runner-download"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.build_opener(_TokenStaysOnTheHub()).open(request, timeout=60) as r:
        if r.status != 206:
            have = 0  # the server sent the whole file
        with part.open("ab" if have else "wb") as f:
            while chunk := r.read(CHUNK):
                f.write(chunk)
                have += len(chunk)
                report(have)
    if have != size:
        raise OSError(f"got {have} of {size} bytes")
    os.replace(part, dest)


def _say(**event) -> None:
    print(PREFIX + json.dumps(event), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("states", "fetch"):
        print("usage: hubfetch.py states|fetch ITEMS.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[1]).read_text())
    verified = Verified(Path(spec["root"]))
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or "https://huggingface.co"
    token = os.environ.get("HF_TOKEN", "")
    for item in spec["items"]:
        dest, want = Path(item["dest"]), expected(item["sha256"], item["blob_id"])
        partial = partial_of(dest).exists()
        if argv[0] == "states":
            _say(file=item["dest"], state=verified.state(dest, item["size"], want, partial))
            continue
        last = [0.0]

        def report(done: int, name=item["dest"]) -> None:
            if time.monotonic() - last[0] > 0.5:
                last[0] = time.monotonic()
                _say(file=name, done=done)

        try:
            state = bring(verified, dest, item["size"], want, partial, lambda force, it=item: _get(it, endpoint, token, report))
        except (Mismatch, OSError, http.client.HTTPException) as e:
            _say(file=item["dest"], error=str(e))
            return 1
        _say(file=item["dest"], state=state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
