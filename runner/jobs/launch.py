"""Start a job on an executor and follow it: render → container → live logs → exit code.

Shared by the local engine and remote hosts; only the executor differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Iterator

from rich.console import Console

from runner import config, files, mounts
from runner.data import fingerprint
from runner.errors import UserError
from runner.executors import AWAITS_RESUME, ContainerGone, Executor
from runner.executors.container import LABEL_JOB, LABEL_PORT, LABEL_RECORD, RUN_PLAN, ContainerSpec
from runner.images import builder
from runner.job import checks, render
from runner.job.resolve import NothingToResume, Target
from runner.jobs import joblock, logwatch, records, watchdog
from runner.jobs.records import TRAIN, JobRecord
from runner.models.presets import download_args
from runner.mounts import Mount
from runner.plan import Plan
from runner.progress import Following
from runner.spec import Job, JobRead
from runner.trainers.resolved import Caches, Earlier, ResolvedJob

def gpu_environment(inventory, job: Job, memory_plan=None, nodes: int = 1) -> tuple[dict[str, str], str]:
    """Variables the GPUs need (runner.gpu.envrules), on each of `nodes` machines, and the pins table of the image for
    them (runner.gpu.variant). inventory None: RUNNER_GPUS=none, containers without GPUs (CI's stand-in trainers)."""
    from runner.gpu import envrules, variant

    table = variant.choose(job.trainer.value, inventory).pins_table if inventory is not None else "default"
    return {v.name: v.value for v in envrules.job_environment(job, inventory, memory_plan, nodes)}, table


def target_of(executor: Executor, gpus: bool) -> Target:
    """The executor's machine as runner.job.resolve sees it: its shell, its side of the models folder and of the
    cache folders (through host_mounts), and the fingerprints recorded there."""
    def models_there(root: Path) -> str:
        return executor.host_mounts([Mount("models", str(root), str(mounts.MODELS), True)], "", "")[0].host

    def cache_dirs(job: Job) -> list[Path]:
        # cache folders come from the data and cache mounts
        return render.cache_dirs(job, executor.host_mounts(mounts.folder_mounts(job), job.name, ""))

    def output_dir(job: Job) -> str:
        outputs = executor.host_mounts([Mount("outputs", str(job.output), str(mounts.OUTPUTS), False)], job.name, "")[0].host
        return str(Path(outputs) / job.name)

    return Target(executor.shell, "this machine" if executor.here else executor.host, models_there, gpus, executor.read_text, cache_dirs,
                  output_dir)


class Run:
    """A kind of run started by `start`: training (this class) or sampling (runner.jobs.sample.Sampling). What the
    kinds share — GPUs, image, job lock, record, container with its secrets on stdin — is `start`'s; a kind says how
    the job is resolved, which model files it needs and what its container runs."""

    kind = TRAIN

    def __init__(self, earlier: Earlier = Earlier.refuse):
        self.earlier = earlier  # what to do when the job's output folder holds an earlier run's LoRAs or checkpoints

    def resolve(self, job_file: Path, there: Target, read: JobRead | None) -> ResolvedJob:
        """The job resolved on the executor's machine, refused (UserError) before anything is written or started."""
        resolved = render.load_checked(job_file, there, plan_needed=there.gpus, earlier=self.earlier, read=read)
        if resolved.job.memory.auto and resolved.inventory is None:
            raise UserError("memory: auto", "needs a GPU to plan for, and RUNNER_GPUS=none starts containers without one.", "set memory settings explicitly")
        if resolved.job.gpu_count is None:
            raise UserError("gpus", "is `all`, and RUNNER_GPUS=none starts containers without GPUs: there are none to count.",
                            "give a count (gpus: 1) or device ids.")
        return resolved

    def missing_models(self, resolved: ResolvedJob, there: Target) -> dict[str, Path]:
        return checks.missing_model_files(resolved)

    def plan(self, resolved: ResolvedJob, job_dir: Path, master_port: int, nodes: int = 1) -> Plan:
        return render.trainer_plan(resolved, job_dir, master_port=master_port, nodes=nodes)

    def facts(self, resolved: ResolvedJob) -> dict:
        """plan.json's facts of this kind of run; watchdog.Guard reads the schedule."""
        return {"schedule": watchdog.schedule_of(resolved).to_json()}

    def fingerprints(self, resolved: ResolvedJob) -> dict[str, str]:
        """The cache fingerprints a successful run records as fresh (runner.jobs.launch.end)."""
        return resolved.fingerprints


def start(job_file: Path, executor: Executor, settings: config.Settings, console: Console, run: Run,
          read: JobRead | None = None, gpu_ids: tuple[int, ...] = ()) -> JobRecord:
    """Resolve the job against its executor's machine, take its lock, render and start the run; returns its record
    (status running). read: the job file as the command read it already (runner.spec.read_job); gpu_ids: the host's
    GPUs the container gets (runner.jobs.placement), () for all of them.

    The job folder's plan.json is written once, after the container is fully decided: it lists the mounts as
    the target sees them, the whole environment (secrets by name only) and the facts the settings came from."""
    with _starting(executor) as prepared:
        spec = _prepare(job_file, executor, settings, console, run, read, gpu_ids, prepared)
        prepared[0].scheduler_id = executor.start(spec)
        return _running(prepared[0], executor, console)


def start_array(job_files: list[Path], executor, settings: config.Settings, console: Console, run: Run) -> list[JobRecord]:
    """Several jobs as one submission of a scheduler (a Slurm job array: runner.executors.slurm), each its own run
    and record; when one cannot start, none is submitted."""
    with _starting(executor) as prepared:
        specs = [_prepare(f, executor, settings, console, run, None, (), prepared) for f in job_files]
        for record, scheduler_id in zip(prepared, executor.submit(specs)):
            record.scheduler_id = scheduler_id
        return [_running(r, executor, console) for r in prepared]


@contextlib.contextmanager
def _starting(executor: Executor) -> Iterator[list[JobRecord]]:
    """Yields the list of runs being prepared; if anything fails, nothing is left half-started: no container, no
    record of a run that never ran, each job's lock given back."""
    prepared: list[JobRecord] = []
    try:
        yield prepared
    except BaseException:
        for record in prepared:
            with contextlib.suppress(Exception):
                executor.remove(record.container)  # interrupted between the engine's create and start
            shutil.rmtree(record.folder, ignore_errors=True)
            with contextlib.suppress(Exception):
                joblock.release(executor, record.locked, record.id)
        raise


def _prepare(job_file: Path, executor: Executor, settings: config.Settings, console: Console, run: Run, read: JobRead | None,
             gpu_ids: tuple[int, ...], prepared: list[JobRecord]) -> ContainerSpec:
    """Resolve the job, take its lock, stage it on the target; its record (status created) is added to `prepared`."""
    gpus = records.gpus_wanted()
    if gpus:
        executor.check_gpus()
    there = target_of(executor, bool(gpus))
    staging = resolve(job_file, there, executor, settings, run, console, read, executor.nodes)
    job, ref = staging.resolved.job, staging.image
    rid = records.new_id(job.name if run.kind == TRAIN else f"{job.name}-{run.kind}")
    record = JobRecord(
        id=rid, name=job.name, kind=run.kind, trainer=job.trainer.value, host=executor.host, image=ref, container=f"runner-{rid}",
        job_file=str(job_file.resolve()), output_dir=str(job.output / job.name), gpu_ids=list(gpu_ids), nodes=executor.nodes,
    )
    record.locked = joblock.claim(executor, record, there.output_dir(job))  # before anything is sent or written: a second run launches nothing
    prepared.append(record)
    executor.check_image(ref, staging.build)  # a remote host receives the image here: after the cheap checks
    record.master_port = records.free_master_port(executor.host, executor.port_free)
    spec = staged(run, staging, record, executor, settings)
    record.started = records.now()
    record.save()  # status created: `runner ps` knows the container before it exists
    return spec


def _running(record: JobRecord, executor: Executor, console: Console) -> JobRecord:
    with record.deciding() as saved:
        if saved.ended:  # `runner stop` ended it while it started
            executor.remove(record.container)
            return saved
        record.status = "running"
        record.save()
    console.print(f"started {record.id} on {executor.host} ({record.image}); outputs → {record.output_dir}")
    return record


@dataclasses.dataclass(frozen=True)
class Staging:
    """A job resolved on its target, with what its container needs: the GPUs' environment and the image."""

    resolved: ResolvedJob
    gpu_env: dict[str, str]
    variant: str  # the image variant's pins table (runner.gpu.variant)
    image: str
    build: str  # `runner build` arguments of that image, for the fix when it is missing


def resolve(job_file: Path, there: Target, executor: Executor, settings: config.Settings, run: Run, console: Console,
            read: JobRead | None = None, nodes: int = 1) -> Staging:
    """Resolve and check the job on its target as `run` does, for a run on `nodes` machines; the model files it uses
    must be there."""
    resolved = run.resolve(job_file, there, read)
    job, inventory = resolved.job, resolved.inventory
    for note in resolved.notes:
        console.print(note)
    gpu_env, variant_name = gpu_environment(inventory, job, resolved.memory_plan, nodes)
    pins = builder.load_pins(job.trainer.value, variant_name, pins_file=settings.pins)
    executor.check_models(job.models.root, run.missing_models(resolved, there), download_args(job.models.preset, job.models.format, job.trainer))
    build = job.trainer.value if variant_name == "default" else f"{job.trainer.value} --variant {variant_name}"
    return Staging(resolved, gpu_env, variant_name, builder.image_ref(pins, settings.ca_bundle), build)


def staged(run: Run, staging: Staging, record: JobRecord, executor: Executor, settings: config.Settings) -> ContainerSpec:
    """Render the run's plan into its job folder, stage the mounts on the target and return its container; the
    record gets the fingerprints to keep and the environment's names."""
    resolved, job = staging.resolved, staging.resolved.job
    plan = run.plan(resolved, record.job_dir, record.master_port, record.nodes)
    target = executor.host_mounts(plan.mounts, job.name, record.container)
    record.fingerprints = run.fingerprints(resolved)
    env = {**config.network_env(settings), **staging.gpu_env, **plan.env}  # the job's own `env:` (in plan.env) wins
    spec = ContainerSpec(
        image=staging.image, name=record.container, command=RUN_PLAN, mounts=target, env=env, user=executor.user,
        workdir=plan.workdir, gpus=records.gpus_wanted(), gpu_ids=tuple(record.gpu_ids), gpu_count=job.gpus,
        shm_size=settings.shm_size, ulimits=settings.ulimits,
        labels={LABEL_RECORD: record.id, LABEL_JOB: job.name, LABEL_PORT: str(record.master_port)},
    )
    render.write(as_run(plan, spec, job, {**facts(executor, resolved, staging.variant), **run.facts(resolved)}), record.job_dir, record.nodes)
    executor.prepare_mounts(spec, sources=plan.mounts, by_content=resolved.caches is not Caches.reuse)
    record.env_names = sorted(env)
    return spec


def resume_held(record: JobRecord, executor: Executor, console: Console, wait_s: float = 60) -> bool:
    """A run its scheduler restarted (requeued, its node lost, preempted) waits, held, for runner (AWAITS_RESUME): render
    its resume from the last checkpoint (Earlier.resume; the first plan again when it saved none yet), stage it and
    release it. Returns whether it did (False: the run is not waiting, or another runner released it first)."""
    deadline = time.monotonic() + wait_s  # the line comes just before the run holds itself
    while not executor.state(record.container).get("AwaitsResume"):
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    with record.deciding() as saved:
        if saved.ended or not executor.state(record.container).get("AwaitsResume"):
            return False
        settings = config.load()
        there = target_of(executor, records.gpus_wanted())
        run = Run(Earlier.resume)
        try:
            staging = resolve(Path(saved.job_file), there, executor, settings, run, console, nodes=saved.nodes)
        except NothingToResume:
            run = Run(Earlier.refuse)
            staging = resolve(Path(saved.job_file), there, executor, settings, run, console, nodes=saved.nodes)
        executor.check_image(staging.image, staging.build)
        spec = staged(run, staging, saved, executor, settings)
        saved.save()
        executor.release(spec)
    console.print(f"runner: {saved.id} was restarted by its scheduler; it continues from its last checkpoint")
    return True


def as_run(plan: Plan, spec: ContainerSpec, job: Job, facts: dict) -> Plan:
    """The plan as the record of what runs: the container's mounts (the target's paths) and environment (secrets
    by name), how it is started, the job's resolved settings and the facts they were resolved from."""
    return dataclasses.replace(plan, **spec.record(), settings=render.settings(job), facts=facts)


def facts(executor: Executor, resolved: ResolvedJob, variant_name: str) -> dict:
    """What the target reported that the settings were chosen for (runner.job.render.facts), where, and the image variant."""
    f = render.facts(resolved)
    return {"host": executor.host, **f, "gpus": f["gpus"] or "none (RUNNER_GPUS=none)", "image_variant": variant_name}


def archive(record: JobRecord, executor: Executor) -> list[str]:
    """Keep the container's whole log beside the record, then remove the container; returns the log's lines.
    A container already gone leaves no log; one whose log cannot be written here is kept, for `docker logs`."""
    try:
        lines = list(executor.logs(record.container, follow=False))
    except ContainerGone:
        return []
    try:
        files.write_text(record.log_file, "".join(line + "\n" for line in lines))
    except OSError as e:
        record.failure = f"its log could not be kept here ({e.strerror}); the container {record.container} keeps it: `docker logs {record.container}`"
        return lines
    executor.remove(record.container)
    return lines


def stop(record: JobRecord, executor: Executor) -> JobRecord:
    """Stop the run: it ends as stopped, whichever runner (this one, or one following it) records the end."""
    with record.deciding() as saved:
        if saved.ended:
            return saved
        saved.stop_requested = True
        saved.save()
    executor.stop(record.container)
    return end(saved, executor)


def end(record: JobRecord, executor: Executor) -> JobRecord:
    """Record how the run ended, once: the first runner to get here (the one following it, `runner ps`, `runner stop`)
    keeps the log, records a successful run's caches as fresh, removes the container and gives the job's lock back;
    the others get the record it saved. A failed run's record says why: the watchdog that stopped it (it marks the
    record before it stops the container), or what its whole log shows."""
    try:
        code: int | None = executor.wait(record.container)  # at once for a container that has ended
    except ContainerGone:
        code = None
    with record.deciding() as saved:
        if saved.ended:
            return saved
        lines = archive(saved, executor)
        saved.exit_code = code
        saved.finished = records.now()
        if code is None:
            saved.status, saved.failure = "lost", f"its container {saved.container} was removed outside runner: exit code and log are gone"
        elif saved.stop_requested:
            saved.status = "stopped"
        elif saved.stopped_by in (watchdog.NAN, watchdog.HANG):
            saved.status, saved.exit_code = "failed", watchdog.STOPPED_EXIT_CODE
        else:
            saved.status = "exited" if code == 0 else "failed"
        if saved.status == "exited":
            for folder, fp in saved.fingerprints.items():
                executor.write_text(Path(folder) / fingerprint.FILE_NAME, fp)
        if saved.status == "failed" and saved.stopped_by in ("", watchdog.OOM) and (oom := logwatch.scan(lines, saved.trainer).oom):
            saved.failure = oom.summary()
        saved.save()
        if saved.locked:
            joblock.release(executor, saved.locked, saved.id)
    return saved


class LogCopy:
    """runner's copy of a job's log beside its outputs. A write that fails (a full disk) ends the copy, not the run:
    the whole log stays in the container and, once the run ends, in the record's train.log (`runner logs`)."""

    def __init__(self, path: Path, run: str):
        self.path, self.run, self.error = path, run, None
        self.file = None
        self._do(lambda: path.parent.mkdir(parents=True, exist_ok=True))
        self.file = self._do(lambda: path.open("w"))

    def _do(self, write):
        try:
            return write()
        except OSError as e:
            self.error = self.error or e
            self.close()

    def write(self, text: str) -> None:
        if self.file:
            self._do(lambda: (self.file.write(text + "\n"), self.file.flush()))

    def close(self) -> None:
        file, self.file = self.file, None
        if file:
            with contextlib.suppress(OSError):
                file.close()

    def problem(self) -> str | None:
        """Why the copy is not whole, and where the whole log is; None when it is whole."""
        if self.error is None:
            return None
        size = self.path.stat().st_size if self.path.is_file() else 0
        return (f"the log copy {self.path} stopped at {size} bytes ({self.error.strerror or self.error}); "
                f"the whole log: `runner logs {self.run}`")


def follow(record: JobRecord, executor: Executor, console: Console) -> int:
    """Stream the container's log with the training's standing, keep a copy beside the outputs, run the watchdogs
    (runner.jobs.watchdog), return the exit code: the trainer's; 0 for a run stopped with `runner stop`; 1 for a
    container removed outside runner; 1 after CUDA out of memory (the trainer gets watchdog.OOM_GRACE_S to exit
    before its container is stopped); 3 when the NaN or the hang watchdog stopped the run.
    Interrupted (Ctrl-C, SIGTERM), the copy keeps every line streamed so far and says so; the job runs on."""
    copy = LogCopy(Path(record.output_dir) / f"runner-{record.id}.log", record.id) if executor.here else None  # else: `runner pull`
    guard = watchdog.Guard(record, executor, console)
    try:
        try:
            with Following(console) as shown, guard:
                for text in executor.logs(record.container, follow=True):
                    if copy:
                        copy.write(text)
                    shown.print(text)
                    guard.feed(text, shown)
                    if text.startswith(AWAITS_RESUME):
                        resume_held(record, executor, console)
        except ContainerGone:
            pass  # removed while followed: end() records it
        stopped = guard.oom_stop.end()
        saved = end(record, executor)
    except BaseException as e:  # Ctrl-C, SIGTERM (the CLI's Terminated), the engine gone: the copy says where it ends
        if copy:
            copy.write(f"runner: stopped following {record.id} at {records.now()} ({type(e).__name__}); `runner ps` shows "
                       f"the run's state, `runner logs -f {record.id}` follows it again from its first line")
            copy.close()
        raise
    if copy:
        copy.close()
    said = [] if copy is None or copy.problem() is None else [copy.problem()]
    if saved.status == "stopped":
        said.append(f"{saved.id} was stopped with `runner stop`; its log: `runner logs {saved.id}`")
    elif saved.status == "lost":
        said.append(f"{saved.id}: {saved.failure}")
    elif guard.stop is not None and saved.stopped_by == guard.stop.kind:
        said.append(guard.stop.report)
    elif saved.status == "failed" and (oom := guard.watch.oom):
        said.append(logwatch.oom_report(oom, saved.job_file, *card_memory(oom, executor), stopped=stopped, trainer=saved.trainer))
    for text in said:
        console.print(f"runner: {text}", style="bold red", highlight=False)
        for kept in [saved.log_file] + ([copy.path] if copy and copy.error is None else []):  # `runner logs JOB` and the copy say it too
            with contextlib.suppress(OSError), kept.open("a") as f:
                f.write(f"runner: {text}\n")
    return 1 if saved.status == "failed" and guard.watch.oom and guard.stop is None else exit_code(saved)


def exit_code(record: JobRecord) -> int:
    """What `runner train` and `runner logs` exit with for an ended run (README, "Your work is safe")."""
    if record.status == "stopped":
        return 0
    if record.status == "lost":
        return 1
    if record.status == "failed" and record.failure.startswith("CUDA out of memory"):
        return 1
    if record.stopped_by in (watchdog.NAN, watchdog.HANG):
        return watchdog.STOPPED_EXIT_CODE
    return record.exit_code or 0


def card_memory(oom: logwatch.OutOfMemory, executor: Executor) -> tuple[float | None, float | None]:
    """GPU memory to plan for (the out-of-memory message's, else the smallest GPU the host reports) and host RAM."""
    from runner.gpu.inventory import gather, host_ram_gib

    vram = oom.total_gib
    if vram is None and records.gpus_wanted():
        vram = min((g.memory_gib for g in gather(executor.shell).gpus), default=None)
    return vram, host_ram_gib(executor.shell)


def refresh(records: list[JobRecord]) -> list[JobRecord]:
    """Update running records from their engines (a job may have ended, or its container vanished, while nobody
    followed it). A record another runner ends meanwhile is taken as that runner saved it."""
    from runner.executors import executor_for

    executors: dict = {}
    out = []
    for r in records:
        if r.status == "running":
            try:
                ex = executors.setdefault(r.host, executor_for(r.host))
                state = ex.state(r.container)
                if state.get("AwaitsResume"):
                    resume_held(r, ex, Console(stderr=True))
                elif not state.get("Running"):
                    r = end(r, ex)
            except UserError:
                pass  # host or engine unreachable: keep what we knew
        out.append(r)
    return out
