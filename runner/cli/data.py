"""Training data and model files: fields, dataset check/prepare, download."""

from __future__ import annotations

from pathlib import Path

import typer

from runner import cli, views
from runner.cli import JsonOpt, app, choice, out_folder, schema_option
from runner.errors import UserError
from runner.spec import CaptionExtension, Count, FrameCount, PositiveFloat, Task

TASKS = ", ".join(t.value for t in Task)


@app.command()
def fields(as_json: bool = JsonOpt('{"fields": [{"name", "type", "default", "description"}]}')) -> None:
    """List every field of the job file: name (a.b is b: inside a:), type, default and what it does (README.md#the-job-file)."""
    from runner.fields import fields as all_fields

    docs = all_fields()
    views.emit_json(views.records_json("fields", docs)) if as_json else cli.out.print(views.fields_table(docs))


FRAMES_FIX = "give a frame count of the form 4k+1, e.g. 33 or 81."
dataset_app = typer.Typer(help="Check and prepare training data.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command("check")
def dataset_check(
    directory: Path = typer.Argument(..., help="folder of images/videos with captions"),
    job: Path = typer.Option(None, "--job", help="take frames, source_fps, captions, task and trainer from this job"),
    as_json: bool = JsonOpt('{"directory", "settings", "files": [{"name", …, "verdicts": {trainer: {"level", "text"}}}], "problems", "failed", "counts", "captions": {"captioned", "of", "without": [names]}}'),
    frames: list[int] = typer.Option(None, "--frames", parser=schema_option(FrameCount, "--frames", FRAMES_FIX), help="frame buckets / target frames (repeat the option)"),
    source_fps: float = typer.Option(None, "--source-fps", parser=schema_option(PositiveFloat, "--source-fps", "give the videos' frame rate, a number above 0, e.g. --source-fps 30."), help="musubi source_fps"),
    task: str = typer.Option(None, "--task", help=f"{TASKS} (ti2v-5B trains at 24 fps, the rest at 16)"),
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: both)"),
) -> None:
    """What each trainer will do with every file: read, captioned, bucketed, resampled, or dropped, and why.
    Exits 1 when anything would fail or silently drop out of training."""
    from runner.data.check import check
    from runner.progress import counting
    from runner.spec import Trainer

    with counting("reading", cli.err) as start:
        report = check(
            directory,
            start,
            job_file=job,
            frames=frames or None,
            source_fps=source_fps,
            task=choice(Task, task, "--task"),
            trainer=choice(Trainer, trainer, "--trainer"),
        )
    views.emit_json(views.dataset_report_json(report)) if as_json else views.dataset_report(report, cli.out)
    if report.failed:
        raise typer.Exit(1)


@dataset_app.command("prepare")
def dataset_prepare(
    src: Path = typer.Argument(..., help="folder of source videos and images (only read)"),
    dst: Path = typer.Option(..., "--out", parser=out_folder("--out"), help="folder for the clips"),
    fps: float = typer.Option(None, "--fps", parser=schema_option(PositiveFloat, "--fps", "give the frame rate to train at, a number above 0, e.g. --fps 16."), help="target frame rate (default: the --task's, else 16)"),
    task: str = typer.Option(None, "--task", help=f"the task the clips are for, which sets the default --fps: {TASKS} (ti2v-5B: 24, the rest: 16)"),
    frames: int = typer.Option(81, "--frames", parser=schema_option(FrameCount, "--frames", FRAMES_FIX), help="frames per clip, 4k+1"),
    min_frames: int = typer.Option(None, "--min-frames", parser=schema_option(FrameCount, "--min-frames", FRAMES_FIX), help="keep a last, shorter clip (4k+1) of at least this many frames"),
    max_side: int = typer.Option(None, "--max-side", parser=schema_option(Count, "--max-side", "give the longest side in pixels, e.g. --max-side 832."), help="scale down so the longest side is at most this"),
    workers: int = typer.Option(None, "--workers", parser=schema_option(Count, "--workers", "give a number of processes, 1 or more, e.g. --workers 4."), help="parallel processes (default: one per core)"),
    caption_extension: str = typer.Option(".txt", "--caption-extension", parser=schema_option(CaptionExtension, "--caption-extension", "give the caption files' suffix with its dot, e.g. --caption-extension .txt."), help="each media file's caption is <stem><caption extension>"),
) -> None:
    """Re-encode videos to --fps and cut them into --frames clips, each with a copy of its caption; copy images.
    Resumes where it stopped; SRC is never written."""
    from runner.data.prepare import Options, prepare
    from runner.progress import counting

    given = {"min_frames": min_frames, "max_side": max_side, "workers": workers}
    chosen = choice(Task, task, "--task")
    fps = fps or (chosen.fps if chosen else Task.t2v_1_3b.fps)
    opts = Options(fps=fps, frames=frames, caption_extension=caption_extension, **{k: v for k, v in given.items() if v is not None})
    with counting("preparing", cli.err) as start:
        report = prepare(src, dst, opts, start)
    views.prepared(cli.out, cli.err, report)
    if any(r.error for r in report.results):
        raise typer.Exit(1)


