"""Incremental file sync over SSH: rsync when both sides have it (runner.remote.rsync), SFTP otherwise.

What this machine sends is tree.scan's view of the folder (links out of it, loops and dangling links refused).
One `find` round trip lists the host's side. A file moves when its size or mtime differ there; with by_content
(the job's dataset fingerprint changed: runner.jobs.launch) every file whose size matches is compared by checksum
instead, so an edit that kept the size and the mtime is sent too. Permissions are kept (0600 stays 0600).
Each file is written under a temporary name and renamed into place; a failure removes it, and the next sync
removes any that a lost connection left (`.NAME.runner-part`), so no half-written file is ever taken for a whole one.
Deletions happen only inside the target folder, except its `skip` folders. The source side is only read.

`RUNNER_SYNC=sftp` (or `rsync`) picks the way; `auto`, the default, takes rsync when it is on both sides.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from runner import files, preflight
from runner.errors import UserError
from runner.remote import rsync
from runner.remote.ssh import RemoteShell, lost
from runner.remote.tree import PART, Entry, Manifest, scan

Progress = Callable[[int], None]
# diffusion-pipe caches latents in <dataset>/cache/: theirs on each side, never synced or deleted
DATASET_KEEP = ("cache",)
SFTP_MTIMES = (0, 2**32 - 1)  # SFTP v3 carries mtimes as unsigned 32-bit seconds: 1970-01-01 … 2106-02-07
CHUNK = 1 << 18
WAYS = ("auto", "rsync", "sftp")


@dataclass
class Stats:
    files: int = 0
    bytes: int = 0
    deleted: int = 0
    total_files: int = 0
    way: str = "sftp"
    clamped: list[str] = field(default_factory=list)  # files whose mtime SFTP cannot carry: the host's copy got the nearest


def way(shell: RemoteShell) -> str:
    """rsync or sftp, as RUNNER_SYNC asks (auto: rsync when this machine and the host both have it)."""
    asked = os.environ.get("RUNNER_SYNC", "auto")
    if asked not in WAYS:
        raise UserError("RUNNER_SYNC", f"is {asked!r}.", "set it to auto (the default), rsync or sftp, or unset it.")
    if asked == "sftp":
        return "sftp"
    if rsync.available(shell):
        return "rsync"
    if asked == "rsync":
        raise UserError(f"host {shell.name}", "has no rsync, or this machine has no rsync or ssh, and RUNNER_SYNC=rsync asks for it.",
                        "install rsync on both sides (`apt-get install rsync openssh-client`), or unset RUNNER_SYNC to sync over SFTP.")
    return "sftp"


_FIND = 'cd -- "$1" && shift && exec find . "$@" -type f -printf "%P\\0%s\\0%T@\\0%m\\0"'
_LIST = '[ -d "$1" ] || exit 0; ' + _FIND
# the target folder made and checked writable, its free space (one df line), then its files: one round trip
_PREPARE = 'mkdir -p -- "$1" && [ -w "$1" ] || { echo "cannot create or write $1" >&2; exit 3; }; df -Pk -- "$1" | tail -n 1; ' + _FIND


def remote_manifest(shell: RemoteShell, root: str, skip: tuple[str, ...] = ()) -> tuple[Manifest, list[str]]:
    """The files under root on the host, and runner's half-written copies there (relative paths)."""
    manifest, parts, _ = _survey(shell, root, skip, prepare=False)
    return manifest, parts


def _survey(shell: RemoteShell, root: str, skip: tuple[str, ...], prepare: bool) -> tuple[Manifest, list[str], str]:
    """remote_manifest, and with prepare the folder made first and its `df` line (else "")."""
    prune = [a for name in skip for a in ("-path", f"./{name}", "-prune", "-o")]
    r = shell.run(["sh", "-c", _PREPARE if prepare else _LIST, "sh", root, *prune], timeout=300)
    if not r.ok:
        raise UserError(f"host {shell.name}: {root}", f"cannot be listed or written ({r.stderr.strip()[:300]}).",
                        "give the SSH user write access there, or choose other folders with `runner hosts add NAME … --data/--cache DIR`.")
    head, _, listing = r.stdout.partition("\n") if prepare else ("", "", r.stdout)
    fields = listing.split("\0")
    out: Manifest = {}
    parts: list[str] = []
    for i in range(0, len(fields) - 3, 4):
        rel, size, mtime, mode = fields[i : i + 4]
        if rel.endswith(PART):
            parts.append(rel)
        else:
            out[rel] = Entry(int(size), int(float(mtime)), int(mode, 8))
    return out, parts, head


