"""The command line. Thin: parse, call one function, print. Every UserError exits 2 as one paragraph."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from runner import views
from runner.errors import UserError

app = typer.Typer(
    help="Train Wan2.1 LoRAs with diffusion-pipe or musubi-tuner from one job file, in pinned images, locally or on remote GPU hosts.\n\n"
    "Commands that print data take --json: one JSON document on stdout, its keys in the command's --help. A mistake you can "
    "fix exits 2 with one paragraph on stderr; with --json, stderr gets one JSON object instead: "
    '{"errors": [{"where", "problem", "fix"}], "exit_code": 2}.',
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = views.console()
err = views.console(stderr=True)
_json_errors = False  # set by --json: a UserError then goes to stderr as views.errors_json


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        views.line(out, f"runner {version('runner')}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="log what runner does on stderr: commands run, SSH round trips, Docker API calls (secrets by name only)"),
    _: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print runner's version and exit"),
) -> None:
    global out, err, _json_errors
    out, err = views.console(), views.console(stderr=True)  # this invocation's streams: piped or a terminal
    _json_errors = False  # the command's --json, parsed after this, sets it
    if debug:
        _log_to_stderr()


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    # runner's own modules, and urllib3's request lines: the Docker SDK's API calls (and the hub's downloads)
    for name in ("runner", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)


def _json_mode(value: bool) -> bool:
    global _json_errors
    _json_errors = _json_errors or value
    return value


def JsonOpt(keys: str):
    """--json, with the document's keys for --help."""
    return typer.Option(False, "--json", callback=_json_mode, help=f"print one JSON document on stdout instead: {keys}")


JobArg = typer.Argument(..., dir_okay=False, help="the job file (YAML); see examples/")


@app.command()
def validate(job: Path = JobArg, as_json: bool = JsonOpt('{"job", "name", "trainer", "task", "datasets": [paths]}')) -> None:
    """Check a job file against the schema and every known trainer pitfall; nothing is written.

    Model files that are not on this machine are checked again before a job starts. The job fields:
    `runner fields`.
    """
    from runner.job.render import load_checked

    j = load_checked(job).job
    views.emit_json(views.validated_json(job, j)) if as_json else views.validated(out, job, j)


@app.command()
def fields(as_json: bool = JsonOpt('{"fields": [{"name", "type", "default", "description"}]}')) -> None:
    """List every field of the job file: name (a.b is b: inside a:), type, default and what it does (README.md#the-job-file)."""
    from runner.fields import fields as all_fields

    docs = all_fields()
    views.emit_json(views.records_json("fields", docs)) if as_json else out.print(views.fields_table(docs))


@app.command()
def render(
    job: Path = JobArg,
    out_dir: Path = typer.Option(..., "--out", file_okay=False, help="folder for the rendered files (replaced whole)"),
    vram: float = typer.Option(None, help="GPU memory in GiB for `memory: auto` (default: this machine's GPU)"),
    ram: float = typer.Option(None, help="host RAM in GiB for `memory: auto` (default: this machine's)"),
    as_json: bool = JsonOpt('{"out", "files": [names], "plan": the plan.json written}'),
) -> None:
    """Write the trainer's files, the commands (command.sh) and plan.json for a job, without running it."""
    from runner.job import render as r

    plan = r.render(job, out_dir, vram, ram)
    views.emit_json(views.rendered_json(plan, out_dir)) if as_json else views.rendered(out, plan, out_dir)


TrainerArg = typer.Argument(..., help="diffpipe or musubi")


@app.command()
def build(
    trainer: str = TrainerArg,
    variant: str = typer.Option("default", help="image variant from the pins file, e.g. blackwell (CUDA 12.8) for musubi"),
    pins: Path = typer.Option(None, help="pins file (default: RUNNER_PINS or images/pins.toml)"),
) -> None:
    """Build a trainer image from its pins (base image by digest, trainer commit, locked wheels).

    Behind a TLS-intercepting proxy set ca_bundle in the runner config or RUNNER_CA_BUNDLE; PIP_INDEX_URL
    selects a pip mirror. An image whose pins have not changed is not rebuilt.
    """
    from runner import config, images
    from runner.executors.local import LocalDocker

    settings = config.load()
    executor = LocalDocker()
    p = images.load_pins(trainer, variant, pins or settings.pins)
    images.check_build_disk(executor.client, p)
    ref = images.build(executor.client, p, settings.ca_bundle, settings.pip_index_url, views.build_log(out))
    views.done(out, "built", ref)