@app.command()
def download(
    preset: str = typer.Argument(..., help=f"a task's preset: {TASKS}; or the captioner's weights (`runner caption --model`): "
                                 "qwen2.5-vl-7b (also serves -8bit and -4bit) or qwen2.5-vl-3b"),
    fmt: str = typer.Option("comfy", "--format", help="official (DiT and T5 from the official repo) or comfy (ComfyUI single files)"),
    to: Path = typer.Option(None, "--to", parser=out_folder("--to"), help="models root (the job's models.root); default: models"),
    trainer: str = typer.Option(None, "--trainer", help="diffpipe or musubi (default: what both need)"),
    hf_home: Path = typer.Option(None, "--hf-home", parser=out_folder("--hf-home"), help="Hugging Face home for the tokenizers musubi reads (the job's hf_cache); default $HF_HOME"),
    host: str = typer.Option(None, "--host", "-H", help="download on this host of `runner hosts list`, into its models folder (`runner hosts add --models`), in a trainer image there"),
    dry_run: bool = typer.Option(False, "--dry-run", help="show what would be fetched and stop"),
    as_json: bool = JsonOpt('{"files": [{"repo", "revision", "filename", "size", "dest", "state"}], "bytes", "to_fetch": {"files", "bytes"}, '
                            '"result": {"fetched", "verified", "skipped"} (null with --dry-run)}'),
) -> None:
    """Fetch the model files a preset needs, verified against the hub's sizes and hashes; resumable, and a second
    run fetches nothing. Honors HF_ENDPOINT; reads the token from HF_TOKEN only. With --host the host downloads them
    itself (same hub settings, verification and resume; progress shown here)."""
    from runner.models.presets import Format
    from runner.spec import Trainer

    chosen = choice(Trainer, trainer, "--trainer")
    trainers = [chosen] if chosen else list(Trainer)
    fmt_ = choice(Format, fmt, "--format")
    if host not in (None, "local"):
        for option, given in (("--to", to), ("--hf-home", hf_home)):
            if given is not None:
                raise UserError(option, f"cannot be given with --host: the files go to host {host}'s models folder, and its jobs' "
                                "tokenizers come with the trainer image.", f"drop {option}; `runner hosts add {host} … --models DIR --replace` moves the folder.")
        rows, counts = _download_on(host, preset, fmt_, trainers, dry_run, as_json)
    else:
        rows, counts = _download_here(preset, fmt_, trainers, to or Path("models"), hf_home, dry_run, as_json)
    if as_json:
        views.emit_json(views.download_json(rows, counts))
    elif counts:
        views.downloaded(cli.out, counts)


def _download_here(preset, fmt, trainers, to: Path, hf_home: Path | None, dry_run: bool, as_json: bool):
    from runner.config import default_hf_home
    from runner.models.download import fetch, plan, summarize
    from runner.progress import transfer

    items = plan(preset, fmt, trainers, to, (hf_home or default_hf_home()) / "hub")
    rows = summarize(items, to)
    if not as_json:
        views.download_plan(cli.out, rows)
    if dry_run:
        return rows, None
    with transfer(cli.err) as progress:
        return rows, fetch(items, to, progress)


def _download_on(host: str, preset, fmt, trainers, dry_run: bool, as_json: bool):
    from runner import config
    from runner.executors import executor_for
    from runner.jobs import download_there
    from runner.models import captioner
    from runner.models.presets import get_preset

    if preset.lower() not in captioner.PRESETS:
        get_preset(preset)  # a bad preset is refused before the host is contacted
    return _download_with(download_there.on_host(executor_for(host), config.load(), trainers, cli.err), preset, fmt, trainers, dry_run, as_json)


def _download_with(fetcher, preset, fmt, trainers, dry_run: bool, as_json: bool):
    """The download on another machine, whichever runner.jobs.download_there.Fetcher reaches it."""
    from runner.jobs import download_there
    from runner.progress import transfer

    items = download_there.plan(preset, fmt, trainers, fetcher)
    rows = download_there.states(items, fetcher, cli.err)
    if not as_json:
        views.download_plan(cli.out, rows)
    if dry_run:
        return rows, None
    with transfer(cli.err) as progress:
        return rows, download_there.fetch(items, fetcher, preset, cli.err, progress)
