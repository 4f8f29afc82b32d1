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


JobArg = typer.Argument(..., exists=False, dir_okay=False, help="the job file (YAML); see examples/")


@app.command()
def validate(job: Path = JobArg) -> None:
    """Check a job file against the schema and every known trainer pitfall; nothing is written."""
    from runner.spec import load_job

    load_job(job)
    out.print(f"[green]ok[/green] {job}")


def main() -> None:
    try:
        app()
    except UserError as e:
        err.print("[bold red]error:[/bold red]", end=" ")
        err.print(str(e), markup=False, highlight=False)
        sys.exit(e.exit_code)


# --- GPU: env, plan, doctor (issue 5). --host comes with runner.hosts; these take the local shell for now.


@app.command("env")
def env_cmd(job: Path = typer.Argument(None, dir_okay=False, help="the job file (YAML); without it, the GPU rules alone")) -> None:
    """Print the environment runner would inject into the training container, and why."""
    from rich.table import Table

    from runner.gpu.envrules import env_for_job
    from runner.shell import LocalShell
    from runner.spec import load_job

    table = Table("variable", "value", "why", "source")
    for var in env_for_job(load_job(job) if job else None, LocalShell()):
        table.add_row(var.name, var.value, var.reason, var.source)
    out.print(table)


@app.command("plan")
def plan_cmd(
    job: Path = JobArg,
    vram: float = typer.Option(None, help="GPU memory in GiB (default: the smallest local GPU)"),
    ram: float = typer.Option(None, help="host RAM in GiB (default: this machine's)"),
) -> None:
    """Pick precision, checkpointing, block swap and optimizer so the job fits the GPU, from measured memory."""
    from runner.gpu.planner import plan_job_on
    from runner.shell import LocalShell
    from runner.spec import load_job

    p = plan_job_on(load_job(job), LocalShell(), vram, ram)
    head = "[green]fits[/green]" if p.fits else "[red]does not fit[/red]"
    out.print(f"{head} {p.task} on {p.trainer}: {p.tokens} latent tokens per step, {p.vram_gib:.1f} GiB GPU"
              + (f", {p.ram_gib:.0f} GiB RAM" if p.ram_gib else ""))
    out.print(f"  transformer_dtype: {p.transformer_dtype}\n  activation_checkpointing: {p.activation_checkpointing}\n"
              f"  blocks_to_swap: {p.blocks_to_swap}\n  optimizer: {p.optimizer_type or 'job / trainer default'}")
    out.print(f"  estimated peak: {p.gpu_gib:.1f} GiB GPU (+{p.margin_gib:.1f} margin), {p.host_gib:.0f} GiB host RAM")
    for s in p.suggestions:
        out.print(f"  would fit with: {s}")
    if not p.fits:
        raise typer.Exit(1)


@app.command("doctor")
def doctor_cmd(job: Path = typer.Argument(None, dir_okay=False, help="a job file: also check its volume dirs and plan's RAM")) -> None:
    """Check that this host can run training: Docker, NVIDIA Container Toolkit, GPUs, driver, disk, RAM, /dev/shm."""
    from runner.doctor import doctor_for_job, ready

    checks = doctor_for_job(job)
    for c in checks:
        mark = "[green]ok[/green]  " if c.ok else ("[red]FAIL[/red]" if c.required else "[yellow]warn[/yellow]")
        out.print(f"{mark} {c.name}: {c.detail}", highlight=False)
        if not c.ok and c.fix:
            out.print(f"       fix: {c.fix}", highlight=False)
    if not ready(checks):
        err.print("environment not ready: fix the FAIL lines above")
        raise typer.Exit(1)
