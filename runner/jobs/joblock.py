"""One run of a job at a time: a lock per job output folder (`<output>/<name>` on the machine that starts it, where a
remote job's outputs are pulled to), kept where the job runs (runner's state on this machine, the host's cache folder
on a remote host), so that two runs of one job — `runner train` or `runner sample` — never share outputs, caches,
datasets and GPUs.

The lock is a file naming its holder (run id, kind, container, since when, pid and machine of the `runner` that took it),
written only while holding a short-lived mutex (an atomic `mkdir`), so checking the holder and taking over a stale
lock is one step. A holder is gone when its container no longer runs, or, before it has one, when its `runner`
process is gone (on another machine: after START_GRACE_S). Only Shell commands and the executor's small-file and
container-state calls are used: the same code serves this machine and SSH hosts.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import posixpath
import socket
import time
from pathlib import Path

from runner.errors import UserError
from runner.executors import Executor
from runner.jobs.records import SAMPLE, TRAIN, JobRecord, now

START_GRACE_S = 3600  # a run with no container yet may still be sending its image and data to a host
MUTEX_WAIT_S = 30.0  # a mutex older than this was left by a runner killed inside the few steps it guards
DOING = {TRAIN: "training", SAMPLE: "sampling"}
# why a second run of a job is refused while one runs (a lock written by an older runner names no kind: a training)
WHY = {
    (TRAIN, TRAIN): "two trainings of one job would overwrite each other's outputs and caches.",
    (TRAIN, SAMPLE): ("sampling now would load a second model onto the GPUs whose memory the training's plan counts on, and an "
                      "out of memory there could end the training; musubi samples while it trains with samples.during_training."),
    (SAMPLE, TRAIN): "the training would share the GPUs with the sampling, whose memory it counts on having alone.",
    (SAMPLE, SAMPLE): "two sample runs of one job would write the same converted LoRAs and contact sheet, and share the GPUs.",
}


def claim(executor: Executor, record: JobRecord, folder: str) -> str:
    """Take the lock of `record`'s job for its run (a training or a sample run: one lock for both), or raise UserError
    naming the run that holds it; returns the lock.
    folder: where the run writes, on the machine that runs it (on a host, the run's own folder there)."""
    path = posixpath.join(executor.locks_folder, hashlib.sha256(folder.encode()).hexdigest()[:24] + ".json")
    owner = {"run": record.id, "kind": record.kind, "container": record.container, "output": folder, "since": now(), "pid": os.getpid(),
             "machine": socket.gethostname()}
    with _mutex(executor, path):
        holder = _holder(executor, path)
        if holder and _alive(executor, holder):
            raise UserError(
                f"job {record.name}",
                f"is already running as run {holder['run']} ({DOING[holder.get('kind', TRAIN)]}, since {holder['since']}, "
                f"started by pid {holder['pid']} on {holder['machine']}), writing to {folder}; "
                f"{WHY[holder.get('kind', TRAIN), record.kind]}",
                f"follow it with `runner logs -f {holder['run']}`, stop it with `runner stop {holder['run']}`, or wait until it ends.")
        executor.write_text(Path(path), json.dumps(owner, indent=2))
    return path


def release(executor: Executor, path: str, run: str) -> None:
    """Give the lock back if `run` holds it (a later run may have taken it over since)."""
    with _mutex(executor, path):
        holder = _holder(executor, path)
        if holder and holder.get("run") == run:
            executor.shell.run(["rm", "-f", "--", path], timeout=30)


class _mutex:
    def __init__(self, executor: Executor, path: str):
        self.executor, self.folder = executor, path + ".mutex"

    def __enter__(self) -> None:
        run = self.executor.shell.run
        run(["mkdir", "-p", "--", posixpath.dirname(self.folder)], timeout=30)
        deadline = time.monotonic() + MUTEX_WAIT_S
        while not run(["mkdir", "--", self.folder], timeout=30).ok:
            if time.monotonic() > deadline:
                run(["rmdir", "--", self.folder], timeout=30)  # its runner died between mkdir and rmdir
                deadline = time.monotonic() + MUTEX_WAIT_S
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        self.executor.shell.run(["rmdir", "--", self.folder], timeout=30)


def _holder(executor: Executor, path: str) -> dict | None:
    text = executor.read_text(Path(path))
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None  # not runner's: treated as no holder


def _alive(executor: Executor, holder: dict) -> bool:
    state = executor.state(holder["container"])
    if state.get("Running") or state.get("Restarting"):
        return True
    if state and state.get("Status") != "created":
        return False  # its container ended
    if holder.get("machine") == socket.gethostname():
        return _process_alive(int(holder.get("pid", 0)))
    started = calendar.timegm(time.strptime(holder["since"], "%Y-%m-%dT%H:%M:%SZ"))
    return time.time() - started < START_GRACE_S


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return pid > 0