def upload(shell: RemoteShell, local_root: Path, remote_root: str, what: str, skip: tuple[str, ...] = (), by_content: bool = False,
           progress: Progress | None = None, how: str | None = None) -> Stats:
    """Make remote_root hold exactly local_root's files (except `skip` top-level folders, never touched there).
    how: rsync or sftp (default: way(shell))."""
    src = scan(local_root, skip)
    how = how or way(shell)
    dst, parts, df = _survey(shell, remote_root, skip, prepare=True)
    stats = Stats(total_files=len(src), way=how)
    if how == "sftp":
        stats.clamped = [rel for rel, e in src.items() if _clamp(e.mtime) != e.mtime]
        src = {rel: dataclasses.replace(e, mtime=_clamp(e.mtime)) for rel, e in src.items()}
    stale = [rel for rel, e in src.items() if rel not in dst or (dst[rel].size, dst[rel].mtime) != (e.size, e.mtime)]
    extra = sorted(set(dst) - set(src))
    need = sum(src[rel].size - (dst[rel].size if rel in dst else 0) for rel in stale)
    if need > 0:
        preflight.check_free(shell, remote_root, need, f"syncing {what} ({len(stale)} files)", free=_free_bytes(df))
    if not (stale or extra or parts or by_content) and all(dst[rel].mode == e.mode for rel, e in src.items()):
        return stats
    if how == "rsync":
        # checksums matter only where a file of the same size is there already (not on a first, cold sync)
        by_content = by_content and any(rel in dst and dst[rel].size == e.size for rel, e in src.items())
        try:
            pushed = rsync.push(shell, local_root, remote_root, skip, by_content, f"*{PART}", progress)
        except rsync.Failed as e:
            _raise_write(shell, remote_root, what, "", e, link_failed=e.code in rsync.LINK_FAILED)
        stats.files, stats.bytes, stats.deleted = pushed.files, pushed.bytes, pushed.deleted
        return stats
    _sftp_upload(shell, local_root, remote_root, what, src, dst, parts, extra, by_content, stats, progress)
    return stats


def _free_bytes(df_line: str) -> int | None:
    """Free bytes from `df -Pk`'s line (None if df said nothing usable: preflight asks again)."""
    cols = df_line.split()
    return int(cols[3]) * 1024 if len(cols) >= 4 and cols[3].isdigit() else None


def _clamp(mtime: int) -> int:
    return min(max(mtime, SFTP_MTIMES[0]), SFTP_MTIMES[1])


def _sftp_upload(shell: RemoteShell, local_root: Path, remote_root: str, what: str, src: Manifest, dst: Manifest, parts: list[str],
                 extra: list[str], by_content: bool, stats: Stats, progress: Progress | None) -> None:
    same_size = [rel for rel, e in src.items() if rel in dst and dst[rel].size == e.size]
    if by_content:
        kept = set(same_size) - set(_differing(shell, local_root, remote_root, same_size))
    else:
        kept = {rel for rel in same_size if dst[rel].mtime == src[rel].mtime}
    send = sorted(set(src) - kept)
    preflight.make_dirs(shell, sorted({posixpath.dirname(posixpath.join(remote_root, rel)) for rel in send} - {remote_root}))
    sftp = _sftp(shell)
    for rel in parts:
        _discard(sftp, posixpath.join(remote_root, rel))
    for rel in send:
        _put(sftp, shell, local_root, remote_root, what, rel, src[rel], progress)
        stats.files += 1
        stats.bytes += src[rel].size
    for rel in sorted(kept):
        target, e = posixpath.join(remote_root, rel), src[rel]
        try:
            if dst[rel].mtime != e.mtime:
                sftp.utime(target, (e.mtime, e.mtime))
            if dst[rel].mode != e.mode:
                sftp.chmod(target, e.mode)
        except (OSError, EOFError) as err:
            _raise_write(shell, remote_root, what, rel, err)
    for rel in extra:
        _discard(sftp, posixpath.join(remote_root, rel))
    stats.deleted = len(extra)


