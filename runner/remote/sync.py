"""Incremental file sync over one SSH connection: manifests of (size, mtime), SFTP for the bytes.

One `find -printf` round trip lists the other side; only files whose size or mtime differ move, and mtimes
are preserved so the next sync finds nothing to do. Each file is written under a temporary name and renamed
into place, so a failure (disk full, dropped link) never leaves a truncated file where a good one is expected.
The source side is only read.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runner import files, preflight
from runner.errors import UserError
from runner.remote.ssh import RemoteShell, lost

Manifest = dict[str, tuple[int, int]]  # relative posix path → (size, mtime in whole seconds)
Progress = Callable[[int], None]
PART = ".runner-part"
# diffusion-pipe caches latents in <dataset>/cache/: theirs on each side, never synced or deleted
DATASET_KEEP = ("cache",)


@dataclass
class Stats:
    files: int = 0
    bytes: int = 0
    deleted: int = 0
    total_files: int = 0


def local_manifest(root: Path, skip: tuple[str, ...] = ()) -> Manifest:
    out: Manifest = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        for f in filenames:
            st = os.stat(os.path.join(dirpath, f))
            if stat.S_ISREG(st.st_mode) and not f.endswith(PART):
                out[f if rel_dir == "." else f"{rel_dir}/{f}"] = (st.st_size, int(st.st_mtime))
    return out


def remote_manifest(shell: RemoteShell, root: str, skip: tuple[str, ...] = ()) -> Manifest:
    r = shell.run(["sh", "-c", '[ -d "$1" ] || exit 0; exec find "$1" -type f -printf "%P\\0%s\\0%T@\\0"', "sh", root], timeout=300)
    if not r.ok:
        raise UserError(f"host {shell.name}: {root}", f"cannot be listed ({r.stderr.strip()[:300]}).", "check the folder's permissions there.")
    fields = r.stdout.split("\0")
    out: Manifest = {}
    for i in range(0, len(fields) - 2, 3):
        rel, size, mtime = fields[i : i + 3]
        if rel.split("/", 1)[0] in skip or rel.endswith(PART):
            continue
        out[rel] = (int(size), int(float(mtime)))
    return out


def changed(src: Manifest, dst: Manifest) -> list[str]:
    return sorted(rel for rel, meta in src.items() if dst.get(rel) != meta)


def _part(path: str) -> str:
    head, tail = posixpath.split(path)
    return posixpath.join(head, f".{tail}{PART}")


def upload(shell: RemoteShell, local_root: Path, remote_root: str, what: str, skip: tuple[str, ...] = (), delete: bool = True,
           progress: Progress | None = None) -> Stats:
    """Make remote_root hold exactly local_root's files (except `skip` top-level folders)."""
    src = local_manifest(local_root, skip)
    dst = remote_manifest(shell, remote_root, skip)
    todo = changed(src, dst)
    stats = Stats(total_files=len(src))
    need = sum(src[rel][0] - dst.get(rel, (0, 0))[0] for rel in todo)
    if need > 0:
        preflight.check_free(shell, remote_root, need, f"syncing {what} ({len(todo)} files)")
    dirs = sorted({posixpath.dirname(posixpath.join(remote_root, rel)) for rel in todo} | {remote_root})
    preflight.make_dirs(shell, dirs)
    sftp = _sftp(shell)
    for rel in todo:
        target = posixpath.join(remote_root, rel)
        part = _part(target)
        size, mtime = src[rel]
        try:
            sftp.put(str(local_root / rel), part, confirm=True)
            sftp.utime(part, (mtime, mtime))
            sftp.posix_rename(part, target)
        except (OSError, EOFError) as e:
            _discard(sftp, part)
            _raise_write(shell, remote_root, what, rel, e)
        stats.files += 1
        stats.bytes += size
        if progress:
            progress(size)
    if delete:
        extra = sorted(set(dst) - set(src))
        for rel in extra:
            _discard(sftp, posixpath.join(remote_root, rel))
        stats.deleted = len(extra)
    return stats


def download(shell: RemoteShell, remote_root: str, local_root: Path, progress: Progress | None = None) -> Stats:
    """Bring remote_root's new or changed files into local_root; local files not on the remote stay."""
    src = remote_manifest(shell, remote_root)
    dst = local_manifest(local_root) if local_root.is_dir() else {}
    todo = changed(src, dst)
    stats = Stats(total_files=len(src))
    sftp = _sftp(shell) if todo else None
    for rel in todo:
        target = local_root / rel
        size, mtime = src[rel]
        try:
            with files.replacing(target, Path(_part(str(target)))) as part:
                sftp.get(posixpath.join(remote_root, rel), str(part))
                os.utime(part, (mtime, mtime))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise UserError(str(local_root), "the disk here filled up while pulling outputs.", "free space here and run `runner pull` again; it resumes.") from None
            raise lost(shell.name, e) from None
        stats.files += 1
        stats.bytes += size
        if progress:
            progress(size)
    return stats


def _sftp(shell: RemoteShell):
    try:
        return shell.conn.sftp()
    except Exception as e:  # paramiko raises SSHException or EOFError when the subsystem is refused
        raise UserError(f"host {shell.name}", f"refused an SFTP session ({e}).", "enable the sftp subsystem in its sshd_config (`Subsystem sftp internal-sftp`).") from None


def _discard(sftp, path: str) -> None:
    try:
        sftp.remove(path)
    except (OSError, EOFError):
        pass


def _raise_write(shell: RemoteShell, remote_root: str, what: str, rel: str, e: BaseException):
    try:
        free = preflight.free_bytes(shell, [remote_root])[remote_root]
    except UserError:
        raise lost(shell.name, e) from None
    if free < 1 << 20 or getattr(e, "errno", None) == errno.ENOSPC:
        raise UserError(
            f"host {shell.name}: {remote_root}",
            f"the disk filled up while syncing {what} (at {rel}; {free // 1024} KiB left). Nothing was started; the partial file was "
            "removed and your local files are untouched.",
            "free space there, or point the host's data folder at a larger disk (`runner hosts add NAME … --data DIR`), then run again.",
        ) from None
    raise UserError(f"host {shell.name}: {remote_root}", f"writing {rel} failed while syncing {what} ({e}). Nothing was started.",
                    "check the folder's permissions and free space there, then run again.") from None
