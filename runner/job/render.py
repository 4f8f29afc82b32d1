"""Job file → checked job → trainer plan → files on disk. The first half of every command that runs a job."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import tempfile
from pathlib import Path

from runner import modelfiles, mounts
from runner.job import checks
from runner.trainers import diffpipe, musubi
from runner.errors import JobInvalid, UserError
from runner.job.plan import Plan
from runner.spec import Job, Trainer, locate, read_job

TRAINERS = {Trainer.diffpipe: diffpipe, Trainer.musubi: musubi}
DEFAULT_MASTER_PORT = 29500
PLAN_JSON = "plan.json"


def load_checked(file: Path, files_here: bool = False) -> Job:
    """Read and validate a job file; every problem is reported at its file:line."""
    job, lines = read_job(file)
    try:
        checks.check(job, files_here)
    except JobInvalid as e:
        raise JobInvalid(locate(e.errors, file, lines)) from None
    return job


def default_hf_cache() -> Path:
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))


def job_mounts(job: Job, job_dir: Path) -> list[mounts.Mount]:
    """Host → container for this job on this machine; remote executors swap the host side per volume."""
    m = [mounts.Mount("models", str(job.models.root), str(mounts.MODELS), True)]
    # diffusion-pipe writes its cache into the dataset folder, so data is mounted read-write
    m += [mounts.Mount(f"data/{i}", str(d.path), str(mounts.dataset_dir(i, d.path)), False) for i, d in enumerate(job.datasets)]
    m += [
        mounts.Mount("cache", str(job.cache), str(mounts.CACHE), False),
        mounts.Mount("outputs", str(job.output), str(mounts.OUTPUTS), False),
        mounts.Mount("hf-cache", str(job.hf_cache or default_hf_cache()), str(mounts.HF_HOME), False),
        mounts.Mount("job", str(job_dir), str(mounts.JOB), True),
    ]
    return m


def job_env(job: Job) -> dict[str, str]:
    env = {"HF_HOME": str(mounts.HF_HOME), "PYTHONUNBUFFERED": "1"}
    env.update(job.env)
    return env


def plan(job: Job, job_dir: Path, master_port: int = DEFAULT_MASTER_PORT, regenerate_cache: bool = False) -> Plan:
    files = modelfiles.resolve(job)
    p = TRAINERS[job.trainer].render(job, files, master_port, regenerate_cache)
    return dataclasses.replace(p, env=job_env(job), mounts=job_mounts(job, job_dir.resolve()))


def dit_bytes_per_param(job: Job) -> int:
    """Bytes per DiT parameter as the job's trainer will hold the weights in GPU memory (before block swap):
    1 for float8, 2 for bf16/fp16, 4 where musubi keeps an official float32 DiT. For the memory planner."""
    try:
        files = modelfiles.resolve(job)
    except UserError:  # e.g. an official 14B preset whose shards are not on this machine
        files = None
    return TRAINERS[job.trainer].dit_bytes_per_param(job, files)


def cache_dirs(job: Job, table: list[mounts.Mount]) -> list[Path]:
    """Host folder of each dataset's cache (where its fingerprint is kept), through the mount table."""
    trainer = TRAINERS[job.trainer]
    return [mounts.to_host(trainer.dataset_cache_dir(job, i), table) for i in range(len(job.datasets))]


def with_memory_plan(job: Job, vram_gib: float, ram_gib: float | None) -> Job:
    """Apply the memory planner to a `memory: auto` job (others are returned as they are)."""
    if not job.memory.auto:
        return job
    from runner.gpu.planner import plan_for_job

    p = plan_for_job(job, vram_gib, ram_gib)
    if not p.fits:
        raise UserError(
            "memory: auto",
            f"no setting fits {job.task.value} on {job.trainer.value} in {vram_gib:g} GiB of GPU memory "
            f"(best estimate {p.gpu_gib:.1f} GiB).",
            "; ".join(p.suggestions) or "use a larger GPU",
        )
    update = {"memory": job.memory.model_copy(update=p.memory_update())}
    if p.optimizer_type and job.optimizer.type is None:
        update["optimizer"] = job.optimizer.model_copy(update={"type": p.optimizer_type})
    return job.model_copy(update=update)


def write(p: Plan, out: Path) -> None:
    """Write the plan's files and plan.json into `out` all at once: a failure leaves nothing half-written."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, content in p.files.items():
            (staging / name).write_text(content)
        (staging / PLAN_JSON).write_text(p.to_json())
        (staging / "command.sh").write_text(shell_script(p))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def shell_script(p: Plan) -> str:
    """The plan's steps as a script to read (or run by hand inside the image)."""
    lines = ["#!/bin/sh", f"# {p.trainer} job {p.job}: run inside the image, from {p.workdir}", "set -e", f"cd {shlex.quote(p.workdir)}"]
    lines += [f"# step: {s.name}\n{shlex.join([f'{k}={v}' for k, v in s.env.items()] + s.argv)}" for s in p.steps]
    return "\n".join(lines) + "\n"


def render(file: Path, out: Path, vram_gib: float | None = None, ram_gib: float | None = None) -> Plan:
    job = load_checked(file)
    if job.memory.auto:
        from runner.gpu.planner import gpu_memory
        from runner.shell import LocalShell

        job = with_memory_plan(job, *gpu_memory(LocalShell(), vram_gib, ram_gib))
    p = plan(job, out)
    write(p, out)
    return p
