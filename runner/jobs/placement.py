"""Several jobs on plain SSH hosts (or this machine): each goes to a host with free GPUs at submission time.

No queue and no daemon of runner's own. A host's free GPUs are those its nvidia-smi lists minus those held by
runner's runs there that have not ended (their records' gpu_ids, as `runner ps` knows them; a run started alone
was given every GPU of its host, so it holds them all). Every job is placed before any starts: one that fits
nowhere refuses the whole submission, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.errors import JobInvalid, UserError
from runner.gpu.inventory import Inventory
from runner.jobs import records


@dataclass(frozen=True)
class Wanted:
    job_file: Path
    name: str
    gpus: int


@dataclass(frozen=True)
class HostGpus:
    """A host's GPUs as placement sees them: its inventory and which of them runner's unended runs hold."""

    host: str
    inventory: Inventory
    held: dict[int, str]  # GPU index → the run id that holds it

    @property
    def free(self) -> list[int]:
        return [g.index for g in self.inventory.gpus if g.index not in self.held]

    def describe(self) -> str:
        if not self.inventory.gpus:
            return f"{self.host}: no GPU ({self.inventory.problem or 'nvidia-smi lists none'})"
        busy = ", ".join(f"GPU {i} held by {rid}" for i, rid in sorted(self.held.items()))
        return f"{self.host}: {len(self.free)} of {self.inventory.count} free" + (f" ({busy})" if busy else "")


@dataclass(frozen=True)
class Placed:
    job_file: Path
    name: str
    host: str
    gpu_ids: tuple[int, ...]


def held_gpus(host: str, inventory: Inventory) -> dict[int, str]:
    """GPU index → run id, for runner's runs on `host` that have not ended (records of this machine's runner)."""
    held: dict[int, str] = {}
    for r in records.all_records():
        if r.host == host and not r.ended:
            for i in r.gpu_ids or [g.index for g in inventory.gpus]:
                held.setdefault(i, r.id)
    return held


def place(wanted: list[Wanted], hosts: list[HostGpus]) -> list[Placed]:
    """Each job, in order, on the first host (in the order given) with enough free GPUs, the lowest indices first.
    A job that fits nowhere: JobInvalid naming every such job, what it needs and what each host has free."""
    placed: list[Placed] = []
    refused = []
    for w in wanted:
        now = [_with(h, placed) for h in hosts]
        fits = next((h for h in now if len(h.free) >= w.gpus), None)
        if fits is None:
            refused.append(UserError(str(w.job_file), f"job {w.name} needs {w.gpus} GPU{'s' if w.gpus > 1 else ''}, and no host has that many "
                                     f"free ({'; '.join(h.describe() for h in now)}). Nothing was started.",
                                     "wait for a run to end or stop one (`runner ps`, `runner stop ID`), add a host with --host, "
                                     "or submit fewer jobs at once."))
        else:
            placed.append(Placed(w.job_file, w.name, fits.host, tuple(fits.free[: w.gpus])))
    if refused:
        raise JobInvalid(refused)
    return placed


def _with(h: HostGpus, placed: list[Placed]) -> HostGpus:
    """The host with the GPUs of the jobs placed before on it counted as held."""
    mine = {i: f"{p.name} (this submission)" for p in placed if p.host == h.host for i in p.gpu_ids}
    return HostGpus(h.host, h.inventory, {**h.held, **mine})


def host_gpus(executor) -> HostGpus:
    """The executor's host as placement sees it now: its GPUs, and those runner's unended runs there hold (their
    records refreshed first, so a run that ended since frees its GPUs)."""
    from runner.gpu.inventory import gather
    from runner.jobs import launch

    launch.refresh([r for r in records.all_records() if r.host == executor.host])
    inventory = gather(executor.shell)
    return HostGpus(executor.host, inventory, held_gpus(executor.host, inventory))


def wanted(job_files: list[Path]) -> list[Wanted]:
    """Each job file read (a bad one refused as itself), each given once: a job runs once at a time."""
    from runner.spec import read_job

    seen: dict[Path, Path] = {}
    for f in job_files:
        if f.resolve() in seen:
            raise UserError(str(f), f"is given twice ({seen[f.resolve()]} is the same file), and a job runs once at a time.",
                            "give each job file once.")
        seen[f.resolve()] = f
    return [_wanted(f, read_job(f)[0]) for f in job_files]


def _wanted(job_file: Path, job) -> Wanted:
    """Placement picks each job's GPUs itself, so a job names how many, not which."""
    if job.gpu_ids is not None or job.gpu_count is None:
        raise UserError(f"{job_file}: gpus", f"is {job.gpus!r}: with several jobs or hosts runner places each job on GPUs that are "
                        "free at submission time, and a job that names its devices (or takes `all`) would bypass that.",
                        "give a count (gpus: 2), or start this job alone on its host (`runner train JOB --host H`).")
    return Wanted(job_file, job.name, job.gpu_count)


def submit(jobs: list[Wanted], executors: list, settings, console, earlier) -> list[records.JobRecord]:
    """Place every job, then start each detached on its host with its GPUs; returns their records. A job that fits
    nowhere refuses them all before anything starts. If a start fails, the runs already started keep running and
    are named before the error."""
    from runner.jobs import launch

    by_host = {ex.host: ex for ex in executors}
    placed = place(jobs, [host_gpus(ex) for ex in executors])
    started: list[records.JobRecord] = []
    try:
        for p in placed:
            console.print(f"placing {p.name} ({p.job_file}) on {p.host}, GPU{'s' if len(p.gpu_ids) > 1 else ''} {', '.join(map(str, p.gpu_ids))}")
            started.append(launch.start(p.job_file, by_host[p.host], settings, console, launch.Run(earlier), gpu_ids=p.gpu_ids))
    except BaseException:
        for r in started:
            console.print(f"{r.id} was started on {r.host} and keeps running: `runner logs -f {r.id}`, `runner stop {r.id}`")
        raise
    return started
