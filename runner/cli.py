"""The command line. Thin: parse, call one function, print. Every UserError exits 2 as one paragraph."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from runner.errors import UserError

app = typer.Typer(
    help="Train Wan2.1 LoRAs with diffusion-pipe or musubi-tuner from one job file, in pinned images, locally or on remote GPU hosts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)



@app.callback()
def _root() -> None:
    """Train Wan2.1 LoRAs with diffusion-pipe or musubi-tuner from one job file."""


JobArg = typer.Argument(..., dir_okay=False, help="the job file (YAML); see examples/")


@app.command()
def validate(job: Path = JobArg) -> None:
    """Check a job file against the schema and every known trainer pitfall; nothing is written.

    Model files that are not on this machine are checked again before a job starts.
    """
    from runner.render import load_checked

    j = load_checked(job)
    out.print(f"[green]ok[/green] {job}: {j.trainer.value} {j.task.value}, {len(j.datasets)} dataset(s)")


@app.command()
def render(
    job: Path = JobArg,
    out_dir: Path = typer.Option(..., "--out", file_okay=False, help="folder for the rendered files (replaced whole)"),
    vram: float = typer.Option(None, help="GPU memory in GiB for `memory: auto` (default: this machine's GPU)"),
    ram: float = typer.Option(None, help="host RAM in GiB for `memory: auto` (default: this machine's)"),
) -> None:
    """Write the trainer's files, the commands (command.sh) and plan.json for a job, without running it."""
    from runner import render as r
    from runner.views import plan_summary

    plan = r.render(job, out_dir, vram, ram)
    out.print(plan_summary(plan, out_dir))


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
    ref = images.build(executor.client, p, settings.ca_bundle, settings.pip_index_url, lambda line: out.print(line, markup=False, highlight=False))
    out.print(f"[green]built[/green] {ref}")


@app.command(name="images")
def list_images() -> None:
    """List runner's trainer images with their tags, pins and sizes."""
    from rich.table import Table

    from runner import images
    from runner.executors.local import LocalDocker

    t = Table("image", "trainer", "variant", "size", "trainer commit", "base image")
    for row in images.list_images(LocalDocker().client):
        pins = row["pins"]
        t.add_row(", ".join(row["tags"]) or row["id"], row["trainer"], row["variant"], f"{row['size'] / 2**30:.2f} GiB",
                  pins.get("commit", "")[:12], pins.get("base_image", ""))
    out.print(t)


@app.command()
def up(trainer: str = TrainerArg) -> None:
    """Start a long-lived trainer container (runner-<trainer>) with the configured folders, env and GPUs.

    Builds the image first if needed. Folders come from the runner config (models, data, cache, outputs).
    """
    from runner import config, jobs, services
    from runner.executors.local import LocalDocker

    name = services.up(LocalDocker(), trainer, config.load(), jobs.gpus_wanted(), lambda line: out.print(line, markup=False, highlight=False))
    out.print(f"[green]up[/green] {name}: `runner shell {trainer}` opens a shell in it")


@app.command()
def down(trainer: list[str] = typer.Argument(None, help="trainers to stop (default: both)")) -> None:
    """Stop and remove the containers started by `runner up`. Mounted folders are untouched."""
    from runner import images, services
    from runner.executors.local import LocalDocker

    stopped = services.down(LocalDocker(), trainer or list(images.TRAINERS))
    out.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


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
        out.print(f"follow it with `runner logs -f {record.id}`")
        return
    try:
        code = launch.follow(record, executor, out)
    except KeyboardInterrupt:
        err.print(f"the job keeps running: `runner logs -f {record.id}` follows it again, `runner stop {record.id}` stops it")
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
        out.print(record.log_file.read_text() if record.log_file.exists() else "(no log was kept)", markup=False, highlight=False, end="")
        raise typer.Exit(record.exit_code or 0)
    executor = executor_for(record.host)
    if follow:
        raise typer.Exit(launch.follow(record, executor, out))
    for line in executor.logs(record.container, follow=False):
        out.print(line, markup=False, highlight=False)


@app.command()
def ps(host: str = typer.Option(None, help="only jobs on this host (\"local\" for this machine)")) -> None:
    """List job runs with their state, refreshed from the engines that run them."""
    from runner import jobs, launch, views

    out.print(views.jobs_table(launch.refresh([r for r in jobs.all_records() if host is None or r.host == host])))


