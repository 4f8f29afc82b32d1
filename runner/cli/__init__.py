"""The command line: the app, its global options and error handling; the commands live in one module per group
(jobs, images, hosts, gpu, data). Thin: parse, call one function, print through runner.views. Every UserError exits 2
as one paragraph."""

from __future__ import annotations

import logging
import sys

from pathlib import Path

import typer
from typer.core import TyperGroup

from runner import views
from runner.cli import usage
from runner.errors import UserError

ARGV = "runner.argv"  # the command line, kept in the root context's meta for the usage errors raised below it


class _Root(TyperGroup):
    """The root command. Every click usage error below it (a missing argument, an unknown option or command, an option
    without its value) becomes a UserError (runner.cli.usage), printed like any other; --json anywhere on the
    command line prints errors as JSON."""

    def make_context(self, info_name, args, parent=None, **extra):
        global _json_errors
        argv = list(args)  # click's parser consumes the list it is given
        _json_errors = "--json" in argv
        with usage.converted(self, argv):
            ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[ARGV] = argv
        return ctx

    def invoke(self, ctx):
        with usage.converted(self, ctx.meta[ARGV]):
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Root,
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
_json_errors = False  # --json on the command line: a UserError then goes to stderr as JSON (views.user_error)


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
    global out, err
    out, err = views.console(), views.console(stderr=True)  # this invocation's streams: piped or a terminal
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


def JsonOpt(keys: str):
    """--json, with the document's keys for --help."""
    return typer.Option(False, "--json", help=f"print one JSON document on stdout instead: {keys}")


JobArg = typer.Argument(..., help="the job file (YAML); see examples/")
HostOpt = typer.Option("local", "--host", "-H", help="a host from `runner hosts list` (default: this machine)")
ClusterOpt = typer.Option(None, "--cluster", help="submit to this Slurm cluster of `runner clusters list` instead")


def VramOpt(help: str):
    from runner.spec import GiB

    return typer.Option(None, "--vram", parser=schema_option(GiB, "--vram", "give the GPU memory in GiB, a number above 0, e.g. --vram 24."), help=help)


def RamOpt(help: str):
    from runner.spec import GiB

    return typer.Option(None, "--ram", parser=schema_option(GiB, "--ram", "give the host RAM in GiB, a number above 0, e.g. --ram 64."), help=help)


def read_first(job: Path):
    """Read and validate the job file before Docker or SSH is contacted: a bad job is reported as itself, not as an
    unreachable engine or host. Returns what was read (runner.spec.JobRead), for the command to resolve."""
    from runner.spec import read_job

    return read_job(job)


def target(host: str, gpus: bool = False):
    """The machine of --host as resolving a job sees it (runner.job.resolve.Target); gpus: ask for its GPUs and RAM.
    A command that resolves a job there reads it first (read_first)."""
    from runner.jobs import launch
    from runner.executors import executor_for

    return launch.target_of(executor_for(host), gpus)


def resolved_with_gpus(job: Path | None, host: str):
    """The job (None: none) resolved on --host's machine with its GPUs and RAM, and that machine's Shell."""
    from runner.job.render import load_checked

    read = read_first(job) if job else None
    there = target(host, gpus=True)
    return (load_checked(job, there, read) if job else None), there.shell


def choice(enum: type, value: str | None, option: str):
    """An option's value as a member of `enum` (None stays None); a UserError naming the option otherwise."""
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        from runner.inputs import quote

        raise UserError(option, f"{quote(value)} is not one of {', '.join(e.value for e in enum)}.", "use one of those.") from None


def schema_option(annotation, option: str, fix: str):
    """A typer `parser` that reads an option's text through a schema type of runner.spec, so a bad value fails like a
    job field: a UserError naming the option (exit 2), never "no setting fits" later on."""
    from pydantic import TypeAdapter, ValidationError

    from runner.inputs import quote

    adapter = TypeAdapter(annotation)

    def parse(text: str):
        try:
            return adapter.validate_python(text)
        except ValidationError as e:
            problem = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise UserError(option, f"{problem} (given: {quote(text)}).", fix) from None

    parse.schema, parse.option = annotation, option  # tests/test_bad_inputs.py generates bad values from them
    return parse


def trainer_name(option: str, with_images: bool = False):
    """A typer `parser` for a trainer argument: its name, checked before any engine is contacted; with_images: or
    another image runner builds (the captioner)."""
    from enum import Enum

    from runner.spec import Trainer

    schema = Enum("Image", {**{t.name: t.value for t in Trainer}, "caption": "caption"}, type=str) if with_images else Trainer
    as_trainer = schema_option(schema, option, f"use {', '.join(e.value for e in schema)}.")

    def parse(text: str) -> str:
        return as_trainer(text).value

    parse.schema, parse.option = schema, option
    return parse


def out_folder(option: str):
    """A typer `parser` for a folder runner writes into: a path that is not a file and has no file above it."""
    from runner.spec import HostPath

    as_path = schema_option(HostPath, option, "give the path of a folder (it is made if missing).")

    def parse(text: str) -> Path:
        path = as_path(text)
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise UserError(option, f"{path} cannot be a folder: {blocker} is a file.", "give the path of a folder (it is made if missing), not of a file.")
        return path

    parse.schema, parse.option, parse.folder = HostPath, option, True
    return parse


def main() -> None:
    try:
        app()
    except UserError as e:
        views.user_error(err, e, as_json=_json_errors)
        sys.exit(e.exit_code)


# the command groups register their commands on `app`
from runner.cli import jobs, images, hosts, clusters, gpu, data, caption  # noqa: E402,F401
