"""`runner caption`: captions for a folder's pictures and videos, written by Qwen2.5-VL in runner's captioner image."""

from __future__ import annotations

from pathlib import Path

import typer

from runner import cli, views
from runner.cli import HostOpt, JsonOpt, app

DEFAULT_FPS = 2.0  # Qwen2.5-VL's own default for videos; --job samples at the job's training fps instead


@app.command()
def caption(
    directory: Path = typer.Argument(..., help="folder of pictures and videos; each gets <stem><caption extension> beside it"),
    host: str = HostOpt,
    model: str = typer.Option("qwen2.5-vl-7b", "--model", help="a captioner preset (qwen2.5-vl-7b, qwen2.5-vl-7b-8bit, qwen2.5-vl-7b-4bit, "
                              "qwen2.5-vl-3b; `runner download PRESET`) or a Qwen2.5-VL model folder on this machine"),
    trigger: str = typer.Option(None, "--trigger", help="a word every caption starts with (the LoRA's trigger)"),
    style: str = typer.Option("short", "--style", help="short (one sentence) or detailed (a paragraph)"),
    prompt: Path = typer.Option(None, "--prompt", help="a text file with the instruction for the captioner, instead of --style's"),
    job: Path = typer.Option(None, "--job", help="a job file: its caption extension, and videos sampled at its training fps"),
    overwrite: bool = typer.Option(False, "--overwrite", help="caption files that have one too, keeping the old caption as <caption>.runner-backup-<time>"),
    as_json: bool = JsonOpt('{"directory", "model", "written": [names], "kept": [names], "backups": [names], "failed": [names], '
                            '"unreadable": [{"name", "problem"}], "seconds_per_file", "exit_code"}'),
) -> None:
    """Write a caption for every picture and video of DIRECTORY that has none, with a vision-language model that watches
    videos as videos (Qwen2.5-VL-7B-Instruct by default), in the pinned captioner image (`runner build caption`), on this
    machine's GPU or --host's.

    A caption that is there is never replaced without --overwrite, and then the old one is kept beside it. A caption is
    written whole or not at all: run the command again after a stop and it continues with the files still without one.
    Exits with the captioner's code (1 when a file could not be read)."""
    from runner import config
    from runner.caption import run, work
    from runner.executors import executor_for

    from runner.spec import load_job

    j = load_job(job) if job else None  # before Docker or SSH is contacted, like every command that reads a job
    if style not in work.STYLES:
        from runner.errors import UserError

        raise UserError("--style", f"{style!r} is not a caption style.", f"use one of {', '.join(work.STYLES)}.")
    work.check_folder(directory)
    req = work.Request(directory, extension_of(j, directory), work.check_trigger(trigger) if trigger is not None else "", style,
                       work.read_prompt(prompt) if prompt else None, overwrite)
    choice = run.choose_model(model)
    fps = float(j.task.fps) if j else DEFAULT_FPS  # the job's training fps: 24 for ti2v-5B, else 16
    console = cli.err if as_json else cli.out
    with cli_interrupted():
        outcome, found = run.start(req, choice, fps, executor_for(host), config.load(), console)
    for media, problem in found.unreadable:
        views.line(cli.err, f"runner: {media.name} {problem}: not captioned")
    if as_json:
        views.emit_json({"directory": str(directory), "model": choice.label, "written": outcome.written, "kept": [m.name for m in found.kept] + outcome.kept,
                         "backups": outcome.backups, "failed": outcome.failed, "unreadable": [{"name": m.name, "problem": p} for m, p in found.unreadable],
                         "seconds_per_file": round(sum(outcome.seconds) / len(outcome.seconds), 3) if outcome.seconds else None,
                         "exit_code": outcome.exit_code})
    else:
        views.line(cli.out, f"{len(outcome.written)} caption(s) written, {len(found.kept) + len(outcome.kept)} kept"
                   + (f", {len(outcome.backups)} old one(s) kept as *{work.BACKUP}*" if outcome.backups else "")
                   + (f"; not captioned: {', '.join(outcome.failed)} (run again to retry)" if outcome.failed else ""))
    if outcome.exit_code:
        raise typer.Exit(outcome.exit_code)


def cli_interrupted():
    from runner.cli.jobs import _interrupted

    return _interrupted("captioning stopped, its container removed; the captions written so far stay: run the command again to continue")


def extension_of(job, directory: Path) -> str:
    """The caption extension of the job's dataset in DIRECTORY (its first dataset otherwise); .txt without a job."""
    if job is None:
        return ".txt"
    datasets = job.datasets
    same = [d for d in datasets if d.path.resolve() == directory.resolve()]
    return (same or datasets)[0].caption_extension


