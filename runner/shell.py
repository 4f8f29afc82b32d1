"""Run a command on the machine a job targets: this one (subprocess) or a remote host (Fabric over SSH).

Checks and inventories are written once against `Shell`, so local and remote GPUs get the same code.
Commands are argv lists; the remote side quotes them with shlex.join, so no argument can inject shell.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Shell(Protocol):
    name: str

    def run(self, argv: list[str], timeout: float = 60) -> Result: ...


class LocalShell:
    name = "localhost"

    def run(self, argv: list[str], timeout: float = 60) -> Result:
        started = time.monotonic()
        result = self._run(argv, timeout)
        log.debug("%s: %s → exit %d in %.2fs", self.name, shlex.join(argv), result.returncode, time.monotonic() - started)
        return result

    @staticmethod
    def _run(argv: list[str], timeout: float) -> Result:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout)
        except FileNotFoundError as e:
            return Result(127, "", f"{argv[0]}: command not found ({e.strerror})")
        except subprocess.TimeoutExpired:
            return Result(124, "", f"{shlex.join(argv)}: timed out after {timeout:.0f}s")
        return Result(p.returncode, p.stdout, p.stderr)


def missing_files(shell: Shell, root: str, relative: list[str]) -> list[str]:
    """Which of root/relative do not exist (one round trip)."""
    r = shell.run(["sh", "-c", 'cd -- "$1" 2>/dev/null || exit 3; shift; for f do [ -e "$f" ] || printf "%s\\n" "$f"; done', "sh", root, *relative], timeout=30)
    if r.returncode == 3:
        return relative
    return [line for line in r.stdout.splitlines() if line]
