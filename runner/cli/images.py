"""Trainer images and long-lived trainer containers: build, images, up, down, shell."""

from __future__ import annotations

from pathlib import Path

import typer

from runner import cli, views
from runner.cli import JsonOpt, app, trainer_name


TrainerArg = typer.Argument(..., parser=trainer_name("TRAINER"), help="diffpipe or musubi")


@app.command()
def build(
    trainer: str = typer.Argument(..., parser=trainer_name("IMAGE", with_images=True), help="diffpipe, musubi or caption (runner caption's captioner)"),
    variant: str = typer.Option("default", help="image variant from the pins file, e.g. blackwell (CUDA 12.8) for musubi"),
    pins: Path = typer.Option(None, help="pins file (default: RUNNER_PINS or images/pins.toml)"),
) -> None:
    """Build a trainer image from its pins (base image by digest, trainer commit, locked wheels).

    Behind a TLS-intercepting proxy set ca_bundle in the runner config or RUNNER_CA_BUNDLE; PIP_INDEX_URL
    selects a pip mirror. An image whose pins have not changed is not rebuilt.
    """
    from runner import config
    from runner.images import builder
    from runner.executors.local import LocalDocker

    settings = config.load()
    executor = LocalDocker()
    p = builder.load_pins(trainer, variant, pins or settings.pins)
    builder.check_build_disk(executor.client, p)
    ref = builder.build(executor.client, p, settings.ca_bundle, settings.pip_index_url, views.build_log(cli.out))
    views.done(cli.out, "built", ref)


@app.command(name="images")
def list_images(as_json: bool = JsonOpt('{"images": [{"id", "tags", "trainer", "variant", "size" (bytes), "pins": {name: value}}]}')) -> None:
    """List runner's trainer images with their tags, pins and sizes."""
    from runner.images import builder
    from runner.executors.local import LocalDocker

    rows = builder.list_images(LocalDocker().client)
    views.emit_json({"images": rows}) if as_json else cli.out.print(views.images_table(rows))


@app.command()
def up(trainer: str = TrainerArg) -> None:
    """Start a long-lived trainer container (runner-<trainer>) with the configured folders, env and GPUs.

    Builds the image first if needed. Folders come from the runner config (models, data, cache, outputs).
    """
    from runner import config
    from runner.executors import services
    from runner.jobs import records
    from runner.executors.local import LocalDocker

    name = services.up(LocalDocker(), trainer, config.load(), records.gpus_wanted(), views.build_log(cli.out))
    views.done(cli.out, "up", f"{name}: `runner shell {trainer}` opens a shell in it")


@app.command()
def down(trainer: list[str] = typer.Argument(None, parser=trainer_name("TRAINER"), help="trainers to stop (default: both)")) -> None:
    """Stop and remove the containers started by `runner up`. Mounted folders are untouched."""
    from runner.executors import services
    from runner.images import builder
    from runner.executors.local import LocalDocker

    stopped = services.down(LocalDocker(), trainer or list(builder.TRAINERS))
    views.line(cli.out, f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def shell(ctx: typer.Context, trainer: str = TrainerArg) -> None:
    """Open a shell in the container of `runner up TRAINER`; extra arguments run that command instead."""
    from runner.executors import services
    from runner.executors.local import LocalDocker

    raise typer.Exit(services.shell(LocalDocker(), trainer, ctx.args or ["bash"]))
