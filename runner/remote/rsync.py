"""Push a folder to a host with rsync, through OpenSSH with the host's own key and known_hosts (ssh.openssh_argv).

rsync moves bytes at the link's speed (paramiko's SFTP is about half that), writes each file under a temporary
name that it renames into place or removes on any failure, and keeps mtimes and permissions. Links have been
checked by tree.scan before, so --copy-links follows only links inside the folder.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runner.remote import ssh
from runner.remote.ssh import RemoteShell

log = logging.getLogger(__name__)

# rsync's exit codes for a link that broke, timed out or never came up (ssh itself exits 255)
LINK_FAILED = {10, 12, 30, 35, 255}
VANISHED = 24  # a source file disappeared while sending: what was there was sent


@dataclass
class Pushed:
    files: int = 0
    bytes: int = 0
    deleted: int = 0


class Failed(Exception):
    def __init__(self, code: int, stderr: str):
        super().__init__(stderr.strip()[-500:] or f"rsync exited {code}")
        self.code = code


def available(shell: RemoteShell) -> bool:
    """rsync and ssh here, rsync on the host, and the host known well enough to run OpenSSH the same way."""
    if shell.host is None or not shutil.which("rsync") or not shutil.which("ssh"):
        return False
    return shell.run(["sh", "-c", "command -v rsync"], timeout=30).ok


def push(shell: RemoteShell, local_root: Path, remote_root: str, skip: tuple[str, ...], by_content: bool, hide: str,
         progress: Callable[[int], None] | None = None) -> Pushed:
    """Make remote_root hold local_root's files (skip: top-level folders neither sent nor deleted; hide: a pattern
    of local files never sent). by_content: compare every file by checksum, whatever its size and mtime."""
    host = shell.host
    assert host is not None
    address = f"[{host.address}]" if ":" in host.address else host.address
    argv = ["rsync", "--recursive", "--times", "--perms", "--copy-links", "--delete", "--protect-args", "--out-format=%i %l",
            *(["--checksum"] if by_content else []), *[f"--exclude=/{name}" for name in skip], f"--filter=H {hide}",
            "--rsh", shlex.join(ssh.openssh_argv(host, shell.conn)), f"{local_root.resolve()}/", f"{address}:{remote_root}/"]
    log.debug("%s: %s", shell.name, shlex.join(argv))
    done = Pushed()
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a long error list cannot block rsync while stdout is read
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True, errors="replace")
        code = _follow(proc, done, progress)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if code not in (0, VANISHED):
        raise Failed(code, stderr)
    return done


def _follow(proc: subprocess.Popen, done: Pushed, progress: Callable[[int], None] | None) -> int:
    try:
        for line in proc.stdout:
            item, _, size = line.rstrip("\n").rpartition(" ")
            if item.startswith("<f") and size.isdigit():
                done.files += 1
                done.bytes += int(size)
                if progress:
                    progress(int(size))
            elif item.startswith("*deleting"):
                done.deleted += 1
        return proc.wait()
    except BaseException:
        proc.terminate()  # rsync removes its temporary file on the host as it exits
        proc.wait()
        raise
