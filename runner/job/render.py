"""Job file → resolved, checked job → trainer plan → files on disk. The first half of every command that runs a job."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from runner import files, mounts
from runner.errors import JobInvalid, UserError
from runner.gpu.planner import MemoryPlan
from runner.job.resolve import NothingFits, Target, here, no_memory_to_plan, resolve
from runner.plan import Plan, is_secret
from runner.spec import Job, JobRead, Trainer, locate, read_job
from runner.trainers import diffpipe, musubi
from runner.trainers.resolved import Earlier, ResolvedJob

TRAINERS = {Trainer.diffpipe: diffpipe, Trainer.musubi: musubi}
DEFAULT_MASTER_PORT = 29500
PLAN_JSON = "plan.json"
MARKER = ".runner-render"  # in every folder render writes: the names of its files, so only such a folder is replaced


def load_checked(file: Path, target: Target | None = None, read: JobRead | None = None, **options) -> ResolvedJob:
    """Read a job file (unless the caller has: `read`, read_job's result) and resolve it against `target` (default:
    this machine); every problem is reported at its file:line. options: those of runner.job.resolve.resolve."""
    job, lines = read or read_job(file)
    try:
        return resolve(job, target or here(), **options)
    except JobInvalid as e:
        raise JobInvalid(locate(e.errors, file, lines)) from None
    except UserError as e:
        if e.where not in lines:  # not about a field (a host, a folder): as it is
            raise
        raise JobInvalid(locate([e], file, lines)) from None


def job_env(job: Job) -> dict[str, str]:
    env = {"HF_HOME": str(mounts.HF_HOME), "PYTHONUNBUFFERED": "1"}
    env.update(job.env)
    return env


def trainer_plan(r: ResolvedJob, job_dir: Path, master_port: int = DEFAULT_MASTER_PORT, nodes: int = 1) -> Plan:
    """The trainer's plan for a resolved job, with the job's env and its mounts on this machine (job files in job_dir).

    nodes > 1: a multi-node run, each node training on the job's GPUs (a Slurm job of `nodes` nodes, one task per
    node): musubi only (diffusion-pipe is refused with the reason, a UserError); its caching steps are to run once, on
    one node, then the `train` step on every node, where /job/multinode_launch.py reads SLURM_NODEID,
    SLURM_JOB_NODELIST, SLURM_JOB_NUM_NODES and SLURM_JOB_ID (runner.trainers.multinode); master_port is unused."""
    check_nodes(r.job.trainer, nodes)
    p = TRAINERS[r.job.trainer].render(r, master_port, nodes)
    return dataclasses.replace(p, env=job_env(r.job), mounts=mounts.job_mounts(r.job, job_dir.resolve()))


def check_nodes(trainer: Trainer, nodes: int) -> None:
    """Refuse more than one node for diffusion-pipe, with the reason (runner.trainers.diffpipe.SINGLE_MACHINE): by the
    commands that take --nodes before anything is sent or submitted, and by trainer_plan."""
    if nodes > 1 and trainer is Trainer.diffpipe:
        raise UserError("--nodes", f"is {nodes}, and {diffpipe.SINGLE_MACHINE}.",
                        "use --nodes 1 (with `gpus:` up to a node's GPUs), or trainer: musubi, which trains on several nodes.")


TRAIN_STEP = "train"
# a multi-node run's job folder also holds its plan as node_plans splits it, for the Slurm executor's batch script
ONCE_JSON, EVERY_NODE_JSON = "plan-once.json", "plan-every-node.json"


def node_plans(p: Plan) -> tuple[Plan, Plan]:
    """A multi-node plan (trainer_plan with nodes > 1) as two: the steps to run once, on one node, before training
    (musubi's caching, into the shared cache folder; no steps when the caches are reused), and the `train` step
    that every node runs at the same time (its machines meet at the rendezvous)."""
    once = [s for s in p.steps if s.name != TRAIN_STEP]
    return dataclasses.replace(p, steps=once), dataclasses.replace(p, steps=[s for s in p.steps if s.name == TRAIN_STEP])


def dit_bytes_per_param(r: ResolvedJob) -> int:
    """Bytes per DiT parameter as the job's trainer will hold the weights in GPU memory (before block swap):
    1 for float8, 2 for bf16/fp16, 4 where musubi keeps an official float32 DiT."""
    return TRAINERS[r.job.trainer].dit_bytes_per_param(r)


def cache_dirs(job: Job, table: list[mounts.Mount]) -> list[Path]:
    """Host folder of each dataset's cache (where its fingerprint is kept), through the mount table."""
    trainer = TRAINERS[job.trainer]
    return [mounts.to_host(trainer.dataset_cache_dir(job, i), table) for i in range(len(job.datasets))]


def write(p: Plan, out: Path, nodes: int = 1) -> None:
    """Write the plan's files and plan.json into `out` all at once: a failure leaves the old files or nothing,
    never half. `out` must be new, empty or written by runner before (out_refused). nodes > 1: a multi-node plan,
    also written as node_plans splits it (ONCE_JSON only when there are steps to run once)."""
    try:
        with files.replacing_folder(out.resolve(), MARKER) as staging:
            for name, content in p.files.items():
                (staging / name).write_text(content)
            (staging / PLAN_JSON).write_text(p.to_json())
            if nodes > 1:
                once, every = node_plans(p)
                if once.steps:
                    (staging / ONCE_JSON).write_text(once.to_json())
                (staging / EVERY_NODE_JSON).write_text(every.to_json())
            (staging / "command.sh").write_text(shell_script(p))
    except files.NotOurs as e:
        raise out_refused(out, str(e)) from None


def check_out(out: Path) -> None:
    """Refuse, before any work, an --out that render may not replace."""
    problem = files.not_ours(out.resolve(), MARKER)
    if problem:
        raise out_refused(out, problem)


def out_refused(out: Path, problem: str) -> UserError:
    return UserError(
        "--out",
        f"{problem}; render replaces the whole folder, so it writes only into a new or empty folder, or one it "
        f"rendered before (marked by its {MARKER} file). Nothing was written.",
        "name a new or empty folder (e.g. --out rendered), or a folder rendered before.",
    )


def shell_script(p: Plan) -> str:
    """The plan's steps as a script to read (or run by hand inside the image)."""
    lines = ["#!/bin/sh", f"# {p.trainer} job {p.job}: run inside the image, from {p.workdir}", "set -e", f"cd {shlex.quote(p.workdir)}"]
    lines += [f"# step: {s.name}\n{shlex.join([f'{k}={v}' for k, v in s.env.items()] + s.argv)}" for s in p.steps]
    return "\n".join(lines) + "\n"


def render(file: Path, out: Path, vram_gib: float | None = None, ram_gib: float | None = None, target: Target | None = None,
           earlier: Earlier | None = None, read: JobRead | None = None) -> Plan:
    """`runner render`: the job resolved against `target` (default: this machine) or the memory given, its files
    written to `out`. Its plan.json names the job's secret variables (container.secret_env) without their values.
    earlier: resolve the run's start from the output folder as `runner train` would (None: a first run).
    read: the job file as the caller read it (load_checked)."""
    return render_jobs(file, {out: read}, vram_gib, ram_gib, target, earlier)[out]


def render_jobs(file: Path, reads: dict[Path, JobRead | None], vram_gib: float | None = None, ram_gib: float | None = None,
                target: Target | None = None, earlier: Earlier | None = None, nodes: int = 1) -> dict[Path, Plan]:
    """render for several jobs read from one file (the jobs of a sweep: runner.sweep), each into its own folder:
    every job is resolved before any folder is written. nodes: as trainer_plan and write take it."""
    for out in reads:
        check_out(out)
    plans = {out: _rendered_plan(file, out, vram_gib, ram_gib, target, earlier, read, nodes) for out, read in reads.items()}
    for out, p in plans.items():
        write(p, out, nodes)
    return plans


def _rendered_plan(file: Path, out: Path, vram_gib, ram_gib, target, earlier, read, nodes: int) -> Plan:
    r = load_checked(file, target, read, vram_gib=vram_gib, ram_gib=ram_gib, plan_needed=True, earlier=earlier)
    p = trainer_plan(r, out, nodes=nodes)
    secret = sorted(k for k, v in p.env.items() if is_secret(k, v))
    return dataclasses.replace(p, env={k: v for k, v in p.env.items() if k not in secret}, container={"secret_env": secret},
                               settings=settings(r.job), facts=facts(r))


def settings(job: Job) -> dict:
    """The job's resolved settings as plan.json records them (its env is the plan's own, secrets by name)."""
    # warnings=False: validated resolutions are [w, h] lists where the schema's type says tuple; they dump the same
    return job.model_dump(mode="json", exclude={"env"}, warnings=False)


def facts(r: ResolvedJob) -> dict:
    """What the target reported that the job was resolved from, and what was decided there: its GPUs and RAM, the
    GPU memory `memory: auto` was planned for (None for memory set by hand), the caches' fate and the DiT's dtype."""
    return {
        "target": r.target,
        "gpus": r.inventory.model_dump(mode="json") if r.inventory is not None else None,
        "host_ram_gib": r.ram_gib,
        "memory_planned_for_gib": r.memory_plan.vram_gib if r.job.memory.auto and r.memory_plan else None,
        "caches": r.caches.value,
        "dit_dtype": r.dit_dtype,
        # where the run starts: its folder under the job's output folder, and the checkpoint it resumes with its counters
        "start": dataclasses.asdict(r.start),
    }


def memory_plan(file: Path, target: Target, vram_gib: float | None = None, ram_gib: float | None = None,
                read: JobRead | None = None) -> MemoryPlan:
    """`runner plan`: the memory plan resolving the job on `target` (or for the memory given) makes, fitting or not."""
    try:
        r = load_checked(file, target, read, vram_gib=vram_gib, ram_gib=ram_gib, plan_needed=True)
    except NothingFits as e:
        return e.plan
    if r.memory_plan is None:
        raise no_memory_to_plan(target.name, r.inventory)
    return r.memory_plan
