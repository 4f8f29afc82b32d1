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
