"""One process at a time per piece of work on this machine: a second `runner` that would do the same work (build
one image on one engine, send one image to one host) waits for the first, then finds it done, instead of doing it
again alongside. This user's lock files under $XDG_CACHE_HOME/runner/; the kernel drops a lock when its process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path
from typing import Callable, Iterator


def lock_file(kind: str, key: str) -> Path:
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "runner" / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{re.sub(r'[^A-Za-z0-9._-]', '-', key)}.lock"


@contextlib.contextmanager
def one_at_a_time(kind: str, key: str, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold the lock on (kind, key); `waiting` is called once when another process holds it, before waiting for it."""
    with open(lock_file(kind, key), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
