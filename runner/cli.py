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


def main() -> None:
    try:
        app()
    except UserError as e:
        err.print("[bold red]error:[/bold red]", end=" ")
        err.print(str(e), markup=False, highlight=False)
        sys.exit(e.exit_code)