@app.command()
def stop(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Stop a running job: the trainer gets SIGTERM, then SIGKILL after 30 s. Outputs stay."""
    from runner import jobs, launch
    from runner.executors import executor_for

    record = jobs.find(job)
    launch.stop(record, executor_for(record.host))
    out.print(f"stopped {record.id}; its log: `runner logs {record.id}`")


@app.command()
def pull(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Bring a remote job's outputs into its local output folder; only new or changed files move."""
    from pathlib import Path

    from runner import jobs
    from runner.executors import executor_for

    record = jobs.find(job)
    stats = executor_for(record.host).pull_outputs(record.name, Path(record.output_dir))
    if stats is None:
        raise UserError(f"job {record.id}", f"ran on this machine; its outputs are already in {record.output_dir}.", "nothing to pull.")
    out.print(f"pulled {stats.files} of {stats.total_files} files ({stats.bytes / 2**20:.1f} MiB) from {record.host} into {record.output_dir}")


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
    out.print(f"added {h.name} ({h.ssh}) to {hosts.inventory_file()}")


@hosts_app.command("list")
def hosts_list() -> None:
    """List the hosts of the inventory with their SSH targets and folders."""
    from rich.table import Table

    from runner import hosts

    t = Table("name", "ssh", "key", "models", "data", "cache", "outputs")
    for h in hosts.load_all().values():
        t.add_row(h.name, h.ssh, h.key or "", h.models, h.data, h.cache, h.outputs)
    out.print(t)


@hosts_app.command("rm")
def hosts_rm(name: str = typer.Argument(..., help="a host name from `runner hosts list`")) -> None:
    """Remove a host from the inventory (nothing on the host is touched)."""
    from runner import hosts

    hosts.remove(name)
    out.print(f"removed {name}")


# --- GPU: env, plan, doctor (issue 5). --host comes with runner.hosts; these take the local shell for now.


@app.command("env")
def env_cmd(
    job: Path = typer.Argument(None, dir_okay=False, help="the job file (YAML); without it, the GPU rules alone"),
    host: str = typer.Option(None, "--host", help="a host from `runner hosts list` instead of this machine"),
) -> None:
    """Print the environment runner would inject into the training container, and why."""
    from rich.table import Table

    from runner.gpu.envrules import env_for_job
    from runner.spec import load_job
    from runner.ssh import shell_for

    table = Table("variable", "value", "why", "source")
    for var in env_for_job(load_job(job) if job else None, shell_for(host)):
        table.add_row(var.name, var.value, var.reason, var.source)
    out.print(table)


@app.command("plan")
def plan_cmd(
    job: Path = JobArg,
    vram: float = typer.Option(None, help="GPU memory in GiB (default: the smallest local GPU)"),
    ram: float = typer.Option(None, help="host RAM in GiB (default: this machine's)"),
    host: str = typer.Option(None, "--host", help="a host from `runner hosts list` instead of this machine"),
) -> None:
    """Pick precision, checkpointing, block swap and optimizer so the job fits the GPU, from measured memory."""
    from runner.gpu.planner import plan_job_on
    from runner.spec import load_job
    from runner.ssh import shell_for

    p = plan_job_on(load_job(job), shell_for(host), vram, ram)
    head = "[green]fits[/green]" if p.fits else "[red]does not fit[/red]"
    out.print(f"{head} {p.task} on {p.trainer}: {p.tokens} latent tokens per step, {p.vram_gib:.1f} GiB GPU"
              + (f", {p.ram_gib:.0f} GiB RAM" if p.ram_gib else ""))
    out.print(f"  transformer_dtype: {p.transformer_dtype}\n  activation_checkpointing: {p.activation_checkpointing}\n"
              f"  blocks_to_swap: {p.blocks_to_swap}\n  optimizer: {p.optimizer_type or 'job / trainer default'}\n"
              f"  text_encoder_dtype: {p.text_encoder_dtype}" + (f"\n  text_encoder_batch: {p.text_encoder_batch}" if p.trainer == "musubi" else ""))
    out.print(f"  estimated peak: {p.gpu_gib:.1f} GiB GPU (+{p.margin_gib:.1f} margin), {p.host_gib:.0f} GiB host RAM")
    for s in p.suggestions:
        out.print(f"  would fit with: {s}")
    if not p.fits:
        raise typer.Exit(1)


@app.command("doctor")
def doctor_cmd(
    job: Path = typer.Argument(None, dir_okay=False, help="a job file: also check its volume dirs and plan's RAM"),
    host: str = typer.Option(None, "--host", help="a host from `runner hosts list` instead of this machine"),
) -> None:
    """Check that this host can run training: Docker, NVIDIA Container Toolkit, GPUs, driver, disk, RAM, /dev/shm."""
    from runner.doctor import doctor_for_job, ready
    from runner.ssh import shell_for

    checks = doctor_for_job(job, shell_for(host))
    for c in checks:
        mark = "[green]ok[/green]  " if c.ok else ("[red]FAIL[/red]" if c.required else "[yellow]warn[/yellow]")
        out.print(f"{mark} {c.name}: {c.detail}", highlight=False)
        if not c.ok and c.fix:
            out.print(f"       fix: {c.fix}", highlight=False)
    if not ready(checks):
        err.print("environment not ready: fix the FAIL lines above")
        raise typer.Exit(1)


# --- models and datasets (issue 6) -------------------------------------------------------------------------

dataset_app = typer.Typer(help="Check and prepare training data.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("check")
def dataset_check(
    directory: Path = typer.Argument(..., help="folder of images/videos with captions"),
    job: Path = typer.Option(None, "--job", help="take frames, source_fps, captions, task and trainer from this job"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
    frames: list[int] = typer.Option(None, "--frames", help="frame buckets / target frames (repeat the option)"),
    source_fps: float = typer.Option(None, "--source-fps", help="musubi source_fps"),
    task: str = typer.Option(None, "--task", help="t2v-1.3B, t2v-14B, i2v-14B-480P or i2v-14B-720P"),
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: both)"),
) -> None:
    """What each trainer will do with every file: read, captioned, bucketed, resampled, or dropped, and why.
    Exits 1 when anything would fail or silently drop out of training."""
    from runner.dataset import check
    from runner.dataset_view import print_report, report_json
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
    if as_json:
        print(report_json(report))
    else:
        print_report(report, out)
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
    for r in report.results:
        if r.error:
            err.print(f"[red]failed[/red] {r.source}: {r.error}", highlight=False)
    out.print(report.summary(), highlight=False)
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
) -> None:
    """Fetch the model files a preset needs, verified against the hub's sizes and hashes; resumable, and a second
    run fetches nothing. Honors HF_ENDPOINT; reads the token from HF_TOKEN only."""
    from runner.download import default_hf_home, fetch, plan, summarize
    from runner.download_view import print_plan
    from runner.models import Format
    from runner.progress import transfer
    from runner.spec import Trainer

    chosen = _choice(Trainer, trainer, "--trainer")
    items = plan(preset, _choice(Format, fmt, "--format"), [chosen] if chosen else list(Trainer), to, (hf_home or default_hf_home()) / "hub")
    print_plan(summarize(items, to), out)
    if dry_run:
        return
    with transfer(err) as progress:
        counts = fetch(items, to, progress)
    out.print(f"fetched {counts['fetched']}, verified {counts['verified']}, already verified {counts['skipped']}: every file matches the hub")


@app.command()
def selftest(
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: both)"),
    host: str = typer.Option("local", "--host", "-H", help="a host from `runner hosts list` (default: this machine)"),
    steps: int = typer.Option(4, "--steps", min=1, help="training steps per trainer (whole epochs over the 2 clips)"),
    fmt: str = typer.Option("comfy", "--format", help="model files as `runner download --format` lays them out: comfy or official"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Smoke-test the trainers on a GPU host: random-weight Wan2.1 T2V-1.3B files of the real architecture (made once,
    on the host, in the trainer image, under <models>/runner-selftest/), two synthetic clips, then `runner train` for
    each trainer: cache latents, cache text, train, save. Checks the LoRA (key names, rank, tensor count, B matrices
    trained) and reports s/step and peak GPU memory against the planner's estimate. Exits 1 when a trainer fails."""
    from runner import selftest
    from runner.models import Format
    from runner.spec import Trainer
    from runner.views import selftest_json, selftest_table

    chosen = _choice(Trainer, trainer, "--trainer")
    results = selftest.run([chosen] if chosen else list(Trainer), host, steps, _choice(Format, fmt, "--format"), err if as_json else out)
    if as_json:
        print(selftest_json(results))
    else:
        out.print(selftest_table(results))
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except UserError as e:
        err.print("[bold red]error:[/bold red]", end=" ")
        err.print(str(e), markup=False, highlight=False, soft_wrap=True)  # commands in the fix stay copy-pasteable
        sys.exit(e.exit_code)