def _put(sftp, shell: RemoteShell, local_root: Path, remote_root: str, what: str, rel: str, e: Entry, progress: Progress | None) -> None:
    """One file under its temporary name, its permissions set before any byte is written, then renamed into place."""
    target = posixpath.join(remote_root, rel)
    head, tail = posixpath.split(target)
    part = posixpath.join(head, f".{tail}{PART}")
    try:
        with (local_root / rel).open("rb") as source, sftp.open(part, "wb") as out:
            out.chmod(e.mode)
            out.set_pipelined(True)
            while chunk := source.read(CHUNK):
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        sftp.utime(part, (e.mtime, e.mtime))
        sftp.posix_rename(part, target)
    except BaseException as err:
        _discard(sftp, part)
        if isinstance(err, (OSError, EOFError)):
            _raise_write(shell, remote_root, what, rel, err)
        raise


def _differing(shell: RemoteShell, local_root: Path, remote_root: str, rels: list[str]) -> list[str]:
    """Those of rels whose content differs between here and the host (SHA-256 on both sides)."""
    if not rels:
        return []
    r = shell.run(["sh", "-c", 'cd -- "$1" && exec xargs -0 -r sha256sum -z --', "sh", remote_root],
                  stdin=b"".join(rel.encode() + b"\0" for rel in rels), timeout=3600)
    if not r.ok:
        raise UserError(f"host {shell.name}: {remote_root}", f"cannot checksum its files ({r.stderr.strip()[:300]}).",
                        "check that sha256sum (GNU coreutils) is on the host and the folder is readable.")
    there = {line[66:]: line[:64] for line in r.stdout.split("\0") if line}
    return [rel for rel in rels if there.get(rel) != _sha256(local_root / rel)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _local_files(root: Path) -> Manifest:
    """What a pull finds in the folder it writes into: regular files only (a link there is replaced, never written through)."""
    out: Manifest = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode) and not name.endswith(PART):
                out[Path(dirpath, name).relative_to(root).as_posix()] = Entry(st.st_size, int(st.st_mtime), stat.S_IMODE(st.st_mode))
    return out


def download(shell: RemoteShell, remote_root: str, local_root: Path, progress: Progress | None = None) -> Stats:
    """Bring remote_root's new or changed files into local_root; local files not on the remote stay."""
    src, _ = remote_manifest(shell, remote_root)
    dst = _local_files(local_root) if local_root.is_dir() else {}
    todo = sorted(rel for rel, e in src.items() if rel not in dst or (dst[rel].size, dst[rel].mtime) != (e.size, e.mtime))
    stats = Stats(total_files=len(src))
    sftp = _sftp(shell) if todo else None
    for rel in todo:
        target = local_root / rel
        e = src[rel]
        try:
            with files.replacing(target, target.with_name(f".{target.name}{PART}")) as part:
                sftp.get(posixpath.join(remote_root, rel), str(part))
                os.utime(part, (e.mtime, e.mtime))
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise UserError(str(local_root), "the disk here filled up while pulling outputs.", "free space here and run `runner pull` again; it resumes.") from None
            raise lost(shell.name, err) from None
        stats.files += 1
        stats.bytes += e.size
        if progress:
            progress(e.size)
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


def _raise_write(shell: RemoteShell, remote_root: str, what: str, rel: str, e: BaseException, link_failed: bool = False):
    at = f" (at {rel})" if rel else ""
    try:
        free = preflight.free_bytes(shell, [remote_root])[remote_root]
    except UserError:
        raise lost(shell.name, e) from None
    if free < 1 << 20 or getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e):
        raise UserError(
            f"host {shell.name}: {remote_root}",
            f"the disk filled up while syncing {what}{at}; {free // 1024} KiB left. Nothing was started; the partial file was "
            "removed and your local files are untouched.",
            "free space there, or point the host's data folder at a larger disk (`runner hosts add NAME … --data DIR`), then run again.",
        ) from None
    if link_failed:
        raise lost(shell.name, e) from None
    raise UserError(f"host {shell.name}: {remote_root}", f"writing{at} failed while syncing {what} ({e}). Nothing was started.",
                    "check the folder's permissions and free space there, then run again.") from None
