"""Atomic writes: a reader (another runner, a trainer, a crash) sees the old file or folder or the whole new one, never
half; a folder is replaced whole only when runner wrote everything in it (its marker file lists what)."""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yields the path to write instead of `path` (by default a hidden sibling, `.NAME.tmp`); when the block ends it
    becomes `path` in one rename, and if the block fails it is removed."""
    tmp = tmp or path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


class NotOurs(Exception):
    """A folder runner was asked to replace holds something runner did not write there (the message says what)."""


def not_ours(path: Path, marker: str) -> str | None:
    """Why `path` may not be replaced whole, or None: it is missing, an empty folder, or a folder holding only the
    files that runner wrote there (listed in its `marker` file)."""
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    names = {p.name for p in path.iterdir()}
    if names and marker not in names:
        return f"{path} is a folder that runner did not write (it holds {_some(names)})"
    try:
        written = set((path / marker).read_text().splitlines()) if names else set()
    except OSError:
        written = set()
    others = names - written - {marker}
    return f"{path} holds files that runner did not write there: {_some(others)}" if others else None


def _some(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - len(shown)} more" if len(names) > len(shown) else "")


@contextmanager
def replacing_folder(path: Path, marker: str) -> Iterator[Path]:
    """Yields an empty staging folder beside `path`; when the block ends the staging folder, marked as runner's
    (a file `marker` listing what it holds), takes the place of `path` in one swap: a reader or a crash sees
    the old folder or the new one, never half. Raises NotOurs, writing nothing, if `path` holds anything
    runner did not write (not_ours)."""
    problem = not_ours(path, marker)
    if problem:
        raise NotOurs(problem)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphan_stagings(path)
    staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix(path)}{os.getpid()}.", dir=path.parent))
    try:
        yield staging
        (staging / marker).write_text("".join(f"{p.name}\n" for p in sorted(staging.iterdir())))
        problem = not_ours(path, marker)  # again: something may have been put there meanwhile
        if problem:
            raise NotOurs(problem)
        _swap(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _staging_prefix(path: Path) -> str:
    """Staging folders beside `path` are named with this machine and the writing process's id: a killed runner's
    staging folder is known by its dead process, and one of another machine (a shared folder) is never touched."""
    return f".{path.name}.runner-staging.{socket.gethostname()}."


def _remove_orphan_stagings(path: Path) -> None:
    """Remove what a runner of this machine killed while replacing `path` left beside it (its staging folder, or the
    old folder between the two renames of _swap): runner's own names, of a process that is gone."""
    prefix = _staging_prefix(path)
    for p in path.parent.glob(glob.escape(prefix) + "*"):
        pid = p.name[len(prefix):].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _swap(new: Path, path: Path) -> None:
    """Put folder `new` at `path`; the folder that was there is removed."""
    try:
        os.rename(new, path)  # onto a missing or empty folder: one atomic rename
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if _exchange(new, path):
        shutil.rmtree(new)  # it holds the old folder now
        return
    # no renameat2 (not Linux, or a file system without it): two renames; a crash between them leaves the old
    # folder beside, under a hidden name
    old = new.with_name(new.name + ".old")
    os.rename(path, old)
    os.rename(new, path)
    shutil.rmtree(old)


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(err, os.strerror(err), str(b))
