"""A folder on this machine as sync sends it: every regular file under it, with size, mtime and permissions.

Symbolic links inside the folder are followed (a link to a file there is sent as that file, a link to a folder
there as that folder's files). A link out of the folder is refused, never followed: following it would copy a
file from elsewhere on this machine (a key, a private document) onto a host other people use. Loops and dangling
links are refused too, each error naming the link. Other special files (sockets, fifos, devices) are left out.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from runner.errors import UserError

PART = ".runner-part"  # runner's half-written copies: never part of a folder's content


@dataclass(frozen=True)
class Entry:
    size: int
    mtime: int  # whole seconds, any value (before 1970 or after 2106 too)
    mode: int  # permission bits


Manifest = dict[str, Entry]  # relative posix path → entry


def scan(root: Path, skip: tuple[str, ...] = ()) -> Manifest:
    """The files under root (except `skip` top-level folders); UserError on a link out, a loop or a dangling link."""
    top = os.path.realpath(root)
    out: Manifest = {}
    _visit(root, Path(top), "", top, frozenset({_dir_id(top)}), skip, out)
    return out


def _visit(root: Path, real_dir: Path, rel_dir: str, top: str, ancestors: frozenset, skip: tuple[str, ...], out: Manifest) -> None:
    with os.scandir(real_dir) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if (not rel_dir and entry.name in skip) or entry.name.endswith(PART):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                real = _link_target(root, rel, Path(entry.path), top)
                st = os.stat(real)
            else:
                real, st = entry.path, entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in ancestors:  # a link to a folder that holds it: following it never ends
                    raise _link_error(root, rel, "is a symbolic link loop: it points to a folder that contains it")
                _visit(root, Path(real), rel, top, ancestors | {key}, skip, out)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = Entry(st.st_size, int(st.st_mtime), stat.S_IMODE(st.st_mode))


def _dir_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _link_target(root: Path, rel: str, link: Path, top: str) -> str:
    try:
        real = os.path.realpath(link, strict=True)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _link_error(root, rel, "is a symbolic link loop: it resolves to itself") from None
        raise _link_error(root, rel, f"is a dangling symbolic link: its target {os.readlink(link)} does not exist") from None
    if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
        q = shlex.quote(str(root / rel))
        raise UserError(str(root / rel), f"is a symbolic link out of the dataset folder (to {real}). runner never follows it: that "
                        "would copy a file from elsewhere on this machine to the host.",
                        f"put the file itself in the dataset folder (`cp --remove-destination {shlex.quote(real)} {q}`), or remove the "
                        f"link (`rm {q}`), then run again.")
    return real


def _link_error(root: Path, rel: str, problem: str) -> UserError:
    q = shlex.quote(str(root / rel))
    return UserError(str(root / rel), f"{problem}, so sync cannot read it.",
                     f"remove the link (`rm {q}`) or point it at a file inside the dataset folder (`ln -sfn TARGET {q}`), then run again.")
