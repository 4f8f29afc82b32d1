"""Start a job on an executor and follow it: render → container → live logs → exit code.

Shared by the local engine and remote hosts; only the executor differs.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from runner import checks, config, fingerprint, images, jobs, render
from runner.container import RUN_PLAN, ContainerSpec
from runner.errors import UserError
from runner.jobs import JobRecord
from runner.spec import Job

MARK = "[runner] step "


def gpu_environment(inventory, job: Job) -> tuple[dict[str, str], str]:
    """Variables the GPUs need (runner.gpu.envrules) and the pins table of the image for them (runner.gpu.variant).
    inventory None: RUNNER_GPUS=none, containers without GPUs (CI's stand-in trainers)."""
    from runner.gpu import envrules, variant

    table = variant.choose(job.trainer.value, inventory).pins_table if inventory is not None else "default"
    return {v.name: v.value for v in envrules.job_environment(job, inventory)}, table


def cache_freshness(job: Job, plan, executor, container: str, console: Console) -> tuple[dict[str, str], list[fingerprint.CacheState]]:
    """Fingerprint each dataset and compare with the record beside its cache on the job's host."""
    fps, states = {}, []
    for d, folder in zip(job.datasets, render.cache_dirs(job, executor.host_mounts(plan.mounts, job.name, container))):
        fp = fingerprint.fingerprint(d, job.trainer, job.task)
        recorded = executor.read_text(folder / fingerprint.FILE_NAME)
        state = fingerprint.state_of(recorded, fp)
        if state is fingerprint.CacheState.stale:
            console.print(f"{d.path} changed since its cache was made ({'; '.join(fingerprint.why_stale(recorded, fp))}): re-caching")
        states.append(state)
        fps[str(folder)] = fp.model_dump_json(indent=2)
    return fps, states


def start(job_file: Path, executor, settings: config.Settings, console: Console) -> JobRecord:
    """Validate, render and start a job; returns its record (status running)."""
    local = executor.host == "local"
    job: Job = render.load_checked(job_file, files_here=local)
    gpus = jobs.gpus_wanted()
    inventory = None
    if gpus:
        from runner.gpu.inventory import gather, host_ram_gib

        executor.check_gpus()
        inventory = gather(executor.shell)
        if job.memory.auto and inventory.gpus:
            job = render.with_memory_plan(job, min(g.memory_gib for g in inventory.gpus), host_ram_gib(executor.shell))
    if job.memory.auto and inventory is None:
        raise UserError("memory: auto", "needs a GPU to plan for, and RUNNER_GPUS=none starts containers without one.", "set memory settings explicitly")
    gpu_env, variant_name = gpu_environment(inventory, job)
    pins = images.load_pins(job.trainer.value, variant_name, pins_file=settings.pins)
    ref = images.image_ref(pins, settings.ca_bundle)
    if not local:
        executor.check_models(job.models.root, checks.used_model_files(job))
    build = job.trainer.value if variant_name == "default" else f"{job.trainer.value} --variant {variant_name}"
    executor.check_image(ref, build)  # a remote host receives the image here: after the cheap checks
    rid = jobs.new_id(job.name)
    port = jobs.free_master_port(executor.host, executor.port_free)
    record = JobRecord(
        id=rid, name=job.name, trainer=job.trainer.value, host=executor.host, image=ref, container=f"runner-{rid}",
        job_file=str(job_file.resolve()), output_dir=str(job.output / job.name), master_port=port,
    )
    try:
        plan = render.plan(job, record.job_dir, master_port=port)
        record.fingerprints, states = cache_freshness(job, plan, executor, record.container, console)
        if fingerprint.CacheState.stale in states:
            plan = render.plan(job, record.job_dir, master_port=port, regenerate_cache=True)
        render.write(plan, record.job_dir)
        env = {**config.network_env(settings), **gpu_env, **plan.env}  # the job's own `env:` (in plan.env) wins
        if all(s is fingerprint.CacheState.fresh for s in states):
            env["RUNNER_CACHE_FRESH"] = "1"
        spec = ContainerSpec(
            image=ref, name=record.container, command=RUN_PLAN, mounts=plan.mounts, env=env, user=executor.user,
            workdir=plan.workdir, gpus=gpus, shm_size=settings.shm_size, ulimits=settings.ulimits,
            labels={jobs.LABEL_RECORD: rid, jobs.LABEL_JOB: job.name, jobs.LABEL_PORT: str(port)},
        )
        executor.prepare_mounts(spec)
        record.env_names = sorted(env)
        record.started = jobs.now()
        record.status = "running"
        record.save()
        executor.start(spec)
    except BaseException:
        shutil.rmtree(record.folder, ignore_errors=True)  # nothing half-started: no record of a job that never ran
        raise
    console.print(f"started {record.id} on {executor.host} ({ref}); outputs → {record.output_dir}")
    return record


def archive(record: JobRecord, executor) -> None:
    """Keep the container's whole log beside the record, then remove the container."""
    record.log_file.parent.mkdir(parents=True, exist_ok=True)
    record.log_file.write_text("".join(line + "\n" for line in executor.logs(record.container, follow=False)))
    executor.remove(record.container)


def stop(record: JobRecord, executor) -> None:
    executor.stop(record.container)
    archive(record, executor)
    record.status, record.finished = "stopped", jobs.now()
    record.save()


def finish(record: JobRecord, executor, code: int) -> None:
    """Close a record: keep the log, record a successful run's caches as fresh, remove the container."""
    archive(record, executor)
    record.exit_code = code
    record.status = "exited" if code == 0 else "failed"
    record.finished = jobs.now()
    if code == 0:
        for folder, fp in record.fingerprints.items():
            executor.write_text(Path(folder) / fingerprint.FILE_NAME, fp)
    record.save()


NAN_LOSS = re.compile(r"loss\W{0,3}nan\b", re.IGNORECASE)
NAN_HINT = (
    "the loss is NaN, so the run learns nothing from here on. Usual causes: mixed precision that does not match "
    "the DiT file (memory.dtype), fp16 overflow, or a learning rate too high for the optimizer. Stop it with "
    "`runner stop {id}` and check the job with `runner validate`."
)


def follow(record: JobRecord, executor, console: Console) -> int:
    """Stream the container's log with a progress display, keep a copy beside the outputs, return the exit code."""
    local = executor.host == "local"  # a remote job's outputs (and this copy) come back with `runner pull`
    copy = Path(record.output_dir) / f"runner-{record.id}.log"
    if local:
        copy.parent.mkdir(parents=True, exist_ok=True)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    warned = False
    with (copy.open("w") if local else contextlib.nullcontext()) as log, Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        for line in executor.logs(record.container, follow=True):
            if log:
                log.write(line + "\n")
                log.flush()
            progress.console.print(line, markup=False, highlight=False)
            if line.startswith(MARK):
                progress.update(task, description=line[len(MARK):].split(":")[0], completed=0, total=None)
            elif (done := jobs.progress_of(line)) is not None:
                progress.update(task, completed=done[0], total=done[1])
            if not warned and NAN_LOSS.search(line):
                progress.console.print(f"runner: {NAN_HINT.format(id=record.id)}", style="bold yellow", highlight=False)
                warned = True
    code = executor.wait(record.container)
    finish(record, executor, code)
    return code


def refresh(records: list[JobRecord]) -> list[JobRecord]:
    """Update running records from their engines (a job may have ended while nobody followed it)."""
    from runner.executors import executor_for

    executors: dict = {}
    for r in records:
        if r.status != "running":
            continue
        try:
            ex = executors.setdefault(r.host, executor_for(r.host))
            state = ex.state(r.container)
        except UserError:
            continue  # host unreachable: keep what we knew
        if state and not state.get("Running"):
            finish(r, ex, int(state.get("ExitCode", 0)))
    return records
