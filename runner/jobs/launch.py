"""Start a job on an executor and follow it: render → container → live logs → exit code.

Shared by the local engine and remote hosts; only the executor differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path

from rich.console import Console

from runner import config, mounts
from runner.data import fingerprint
from runner.errors import UserError
from runner.executors import Executor
from runner.executors.container import LABEL_JOB, LABEL_PORT, LABEL_RECORD, RUN_PLAN, ContainerSpec
from runner.images import builder
from runner.job import checks, render
from runner.job.resolve import Target
from runner.jobs import logwatch, records, watchdog
from runner.jobs.records import JobRecord
from runner.mounts import Mount
from runner.plan import Plan
from runner.progress import Following
from runner.spec import Job
from runner.trainers.resolved import ResolvedJob

def gpu_environment(inventory, job: Job, memory_plan=None) -> tuple[dict[str, str], str]:
    """Variables the GPUs need (runner.gpu.envrules) and the pins table of the image for them (runner.gpu.variant).
    inventory None: RUNNER_GPUS=none, containers without GPUs (CI's stand-in trainers)."""
    from runner.gpu import envrules, variant

    table = variant.choose(job.trainer.value, inventory).pins_table if inventory is not None else "default"
    return {v.name: v.value for v in envrules.job_environment(job, inventory, memory_plan)}, table


def target_of(executor: Executor, gpus: bool) -> Target:
    """The executor's machine as runner.job.resolve sees it: its shell, its side of the models folder and of the
    cache folders (through host_mounts), and the fingerprints recorded there."""
    def models_there(root: Path) -> str:
        return executor.host_mounts([Mount("models", str(root), str(mounts.MODELS), True)], "", "")[0].host

    def cache_dirs(job: Job) -> list[Path]:
        # cache folders come from the data and cache mounts
        return render.cache_dirs(job, executor.host_mounts(mounts.folder_mounts(job), job.name, ""))

    return Target(executor.shell, "this machine" if executor.here else executor.host, models_there, gpus, executor.read_text, cache_dirs)


def start(job_file: Path, executor: Executor, settings: config.Settings, console: Console) -> JobRecord:
    """Resolve the job against its executor's machine, render and start it; returns its record (status running).

    The job folder's plan.json is written once, after the container is fully decided: it lists the mounts as
    the target sees them, the whole environment (secrets by name only) and the facts the settings came from."""
    gpus = records.gpus_wanted()
    if gpus:
        executor.check_gpus()
    resolved = render.load_checked(job_file, target_of(executor, bool(gpus)), plan_needed=bool(gpus))
    job, inventory = resolved.job, resolved.inventory
    if job.memory.auto and inventory is None:
        raise UserError("memory: auto", "needs a GPU to plan for, and RUNNER_GPUS=none starts containers without one.", "set memory settings explicitly")
    for note in resolved.notes:
        console.print(note)
    gpu_env, variant_name = gpu_environment(inventory, job, resolved.memory_plan)
    pins = builder.load_pins(job.trainer.value, variant_name, pins_file=settings.pins)
    ref = builder.image_ref(pins, settings.ca_bundle)
    executor.check_models(job.models.root, checks.missing_model_files(resolved))
    build = job.trainer.value if variant_name == "default" else f"{job.trainer.value} --variant {variant_name}"
    executor.check_image(ref, build)  # a remote host receives the image here: after the cheap checks
    rid = records.new_id(job.name)
    port = records.free_master_port(executor.host, executor.port_free)
    record = JobRecord(
        id=rid, name=job.name, trainer=job.trainer.value, host=executor.host, image=ref, container=f"runner-{rid}",
        job_file=str(job_file.resolve()), output_dir=str(job.output / job.name), master_port=port,
    )
    try:
        plan = render.trainer_plan(resolved, record.job_dir, master_port=port)
        target = executor.host_mounts(plan.mounts, job.name, record.container)
        record.fingerprints = resolved.fingerprints
        env = {**config.network_env(settings), **gpu_env, **plan.env}  # the job's own `env:` (in plan.env) wins
        spec = ContainerSpec(
            image=ref, name=record.container, command=RUN_PLAN, mounts=target, env=env, user=executor.user,
            workdir=plan.workdir, gpus=gpus, shm_size=settings.shm_size, ulimits=settings.ulimits,
            labels={LABEL_RECORD: rid, LABEL_JOB: job.name, LABEL_PORT: str(port)},
        )
        render.write(as_run(plan, spec, job, facts(executor, resolved, variant_name)), record.job_dir)
        executor.prepare_mounts(spec, sources=plan.mounts)
        record.env_names = sorted(env)
        record.started = records.now()
        record.status = "running"
        record.save()
        executor.start(spec)
    except BaseException:
        shutil.rmtree(record.folder, ignore_errors=True)  # nothing half-started: no record of a job that never ran
        raise
    console.print(f"started {record.id} on {executor.host} ({ref}); outputs → {record.output_dir}")
    return record


def as_run(plan: Plan, spec: ContainerSpec, job: Job, facts: dict) -> Plan:
    """The plan as the record of what runs: the container's mounts (the target's paths) and environment (secrets
    by name), how it is started, the job's resolved settings and the facts they were resolved from."""
    return dataclasses.replace(plan, **spec.record(), settings=render.settings(job), facts=facts)


def facts(executor: Executor, resolved: ResolvedJob, variant_name: str) -> dict:
    """What the target reported that the settings were chosen for (runner.job.render.facts), where, and the image variant."""
    f = render.facts(resolved)
    return {"host": executor.host, **f, "gpus": f["gpus"] or "none (RUNNER_GPUS=none)", "image_variant": variant_name,
            "schedule": watchdog.schedule_of(resolved).to_json()}


def archive(record: JobRecord, executor: Executor) -> list[str]:
    """Keep the container's whole log beside the record, then remove the container; returns the log's lines."""
    lines = list(executor.logs(record.container, follow=False))
    record.log_file.parent.mkdir(parents=True, exist_ok=True)
    record.log_file.write_text("".join(line + "\n" for line in lines))
    executor.remove(record.container)
    return lines


def stop(record: JobRecord, executor: Executor) -> None:
    executor.stop(record.container)
    archive(record, executor)
    record.status, record.finished = "stopped", records.now()
    record.save()


def finish(record: JobRecord, executor: Executor, code: int, stop: watchdog.Stop | None = None,
           oom_stopped: bool = False) -> logwatch.OutOfMemory | None:
    """Close a record: keep the log, record a successful run's caches as fresh, remove the container.
    A failed run's record says why: the watchdog that stopped it, or a CUDA out-of-memory its whole log shows
    (returned)."""
    lines = archive(record, executor)
    record.exit_code = watchdog.STOPPED_EXIT_CODE if stop else code
    record.status = "exited" if code == 0 else "failed"
    record.finished = records.now()
    if code == 0:
        for folder, fp in record.fingerprints.items():
            executor.write_text(Path(folder) / fingerprint.FILE_NAME, fp)
    oom = logwatch.scan(lines, record.trainer).oom if code != 0 and stop is None else None
    record.failure = stop.summary if stop else (oom.summary() if oom else "")
    record.stopped_by = stop.kind if stop else (watchdog.OOM if oom and oom_stopped else "")
    record.save()
    return oom


def follow(record: JobRecord, executor: Executor, console: Console) -> int:
    """Stream the container's log with the training's standing, keep a copy beside the outputs, run the watchdogs
    (runner.jobs.watchdog), return the exit code: the trainer's; 1 after CUDA out of memory (the trainer gets
    OOM_GRACE_S to exit before its container is stopped); 3 when the NaN or the hang watchdog stopped the run."""
    local = executor.here  # a remote job's outputs (and this copy) come back with `runner pull`
    copy = Path(record.output_dir) / f"runner-{record.id}.log"
    if local:
        copy.parent.mkdir(parents=True, exist_ok=True)
    guard = watchdog.Guard(record, executor, console)
    with (copy.open("w") if local else contextlib.nullcontext()) as log, Following(console) as shown, guard:
        for text in executor.logs(record.container, follow=True):
            if log:
                log.write(text + "\n")
                log.flush()
            shown.print(text)
            guard.feed(text, shown)
    stopped = guard.oom_stop.end()
    stop = guard.stop
    oom = finish(record, executor, executor.wait(record.container), stop, oom_stopped=stopped)
    if stop is not None:
        report, code = f"runner: {stop.report}", record.exit_code
    elif oom is not None:
        report = "runner: " + logwatch.oom_report(oom, record.job_file, *card_memory(oom, executor), stopped=stopped, trainer=record.trainer)
        code = 1
    else:
        return record.exit_code
    console.print(report, style="bold red", highlight=False)
    for kept in [record.log_file] + ([copy] if local else []):  # `runner logs JOB` and the copy beside the outputs say it too
        with kept.open("a") as f:
            f.write(report + "\n")
    return code


def card_memory(oom: logwatch.OutOfMemory, executor: Executor) -> tuple[float | None, float | None]:
    """GPU memory to plan for (the out-of-memory message's, else the smallest GPU the host reports) and host RAM."""
    from runner.gpu.inventory import gather, host_ram_gib

    vram = oom.total_gib
    if vram is None and records.gpus_wanted():
        vram = min((g.memory_gib for g in gather(executor.shell).gpus), default=None)
    return vram, host_ram_gib(executor.shell)


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