@app.command(name="images")
def list_images(as_json: bool = JsonOpt('{"images": [{"id", "tags", "trainer", "variant", "size" (bytes), "pins": {name: value}}]}')) -> None:
    """List runner's trainer images with their tags, pins and sizes."""
    from runner import images
    from runner.executors.local import LocalDocker

    rows = images.list_images(LocalDocker().client)
    views.emit_json({"images": rows}) if as_json else out.print(views.images_table(rows))


@app.command()
def up(trainer: str = TrainerArg) -> None:
    """Start a long-lived trainer container (runner-<trainer>) with the configured folders, env and GPUs.

    Builds the image first if needed. Folders come from the runner config (models, data, cache, outputs).
    """
    from runner import config, jobs, services
    from runner.executors.local import LocalDocker

    name = services.up(LocalDocker(), trainer, config.load(), jobs.gpus_wanted(), views.build_log(out))
    views.done(out, "up", f"{name}: `runner shell {trainer}` opens a shell in it")


@app.command()
def down(trainer: list[str] = typer.Argument(None, help="trainers to stop (default: both)")) -> None:
    """Stop and remove the containers started by `runner up`. Mounted folders are untouched."""
    from runner import images, services
    from runner.executors.local import LocalDocker

    stopped = services.down(LocalDocker(), trainer or list(images.TRAINERS))
    views.line(out, f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def shell(ctx: typer.Context, trainer: str = TrainerArg) -> None:
    """Open a shell in the container of `runner up TRAINER`; extra arguments run that command instead."""
    from runner import services
    from runner.executors.local import LocalDocker

    raise typer.Exit(services.shell(LocalDocker(), trainer, ctx.args or ["bash"]))


@app.command()
def train(
    job: Path = JobArg,
    detach: bool = typer.Option(False, "--detach", "-d", help="start and return; follow later with `runner logs -f`"),
    host: str = typer.Option("local", "--host", "-H", help="a host from `runner hosts list` (default: this machine)"),
) -> None:
    """Train: render the job, run each step in the trainer's container, show live logs, exit with its code.

    The full log is saved beside the outputs (<output>/<name>/runner-<id>.log). The job keeps running if
    this command is interrupted; `runner logs -f`, `runner stop` and `runner ps` find it later.
    With --host the image, the rendered job and the datasets are sent to the host (only what changed), model
    files must already be in the host's models folder, and `runner pull` brings the outputs back.
    """
    from runner import config, launch
    from runner.executors import executor_for

    settings = config.load()
    executor = executor_for(host)
    record = launch.start(job, executor, settings, out)
    if detach:
        views.line(out, f"follow it with `runner logs -f {record.id}`")
        return
    try:
        code = launch.follow(record, executor, out)
    except KeyboardInterrupt:
        views.line(err, f"the job keeps running: `runner logs -f {record.id}` follows it again, `runner stop {record.id}` stops it")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def logs(
    job: str = typer.Argument(..., help="job name (its newest run) or run id from `runner ps`"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep streaming until the job ends"),
) -> None:
    """Show a job's log from its container, wherever it runs; -f reattaches to a running job."""
    from runner import jobs, launch
    from runner.executors import executor_for

    record = launch.refresh([jobs.find(job)])[0]
    if record.status != "running":  # finished: the container is gone, its log was kept
        views.log_text(out, record.log_file.read_text() if record.log_file.exists() else "(no log was kept)\n")
        raise typer.Exit(record.exit_code or 0)
    executor = executor_for(record.host)
    if follow:
        raise typer.Exit(launch.follow(record, executor, out))
    for text in executor.logs(record.container, follow=False):
        views.log_text(out, text + "\n")


@app.command()
def ps(
    host: str = typer.Option(None, help="only jobs on this host (\"local\" for this machine)"),
    as_json: bool = JsonOpt('{"jobs": [{"id", "name", "trainer", "host", "image", "container", "job_file", "output_dir", "status", '
                            '"exit_code", "failure", "started", "finished", "master_port", "env_names", "fingerprints"}]}'),
) -> None:
    """List job runs with their state, refreshed from the engines that run them."""
    from runner import jobs, launch

    records = launch.refresh([r for r in jobs.all_records() if host is None or r.host == host])
    views.emit_json({"jobs": [r.model_dump(mode="json") for r in records]}) if as_json else out.print(views.jobs_table(records))


@app.command()
def stop(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Stop a running job: the trainer gets SIGTERM, then SIGKILL after 30 s. Outputs stay."""
    from runner import jobs, launch
    from runner.executors import executor_for

    record = jobs.find(job)
    launch.stop(record, executor_for(record.host))
    views.line(out, f"stopped {record.id}; its log: `runner logs {record.id}`")


@app.command()
def pull(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Bring a remote job's outputs into its local output folder; only new or changed files move."""
    from runner import jobs
    from runner.executors import executor_for

    record = jobs.find(job)
    stats = executor_for(record.host).pull_outputs(record.name, Path(record.output_dir))
    if stats is None:
        raise UserError(f"job {record.id}", f"ran on this machine; its outputs are already in {record.output_dir}.", "nothing to pull.")
    views.pulled(out, stats, record)


hosts_app = typer.Typer(help="Remote GPU hosts: `runner train JOB --host NAME` runs jobs there over SSH.", no_args_is_help=True)
app.add_typer(hosts_app, name="hosts")


@hosts_app.command("add")
def hosts_add(
    name: str = typer.Argument(..., help="a short name, e.g. gpu01"),
    ssh: str = typer.Option(..., "--ssh", help="user@address[:port], or a Host alias of ~/.ssh/config"),
    key: Path = typer.Option(None, "--key", help="private key file (default: ssh config, agent, ~/.ssh/id_*)"),
    known_hosts: Path = typer.Option(None, "--known-hosts", help="known_hosts file (default: the alias's UserKnownHostsFile or ~/.ssh/known_hosts)"),
    models: str = typer.Option("~/runner/models", help="models folder on the host (read-only in containers)"),
    data: str = typer.Option("~/runner/data", help="datasets are synced to DATA/<job>/<i>-<folder> on the host"),
    cache: str = typer.Option("~/runner/cache", help="caches on the host"),
    outputs: str = typer.Option("~/runner/outputs", help="outputs on the host; `runner pull` brings them back"),
) -> None:
    """Add or replace a host in the inventory. Nothing is contacted: `runner train --host` checks the host."""
    from runner import hosts

    h = hosts.add(hosts.Host(name=name, ssh=ssh, key=str(key.expanduser().resolve()) if key else None,
                             known_hosts=str(known_hosts.expanduser().resolve()) if known_hosts else None,
                             models=models, data=data, cache=cache, outputs=outputs))
    views.line(out, f"added {h.name} ({h.ssh}) to {hosts.inventory_file()}")


@hosts_app.command("list")
def hosts_list(as_json: bool = JsonOpt('{"hosts": [{"name", "ssh", "key", "known_hosts", "models", "data", "cache", "outputs"}]}')) -> None:
    """List the hosts of the inventory with their SSH targets and folders."""
    from runner import hosts

    inventory = list(hosts.load_all().values())
    views.emit_json({"hosts": [h.model_dump() for h in inventory]}) if as_json else out.print(views.hosts_table(inventory))


@hosts_app.command("rm")
def hosts_rm(name: str = typer.Argument(..., help="a host name from `runner hosts list`")) -> None:
    """Remove a host from the inventory (nothing on the host is touched)."""
    from runner import hosts

    hosts.remove(name)
    views.line(out, f"removed {name}")


# --- GPU: env, plan, doctor (issue 5). --host comes with runner.hosts; these take the local shell for now.


@app.command("env")
def env_cmd(
    job: Path = typer.Argument(None, dir_okay=False, help="the job file (YAML); without it, the GPU rules alone"),
    host: str = typer.Option(None, "--host", help="a host from `runner hosts list` instead of this machine"),
    as_json: bool = JsonOpt('{"variables": [{"name", "value", "reason", "source"}]}'),
) -> None:
    """Print the environment runner would inject into the training container, and why."""
    from runner.gpu.envrules import env_for_job
    from runner.spec import load_job
    from runner.ssh import shell_for

    variables = env_for_job(load_job(job) if job else None, shell_for(host))
    views.emit_json(views.records_json("variables", variables)) if as_json else out.print(views.env_table(variables))


@app.command("plan")
def plan_cmd(
    job: Path = JobArg,
    vram: float = typer.Option(None, help="GPU memory in GiB (default: the smallest local GPU)"),
    ram: float = typer.Option(None, help="host RAM in GiB (default: this machine's)"),
    host: str = typer.Option(None, "--host", help="a host from `runner hosts list` instead of this machine"),
    as_json: bool = JsonOpt('{"fits", "task", "trainer", "tokens", "vram_gib", "ram_gib", "gpu_gib", "margin_gib", "host_gib", '
                            '"caching_gpu_gib", "training_gpu_gib", "suggestions", "settings": {the job settings picked}, and the planner\'s raw fields}'),
) -> None:
    """Pick precision, checkpointing, block swap and optimizer so the job fits the GPU, from measured memory.

    Exits 1 when nothing fits."""
    from runner.gpu.planner import plan_job_on
    from runner.spec import load_job
    from runner.ssh import shell_for

    p = plan_job_on(load_job(job), shell_for(host), vram, ram)
    views.emit_json(views.memory_plan_json(p)) if as_json else views.memory_plan(out, p)
    if not p.fits:
        raise typer.Exit(1)


@app.command("doctor")
def doctor_cmd(
    job: Path = typer.Argument(None, dir_okay=False, help="a job file: also check its volume dirs and plan's RAM"),
    host: str = typer.Option(None, "--host", help="a host from `runner hosts list` instead of this machine"),
    as_json: bool = JsonOpt('{"ready", "checks": [{"name", "ok", "detail", "fix", "required"}]}'),
) -> None:
    """Check that this host can run training: Docker, NVIDIA Container Toolkit, GPUs, driver, disk, RAM, /dev/shm.

    Exits 1 when a required check fails."""
    from runner.doctor import doctor_for_job, ready
    from runner.ssh import shell_for

    checks = doctor_for_job(job, shell_for(host))
    if as_json:
        views.emit_json(views.doctor_json(checks, ready(checks)))
    else:
        views.doctor(out, checks)
    if not ready(checks):
        if not as_json:
            views.line(err, "environment not ready: fix the FAIL lines above")
        raise typer.Exit(1)


# --- models and datasets (issue 6) -------------------------------------------------------------------------

dataset_app = typer.Typer(help="Check and prepare training data.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("check")
def dataset_check(
    directory: Path = typer.Argument(..., help="folder of images/videos with captions"),
    job: Path = typer.Option(None, "--job", help="take frames, source_fps, captions, task and trainer from this job"),
    as_json: bool = JsonOpt('{"directory", "settings", "files": [{"name", …, "verdicts": {trainer: {"level", "text"}}}], "problems", "failed", "counts"}'),
    frames: list[int] = typer.Option(None, "--frames", help="frame buckets / target frames (repeat the option)"),
    source_fps: float = typer.Option(None, "--source-fps", help="musubi source_fps"),
    task: str = typer.Option(None, "--task", help="t2v-1.3B, t2v-14B, i2v-14B-480P or i2v-14B-720P"),
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: both)"),
) -> None:
    """What each trainer will do with every file: read, captioned, bucketed, resampled, or dropped, and why.
    Exits 1 when anything would fail or silently drop out of training."""
    from runner.dataset import check
    from runner.progress import counting
    from runner.spec import Task, Trainer

    with counting("reading", err) as start:
        report = check(
            directory,
            start,
            job_file=job,
            frames=frames or None,
            source_fps=source_fps,
            task=_choice(Task, task, "--task"),
            trainer=_choice(Trainer, trainer, "--trainer"),
        )
    views.emit_json(views.dataset_report_json(report)) if as_json else views.dataset_report(report, out)
    if report.failed:
        raise typer.Exit(1)


def _choice(enum: type, value: str | None, option: str):
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        raise UserError(option, f"'{value}' is not one of {', '.join(e.value for e in enum)}.", "use one of those") from None


@dataset_app.command("prepare")
def dataset_prepare(
    src: Path = typer.Argument(..., help="folder of source videos and images (only read)"),
    dst: Path = typer.Option(..., "--out", help="folder for the clips"),
    fps: float = typer.Option(16, "--fps", help="target frame rate (Wan2.1 trains at 16)"),
    frames: int = typer.Option(81, "--frames", help="frames per clip, 4k+1"),
    min_frames: int = typer.Option(None, "--min-frames", help="keep a last, shorter clip (4k+1) of at least this many frames"),
    max_side: int = typer.Option(None, "--max-side", help="scale down so the longest side is at most this"),
    workers: int = typer.Option(None, "--workers", help="parallel processes (default: one per core)"),
    caption_extension: str = typer.Option(".txt", "--caption-extension"),
) -> None:
    """Re-encode videos to --fps and cut them into --frames clips, each with a copy of its caption; copy images.
    Resumes where it stopped; SRC is never written."""
    from runner.prepare import Options, prepare
    from runner.progress import counting

    given = {"min_frames": min_frames, "max_side": max_side, "workers": workers}
    opts = Options(fps=fps, frames=frames, caption_extension=caption_extension, **{k: v for k, v in given.items() if v is not None})
    with counting("preparing", err) as start:
        report = prepare(src, dst, opts, start)
    views.prepared(out, err, report)
    if any(r.error for r in report.results):
        raise typer.Exit(1)


@app.command()
def download(
    preset: str = typer.Argument(..., help="t2v-1.3B, t2v-14B, i2v-14B-480P or i2v-14B-720P"),
    fmt: str = typer.Option("comfy", "--format", help="official (DiT and T5 from the official repo) or comfy (ComfyUI single files)"),
    to: Path = typer.Option(Path("models"), "--to", help="models root (the job's models.root)"),
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: what both need)"),
    hf_home: Path = typer.Option(None, "--hf-home", help="Hugging Face home for the tokenizers musubi reads (the job's hf_cache); default $HF_HOME"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be fetched and stop"),
    as_json: bool = JsonOpt('{"files": [{"repo", "revision", "filename", "size", "dest", "state"}], "bytes", "to_fetch": {"files", "bytes"}, '
                            '"result": {"fetched", "verified", "skipped"} (null with --dry-run)}'),
) -> None:
    """Fetch the model files a preset needs, verified against the hub's sizes and hashes; resumable, and a second
    run fetches nothing. Honors HF_ENDPOINT; reads the token from HF_TOKEN only."""
    from runner.config import default_hf_home
    from runner.download import fetch, plan, summarize
    from runner.models import Format
    from runner.progress import transfer
    from runner.spec import Trainer

    chosen = _choice(Trainer, trainer, "--trainer")
    items = plan(preset, _choice(Format, fmt, "--format"), [chosen] if chosen else list(Trainer), to, (hf_home or default_hf_home()) / "hub")
    rows = summarize(items, to)
    if not as_json:
        views.download_plan(out, rows)
    counts = None
    if not dry_run:
        with transfer(err) as progress:
            counts = fetch(items, to, progress)
    if as_json:
        views.emit_json(views.download_json(rows, counts))
    elif counts:
        views.downloaded(out, counts)


@app.command()
def selftest(
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: both)"),
    host: str = typer.Option("local", "--host", "-H", help="a host from `runner hosts list` (default: this machine)"),
    steps: int = typer.Option(4, "--steps", min=1, help="training steps per trainer (whole epochs over the 2 clips)"),
    fmt: str = typer.Option("comfy", "--format", help="model files as `runner download --format` lays them out: comfy or official"),
    as_json: bool = JsonOpt('[{"trainer", "passed", "steps", "s_per_step", "peak_gib", "plan_gib", "step_peaks_gib", "lora", "problems", "notes", …}], one per trainer'),
) -> None:
    """Smoke-test the trainers on a GPU host: random-weight Wan2.1 T2V-1.3B files of the real architecture (made once,
    on the host, in the trainer image, under <models>/runner-selftest/), two synthetic clips, then `runner train` for
    each trainer: cache latents, cache text, train, save. Checks the LoRA (key names, rank, tensor count, B matrices
    trained) and reports s/step and peak GPU memory against the planner's estimate. Exits 1 when a trainer fails."""
    from runner import selftest
    from runner.models import Format
    from runner.spec import Trainer

    chosen = _choice(Trainer, trainer, "--trainer")
    results = selftest.run([chosen] if chosen else list(Trainer), host, steps, _choice(Format, fmt, "--format"), err if as_json else out)
    views.emit_json(views.selftest_data(results)) if as_json else out.print(views.selftest_table(results))
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except UserError as e:
        views.user_error(err, e, as_json=_json_errors)
        sys.exit(e.exit_code)
