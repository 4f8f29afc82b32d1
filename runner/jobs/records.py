"""Job records: what ran where, kept locally so `runner logs/ps/stop/pull` work from any terminal later.

A record lives in <state>/jobs/<id>/record.json beside the rendered files (<id>/job/, mounted at /job).
Records hold no secrets: environment values are not stored, only their names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from runner import config, files
from runner.errors import UserError


TRAIN, SAMPLE = "train", "sample"  # the kinds of run (runner.jobs.launch.Run)


class JobRecord(BaseModel):
    id: str
    name: str
    kind: str = TRAIN  # train | sample (`runner sample`)
    trainer: str
    host: str  # "local", a hosts inventory name, or "slurm:CLUSTER"
    image: str
    container: str
    scheduler_id: str = ""  # the scheduler's id of the run (a Slurm job id); "" on an engine without one
    job_file: str
    output_dir: str  # on the host that runs the job
    status: str = "created"  # created | running, then once (FINAL): exited | failed | stopped | lost
    exit_code: int | None = None
    failure: str = ""  # why a failed run failed, when runner could tell (e.g. CUDA out of memory in train)
    stopped_by: str = ""  # the watchdog that stopped the run: nan | hang | oom (runner.jobs.watchdog)
    started: str = ""
    finished: str = ""
    master_port: int = 29500
    gpu_ids: list[int] = []  # the host's GPUs (nvidia-smi indices) its container was given; [] = all of them
    nodes: int = 1  # the machines the run trains on, each with the job's GPUs (a Slurm job's nodes)
    env_names: list[str] = []
    stop_requested: bool = False  # `runner stop` ran: the run ends as stopped, whoever records its end
    locked: str = ""  # the lock file this run holds on its host (runner.jobs.joblock)
    # cache folder on the job's host → fingerprint JSON, recorded there once the job succeeds
    fingerprints: dict[str, str] = {}

    @property
    def folder(self) -> Path:
        return jobs_dir() / self.id

    @property
    def job_dir(self) -> Path:
        return self.folder / "job"

    @property
    def log_file(self) -> Path:
        """The container's whole log, kept once the run ends: train.log, sample.log."""
        return self.folder / f"{self.kind}.log"

    @property
    def ended(self) -> bool:
        return self.status in FINAL

    def save(self) -> None:
        """Atomic, and safe against another runner saving it at the same time (each writer has its own temporary file)."""
        path = self.folder / "record.json"
        with files.replacing(path, path.with_name(f".record.{os.getpid()}.{secrets.token_hex(4)}.tmp")) as tmp:
            tmp.write_text(self.model_dump_json(indent=2))

    def reload(self) -> "JobRecord":
        """The record as saved now (another runner may have ended it); this one when it is not saved."""
        path = self.folder / "record.json"
        return JobRecord.model_validate_json(path.read_text()) if path.is_file() else self

    @contextlib.contextmanager
    def deciding(self) -> Iterator["JobRecord"]:
        """Hold the record's lock (one runner at a time decides how a run ends) and yield the record as saved now."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self.reload()


FINAL = ("exited", "failed", "stopped", "lost")  # a run's end, decided once (JobRecord.deciding)


def jobs_dir() -> Path:
    return config.state_dir() / "jobs"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id(name: str) -> str:
    """name-UTC time-random: sortable, and unique across machines that share an engine or a host."""
    return f"{name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def all_records() -> list[JobRecord]:
    if not jobs_dir().is_dir():
        return []
    out = []
    for f in sorted(jobs_dir().glob("*/record.json")):
        try:
            out.append(JobRecord.model_validate_json(f.read_text()))
        except FileNotFoundError:
            continue  # a run that failed to start, removed while we listed
    return out


def find(ref: str) -> JobRecord:
    """A record by id, or the newest record of a job name."""
    exact = jobs_dir() / ref / "record.json"
    if exact.is_file():
        return JobRecord.model_validate_json(exact.read_text())
    matches = [r for r in all_records() if r.name == ref]
    if not matches:
        known = ", ".join(sorted({r.name for r in all_records()})) or "none yet"
        raise UserError(f"job {ref!r}", "matches no job record on this machine.", f"use a job name or id from `runner ps` (known: {known}).")
    return max(matches, key=lambda r: r.started or r.id)


# --- lifecycle ---------------------------------------------------------------------------------------

MASTER_PORTS = range(29500, 29600)


def gpus_wanted() -> bool:
    """RUNNER_GPUS=none starts containers without GPUs: only for CI runs of the stand-in trainers."""
    return os.environ.get("RUNNER_GPUS", "all") != "none"


def free_master_port(host: str, is_free) -> int:
    """A torch.distributed port no other running job on `host` uses (diffusion-pipe defaults all to 29500)."""
    taken = {r.master_port for r in all_records() if r.host == host and r.status in ("created", "running")}
    for port in MASTER_PORTS:
        if port not in taken and is_free(port):
            return port
    raise UserError(f"host {host}", f"has jobs on every port {MASTER_PORTS.start}-{MASTER_PORTS.stop - 1}.", "stop a job (`runner ps`, `runner stop`).")
