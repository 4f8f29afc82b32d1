"""Commands that check, render, run and follow jobs: validate, render, train, resume, sample, logs, ps, stop, pull, board, selftest."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import Field

from runner import cli, views
from runner.cli import ClusterOpt, HostOpt, JobArg, JsonOpt, RamOpt, VramOpt, app, choice, out_folder, read_first, schema_option, target
from runner.errors import UserError
from runner.executors import ContainerGone
from runner.spec import Count, EpochList, JobRead, Prompt

Port = Annotated[Count, Field(le=65535)]
Nodes = Annotated[Count, Field(le=1024)]
HostOrClusterOpt = typer.Option(None, "--host", "-H", help="a host from `runner hosts list` (default: this machine, unless --cluster)")
nodes_option = schema_option(Nodes, "--nodes", "give a whole number of nodes from 1 to 1024, e.g. --nodes 2.")
NodesOpt = typer.Option(None, "--nodes", parser=nodes_option,
                        help="with --cluster: the number of nodes the job runs on, one task per node (default 1)")


@app.command()
def validate(job: Path = JobArg, host: str = HostOpt,
             as_json: bool = JsonOpt('{"job", "name", "trainer", "task", "datasets": [paths]}; a sweep: {"jobs": [those of each job]}')) -> None:
    """Check a job file against the schema and every known trainer pitfall, with the model files and caches as they
    are on this machine or --host; nothing is written. A sweep (a `sweep:` block): each of its jobs.

    Model files missing there are refused when the job starts. The job fields: `runner fields`.
    """
    from runner import sweep
    from runner.job.render import load_checked

    points = sweep.expand(job)  # read before Docker or SSH is contacted, as read_first
    there = target(host)
    jobs = [load_checked(job, there, p.read).job for p in points]
    if not points[0].values:  # a plain job file
        views.emit_json(views.validated_json(job, jobs[0])) if as_json else views.validated(cli.out, job, jobs[0])
        return
    if as_json:
        views.emit_json({"jobs": [views.validated_json(job, j) for j in jobs]})
        return
    for p, j in zip(points, jobs):
        views.validated(cli.out, job, j, p.describe())


@app.command()
def render(
    job: Path = JobArg,
    out_dir: Path = typer.Option(..., "--out", parser=out_folder("--out"), help="folder for the rendered files: a new or empty one, or an earlier render (replaced whole)"),
    vram: float = VramOpt("GPU memory in GiB for `memory: auto` (default: the smallest GPU of the machine)"),
    ram: float = RamOpt("host RAM in GiB for `memory: auto` (default: the machine's)"),
    host: str = HostOpt,
    resume: bool = typer.Option(False, "--resume", help="render what `runner resume` would run: the latest run continued from its latest checkpoint"),
    fresh: bool = typer.Option(False, "--fresh", help="render what `runner train --fresh` would run: a new run beside an earlier run's files"),
    nodes: int = typer.Option(1, "--nodes", parser=nodes_option, help="render for a cluster job of this many nodes (`train --cluster C --nodes N`): musubi only; "
                              "adds plan-once.json and plan-every-node.json, what the nodes run"),
    as_json: bool = JsonOpt('{"out", "files": [names], "plan": the plan.json written}; a sweep: {"jobs": [those of each job]}'),
) -> None:
    """Write the trainer's files, the commands (command.sh) and plan.json for a job resolved on this machine or
    --host, without running it. plan.json names secret variables without their values. Earlier runs in the
    output folder are looked at only with --resume or --fresh. A sweep (a `sweep:` block): each of its jobs into
    OUT/<job name>/, once every job is resolved."""
    from runner import sweep
    from runner.job import render as r

    points = sweep.expand(job)  # read before Docker or SSH is contacted, as read_first
    swept = bool(points[0].values)
    reads = {out_dir / p.name if swept else out_dir: p.read for p in points}
    plans = r.render_jobs(job, reads, vram, ram, target(host), earlier(resume, fresh, refuse=None), nodes)
    shown = [views.rendered_json(plan, out) for out, plan in plans.items()]
    if as_json:
        views.emit_json({"jobs": shown} if swept else shown[0])
        return
    for out, plan in plans.items():
        views.rendered(cli.out, plan, out)


@app.command()
def train(
    job: list[Path] = typer.Argument(..., help="the job file (YAML), or several: each is placed on a host with free GPUs"),
    detach: bool = typer.Option(False, "--detach", "-d", help="start and return; follow later with `runner logs -f`"),
    host: list[str] = typer.Option(None, "--host", "-H", help="a host from `runner hosts list` (default: this machine); repeat it to let several jobs spread over several hosts"),
    resume: bool = typer.Option(False, "--resume", help="continue the latest run from its latest checkpoint (as `runner resume`)"),
    fresh: bool = typer.Option(False, "--fresh", help="start a new run beside an earlier run's LoRAs and checkpoints (nothing is deleted)"),
    cluster: str = ClusterOpt,
    nodes: int = NodesOpt,
) -> None:
    """Train: render the job, run each step in the trainer's container, show live logs, exit with its code.

    The full log is saved beside the outputs (<output>/<name>/runner-<id>.log). The job keeps running if
    this command is interrupted (Ctrl-C: exit 130, SIGTERM: 143); `runner logs -f`, `runner stop` and `runner ps`
    find it later. A second run of a job that runs is refused (exit 2). Exit 75: the Docker engine went away.
    When the output folder holds LoRAs or checkpoints of an earlier run, it refuses to start without --resume or
    --fresh: no LoRA or checkpoint is ever overwritten.
    With --host the image, the rendered job and the datasets are sent to the host (only what changed), model
    files must already be in the host's models folder (`runner download PRESET --host H`), and `runner pull`
    brings the outputs back.
    Several job files, or several --host: each job goes to the first host with enough free GPUs (those nvidia-smi
    lists there minus those runner's unended runs hold), on those GPUs only, and starts detached; a job that fits
    nowhere refuses them all before any starts (exit 2).
    With --cluster the job is submitted to a Slurm cluster (sbatch through its login node, one task per node) with its
    data and rendered job staged in the cluster's shared folders; `runner ps`, `logs -f`, `stop` and `pull` follow it.
    Several job files with --cluster are one Slurm job array, each job its own run: runner returns once it is submitted.
    A sweep (a job file with a `sweep:` block of fields to vary) is its jobs, as several job files.
    """
    from runner.trainers.resolved import Earlier

    start_jobs(job, host, cluster, nodes, detach, earlier(resume, fresh, refuse=Earlier.refuse))


def start_jobs(jobs: list[Path], host: list[str] | None, cluster: str | None, nodes: int | None, detach: bool, when) -> None:
    """`train` and `resume`: one job on one host or cluster (followed unless detached), else several jobs (each sweep
    expanded) as a Slurm job array with --cluster, or placed on the hosts."""
    if cluster is not None or nodes is not None:
        on = where(host, cluster, nodes)
        files = expanded(jobs)
        run(*files[0], on, detach, when) if len(files) == 1 else run_array([f for f, _ in files], on, when)
        return
    hosts = list(dict.fromkeys(host or ["local"]))
    files = expanded(jobs)
    if len(files) == 1 and len(hosts) == 1:
        run(*files[0], hosts[0], detach, when)
    else:
        run_placed([f for f, _ in files], hosts, when)


def expanded(jobs: list[Path]) -> list[tuple[Path, JobRead | None]]:
    """The job files to start, each read (a bad one refused before Docker or SSH is contacted): a plain one with what
    was read, a sweep's jobs written as job files of their own (runner.sweep), said on the console."""
    from runner import sweep

    out: list[tuple[Path, JobRead | None]] = []
    for job in jobs:
        points = sweep.expand(job)
        if not points[0].values:
            out.append((job, points[0].read))
            continue
        files = sweep.written(job, points)
        views.line(cli.out, f"{job}: a sweep of {len(points)} job{'s' * (len(points) > 1)}: {'; '.join(p.describe() for p in points)} "
                            f"(their job files: {files[0].parent})")
        out += [(f, None) for f in files]
    return out


def run_placed(jobs: list[Path], hosts: list[str], earlier) -> None:
    """Several jobs or hosts: place each job on a host with free GPUs, start them all detached, say where each went."""
    from runner import config
    from runner.executors import executor_for
    from runner.jobs import placement

    wanted = placement.wanted(jobs)  # read before Docker or SSH is contacted
    settings = config.load()
    executors = [executor_for(h) for h in hosts]
    with _interrupted("jobs started before this are named above and keep running"):
        started = placement.submit(wanted, executors, settings, cli.out, earlier)
    for record in started:
        views.line(cli.out, f"{record.name}: {record.id} on {record.host}; follow it with `runner logs -f {record.id}`")


def earlier(resume: bool, fresh: bool, refuse):
    """--resume / --fresh as runner.trainers.resolved.Earlier; `refuse` when neither is given."""
    from runner.trainers.resolved import Earlier

    if resume and fresh:
        raise UserError("--resume and --fresh", "both given: a run either continues the latest one or starts anew.", "pass one of them.")
    return Earlier.resume if resume else Earlier.fresh if fresh else refuse


@app.command(name="resume")
def resume_job(
    job: Path = JobArg,
    detach: bool = typer.Option(False, "--detach", "-d", help="start and return; follow later with `runner logs -f`"),
    host: str = HostOrClusterOpt,
    cluster: str = ClusterOpt,
    nodes: int = NodesOpt,
) -> None:
    """Continue a job's latest run from its latest checkpoint, on this machine, --host or --cluster: diffusion-pipe from its
    DeepSpeed checkpoint (global_stepN), musubi-tuner from its latest state folder, its saves numbered on from there.
    A sweep: each of its jobs, as `runner train SWEEP --resume`."""
    from runner.trainers.resolved import Earlier

    start_jobs([job], [host] if host else None, cluster, nodes, detach, Earlier.resume)


def where(host: str | list[str] | None, cluster: str | None, nodes: int | None):
    """What runs the job: --host (made an executor later), or (cluster name, nodes) for --cluster."""
    if cluster is not None and host:
        raise UserError("--cluster and --host", "both given: a job runs on one host or is submitted to one cluster.", "pass one of them.")
    if nodes is not None and cluster is None:
        raise UserError("--nodes", "is the number of a cluster's nodes the job runs on, and no --cluster is given.",
                        "add --cluster NAME (`runner clusters list`), or leave --nodes out.")
    return (host or "local") if cluster is None else (cluster, nodes or 1)


def run(job: Path, read: JobRead | None, host: str | tuple[str, int], detach: bool, earlier) -> None:
    """Start the job (earlier: runner.trainers.resolved.Earlier) on --host or, for (cluster, nodes), on a Slurm
    cluster, and follow it unless detached; exit with its code. read: the job file as read already (None: read here)."""
    from runner import config
    from runner.jobs import launch
    from runner.executors import executor_for

    read = read or read_first(job)
    settings = config.load()
    if isinstance(host, tuple):
        from runner.executors import slurm
        from runner.job.render import check_nodes

        check_nodes(read[0].trainer, host[1])
        executor = slurm.SlurmExecutor.for_cluster(*host)
    else:
        executor = executor_for(host)
    with _interrupted("the job was not started"):
        record = launch.start(job, executor, settings, cli.out, launch.Run(earlier), read)
    if detach:
        views.line(cli.out, f"follow it with `runner logs -f {record.id}`")
        return
    with _interrupted(f"the job keeps running: `runner logs -f {record.id}` follows it again, `runner stop {record.id}` stops it"):
        code = launch.follow(record, executor, cli.out)
    raise typer.Exit(code)


def run_array(jobs: list[Path], cluster, earlier) -> None:
    """Several job files as one Slurm job array on (cluster, nodes); returns once it is submitted."""
    from runner import config
    from runner.executors import slurm
    from runner.job.render import check_nodes
    from runner.jobs import launch

    if len({p.resolve() for p in jobs}) < len(jobs):
        raise UserError("job files", "name one file twice: each job of an array is its own run.", "give each job file once.")
    for job in jobs:
        check_nodes(read_first(job)[0].trainer, cluster[1])
    executor = slurm.SlurmExecutor.for_cluster(*cluster)
    with _interrupted("nothing was submitted"):
        started = launch.start_array(jobs, executor, config.load(), cli.out, launch.Run(earlier))
    for record in started:
        views.line(cli.out, f"{record.id}: Slurm {record.scheduler_id}; follow it with `runner logs -f {record.id}`")


class Terminated(BaseException):
    """SIGTERM to a command that follows a job, raised where it runs so that files and records close cleanly."""


def _terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def _interrupted(then: str):
    """Ctrl-C exits 130 and SIGTERM 143, saying `then` (what became of the job), without a traceback; SIGTERM is
    raised as Terminated meanwhile, like Ctrl-C, so that the log copy and the records close cleanly."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    except (KeyboardInterrupt, Terminated) as e:
        views.line(cli.err, f"runner: {'SIGTERM' if isinstance(e, Terminated) else 'interrupted'}; {then}")
        raise typer.Exit(143 if isinstance(e, Terminated) else 130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def sample(
    job: Path = JobArg,
    epochs: str = typer.Option(None, "--epochs", parser=schema_option(EpochList, "--epochs", "give saved epochs as numbers separated by commas, e.g. --epochs 2,4,6."),
                                     help="the epochs whose LoRAs to sample, e.g. 2,4,6 (default: the last LoRA saved)"),
    every: bool = typer.Option(False, "--all", help="sample every saved LoRA, epoch and step saves"),
    prompts: list[str] = typer.Option(None, "--prompt", parser=schema_option(Prompt, "--prompt", "give the text of the video, e.g. --prompt \"a red ball bouncing\"."),
                                      help="a prompt instead of the job's samples.prompts; repeat for several"),
    host: str = HostOpt,
) -> None:
    """Make sample videos of a job's saved LoRAs (either trainer) with musubi-tuner's wan_generate_video.py in the
    pinned musubi image, on this machine or --host, and a contact sheet to compare the epochs.

    Each (epoch, prompt) gives an mp4 under <output>/<name>/samples/<epoch>/<prompt>/ (new files only); the sheet,
    samples/index.html, shows the epochs side by side per prompt with the loss at each save. Size, frames, steps,
    guidance and seed come from the job's samples: section. diffusion-pipe's LoRAs are converted to musubi's keys first.
    A sample run holds the job's lock as a training does (refused while the job trains: exit 2) and has a record:
    `runner ps`, `runner logs` and `runner stop` work on it; Ctrl-C stops it.
    """
    from runner import config
    from runner.jobs import sample as sampling
    from runner.executors import executor_for

    read = read_first(job)
    if every and epochs:
        raise UserError("--all", "and --epochs both choose the LoRAs to sample.", "give one of them.")
    run = sampling.Sampling(epochs or None, every, prompts or None, cli.out)
    with _interrupted("sampling stopped, its container removed; the videos made so far stay in the job's samples/ folder"):
        code = sampling.sample(job, executor_for(host), config.load(), run, cli.out, read)
    raise typer.Exit(code)


@app.command()
def logs(
    job: str = typer.Argument(..., help="job name (its newest run) or run id from `runner ps`"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep streaming until the job ends"),
) -> None:
    """Show a job's log from its container, wherever it runs; -f reattaches to a running job."""
    from runner.jobs import launch, records
    from runner.executors import executor_for

    record = launch.refresh([records.find(job)])[0]
    if record.status == "running":
        executor = executor_for(record.host)
        if follow:
            with _interrupted(f"the job keeps running: `runner logs -f {record.id}` follows it again"):
                raise typer.Exit(launch.follow(record, executor, cli.out))
        try:
            for text in executor.logs(record.container, follow=False):
                views.log_text(cli.out, text + "\n")
            return
        except ContainerGone:
            record = launch.end(record, executor)  # removed outside runner since the refresh
    # ended: the container is gone, its log was kept
    views.log_text(cli.out, record.log_file.read_text() if record.log_file.exists() else "(no log was kept)\n")
    if record.status == "lost":
        views.line(cli.err, f"runner: {record.id}: {record.failure}")
    raise typer.Exit(launch.exit_code(record))


@app.command()
def ps(
    host: str = typer.Option(None, help="only jobs on this host (\"local\" for this machine, \"slurm:NAME\" for a cluster)"),
    as_json: bool = JsonOpt('{"jobs": [{"id", "name", "kind": train or sample, "trainer", "host", "image", "container", "scheduler_id", "job_file", "output_dir", "status", '
                            '"exit_code", "failure", "stopped_by", "started", "finished", "master_port", "gpu_ids", "nodes", "env_names", "fingerprints", "stop_requested", "locked"}]}'),
) -> None:
    """List job runs (trainings and sample runs) with their state, refreshed from the engines that run them."""
    from runner.jobs import launch, records
    from runner.remote import clusters, hosts

    every = records.all_records()
    known = {"local", *hosts.load_all(), *(clusters.PREFIX + c for c in clusters.load_all()), *(r.host for r in every)}
    if host is not None and host not in known:
        raise UserError("--host", f"{host!r} is neither a host of the inventory nor one that ran a job.",
                        f"use one of {', '.join(sorted(known))} (`runner hosts list`).")
    records = launch.refresh([r for r in every if host is None or r.host == host])
    views.emit_json({"jobs": [r.model_dump(mode="json") for r in records]}) if as_json else cli.out.print(views.jobs_table(records))


@app.command()
def stop(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Stop a running job: the trainer gets SIGTERM, then SIGKILL after 30 s. Outputs stay."""
    from runner.jobs import launch, records
    from runner.executors import executor_for

    record = records.find(job)
    if record.ended:
        views.line(cli.out, f"{record.id} already ended: {record.status}; its log: `runner logs {record.id}`")
        return
    record = launch.stop(record, executor_for(record.host))
    if record.status == "stopped":
        views.line(cli.out, f"stopped {record.id}; its log: `runner logs {record.id}`")
    else:
        views.line(cli.out, f"{record.id} had ended before the stop: {record.status} {record.failure}".rstrip())


@app.command()
def pull(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Bring a remote job's outputs into its local output folder; only new or changed files move."""
    from runner.jobs import records
    from runner.executors import executor_for

    record = records.find(job)
    stats = executor_for(record.host).pull_outputs(record.name, Path(record.output_dir))
    if stats is None:
        raise UserError(f"job {record.id}", f"ran on this machine; its outputs are already in {record.output_dir}.", "nothing to pull.")
    views.pulled(cli.out, stats, record)


@app.command()
def board(
    jobs: list[str] = typer.Argument(None, help="job names or run ids from `runner ps` (default: every job that ran on --host)", show_default=False),
    host: str = typer.Option(None, "--host", "-H", help="the machine whose logs to show: a host from `runner hosts list` or local (default: where the jobs ran)"),
    port: int = typer.Option(6006, "--port", parser=schema_option(Port, "--port", "give a TCP port, 1 to 65535, e.g. --port 6007."), help="the port on this machine"),
    as_json: bool = JsonOpt('{"url", "host", "port", "container", "jobs": {job: its log folder there}}, once TensorBoard answers'),
) -> None:
    """Show the jobs' training curves in TensorBoard: the real TensorBoard, run from a trainer image on the machine that
    holds the logs (with --host, on that host, its port forwarded over the SSH connection), serving them on
    127.0.0.1:--port here. Each job is a folder whose runs (a fresh run, a resumed one) are labelled curves.

    Prints the URL and runs until Ctrl-C, which stops TensorBoard and removes its container.
    """
    from runner.jobs import board as b

    served = None
    try:
        with b.signals_interrupt(), b.opened(jobs or [], host, port) as served:
            if as_json:
                views.emit_json(served.as_json())
            else:
                views.line(cli.out, f"TensorBoard: {served.url} ({', '.join(served.jobs)} on {served.host}); Ctrl-C stops it")
            sys.stdout.flush()
            b.serve(served)
    except KeyboardInterrupt:
        if served is None:
            views.line(cli.err, "runner: interrupted before TensorBoard answered; nothing is left running")
            raise typer.Exit(130) from None
    views.line(cli.err, "TensorBoard stopped; its container is removed")


@app.command()
def selftest(
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: both)"),
    host: str = HostOpt,
    steps: int = typer.Option(4, "--steps", parser=schema_option(Count, "--steps", "give a whole number of steps, 1 or more, e.g. --steps 4."), help="training steps per trainer (whole epochs over the 2 clips)"),
    fmt: str = typer.Option("comfy", "--format", help="model files as `runner download --format` lays them out: comfy or official"),
    task: str = typer.Option("t2v-1.3B", "--task", help="the model: t2v-1.3B, ti2v-5B (diffpipe only) or t2v-A14B (its low-noise expert)"),
    as_json: bool = JsonOpt('[{"trainer", "passed", "steps", "s_per_step", "peak_gib", "plan_gib", "step_peaks_gib", "lora", "problems", "notes", …}], one per trainer'),
) -> None:
    """Smoke-test the trainers on a GPU host: random-weight Wan2.1 T2V-1.3B files of the real architecture (made once,
    on the host, in the trainer image, under <models>/runner-selftest/), two synthetic clips, then `runner train` for
    each trainer: cache latents, cache text, train, save. Checks the LoRA (key names, rank, tensor count, B matrices
    trained) and reports s/step and peak GPU memory against the planner's estimate. Exits 1 when a trainer fails."""
    from runner import selftest
    from runner.models.presets import Format
    from runner.spec import Task, Trainer

    chosen = choice(Trainer, trainer, "--trainer")
    model = choice(selftest.SelftestTask, task, "--task")
    trainers = selftest.trainers_for(Task(model.value), chosen)
    results = selftest.run(trainers, host, steps, choice(Format, fmt, "--format"), cli.err if as_json else cli.out, Task(model.value))
    views.emit_json(views.selftest_data(results)) if as_json else cli.out.print(views.selftest_table(results))
    if not all(r.passed for r in results):
        raise typer.Exit(1)
