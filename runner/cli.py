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
) -> None:
    """Write the trainer's files, the commands (command.sh) and plan.json for a job, without running it."""
    from runner import render as r
    from runner.views import plan_summary

    plan = r.render(job, out_dir)
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
        return
    raise typer.Exit(launch.follow(record, executor, out))


@app.command()
def logs(
    job: str = typer.Argument(..., help="job name (its newest run) or run id from `runner ps`"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep streaming until the job ends"),
) -> None:
    """Show a job's log from its container, wherever it runs; -f reattaches to a running job."""
    from runner import jobs, launch
    from runner.executors import executor_for

    record = jobs.find(job)
    executor = executor_for(record.host)
    if follow:
        raise typer.Exit(launch.follow(record, executor, out))
    for line in executor.logs(record.container, follow=False):
        out.print(line, markup=False, highlight=False)


@app.command()
def ps(host: str = typer.Option(None, help="only jobs on this host (\"local\" for this machine)")) -> None:
    """List job runs with their state, refreshed from the engines that run them."""
    from rich.table import Table

    from runner import jobs, launch

    t = Table("id", "job", "trainer", "host", "status", "exit", "started")
    for r in launch.refresh([r for r in jobs.all_records() if host is None or r.host == host]):
        t.add_row(r.id, r.name, r.trainer, r.host, r.status, "" if r.exit_code is None else str(r.exit_code), r.started)
    out.print(t)


@app.command()
def stop(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Stop a running job: the trainer gets SIGTERM, then SIGKILL after 30 s. Outputs stay."""
    from runner import jobs
    from runner.executors import executor_for

    record = jobs.find(job)
    executor_for(record.host).stop(record.container)
    record.status, record.finished = "stopped", jobs.now()
    record.save()
    out.print(f"stopped {record.id}")


@app.command()
def pull(job: str = typer.Argument(..., help="job name (its newest run) or run id")) -> None:
    """Bring a remote job's outputs into its local output folder; only new or changed files move."""
    from pathlib import Path

    from runner import jobs, sync
    from runner.executors import executor_for

    record = jobs.find(job)
    if record.host == "local":
        raise UserError(f"job {record.id}", f"ran on this machine; its outputs are already in {record.output_dir}.", "nothing to pull.")
    executor = executor_for(record.host)
    stats = sync.download(executor.shell, executor.outputs_of(record.name), Path(record.output_dir))
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


def main() -> None:
    try:
        app()
    except UserError as e:
        err.print("[bold red]error:[/bold red]", end=" ")
        err.print(str(e), markup=False, highlight=False, soft_wrap=True)  # commands in the fix stay copy-pasteable
        sys.exit(e.exit_code)
