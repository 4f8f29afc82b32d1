"""Usage errors, walked from the command tree: every command and group gets a missing argument or option, an unknown
option, a typo of each of its options and commands, an option without its value, a switch given a value and an extra
argument. Each must exit 2 with one `where: problem Fix: fix` paragraph that names what is wrong and the fix (the
closest name for a typo, `runner … --help`), or with --json anywhere one JSON error object, and no traceback.

Every case is refused while the command line is parsed, so nothing runs; the sandbox (tests/test_bad_inputs.py) has
no Docker engine in case one is not.
"""

from __future__ import annotations

import json

import pytest
import typer.main

from runner import cli as runner_cli
from runner.cli import usage
from runner.cli.usage import click_errors
from tests.test_bad_inputs import REQUIRED, sandbox  # noqa: F401  (sandbox: a fixture)

ROOT = typer.main.get_command(runner_cli.app)


def tree(command=ROOT, path=()):
    """(path, command) of the root, every group and every command."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from tree(sub, path + (name,))


TREE = list(tree())
LEAVES = [(path, c) for path, c in TREE if not hasattr(c, "commands")]
GROUPS = [(path, c) for path, c in TREE if hasattr(c, "commands")]


def typo(name: str) -> str:
    """A slip of the keyboard: the first letter after the dashes typed twice (--jsson, vvalidate)."""
    stem = name.lstrip("-")
    return name[: len(name) - len(stem)] + stem[0] + stem


def given(command, but=None) -> list[str]:
    """A command line part that gives every argument and required option of `command` except `but`."""
    argv = []
    for p in command.params:
        if p is not but and p.param_type_name == "argument" and (p.nargs == 1 or p.required):
            argv.append(REQUIRED[p.name])
        elif p is not but and p.required:
            argv += [p.opts[0], REQUIRED[p.name]]
    return argv


def leaf_cases(path: tuple, command) -> list[tuple[list[str], str, str]]:
    """(argv after the command's path, the `where` expected, a phrase of the fix) for every usage error of a command."""
    runner_path = " ".join(("runner", *path))
    help_ = f"`{runner_path} --help`"
    cases = [(given(command, but=p), usage.display(p), f"give it: `{usage.synopsis(runner_path, command)}`")
             for p in command.params if p.required]
    settings = command.context_settings
    if not settings.get("ignore_unknown_options"):  # `runner shell` passes unknown options to the container
        cases.append(([*given(command), "--no-such-option"], "--no-such-option", help_))
        cases += [([*given(command), typo(o)], typo(o), f"use {o}") for o in usage.options(command)]
    for p in command.params:
        if p.param_type_name == "option":
            rest = given(command, but=p)
            cases.append(([*rest, f"{p.opts[0]}=1"], p.opts[0], "alone") if p.is_flag else ([*rest, p.opts[0]], p.opts[0], f"`{p.opts[0]} "))
    if not settings.get("allow_extra_args") and not any(p.param_type_name == "argument" and p.nargs == -1 for p in command.params):
        cases.append(([*given(command), "extra-word"], runner_path, f"`{usage.synopsis(runner_path, command)}`"))
    return cases


def group_cases(path: tuple, group) -> list[tuple[list[str], str, str]]:
    runner_path = " ".join(("runner", *path))
    cases = [(["no-such-command"], "no-such-command", f"`{runner_path} --help`")]
    cases += [([typo(name)], typo(name), f"use `{runner_path} {name}`") for name in group.commands]
    cases += [([typo(o)], typo(o), f"use {o}") for o in usage.options(group)]
    if not path:  # a nested group without a command prints its help (test_help_is_unchanged)
        cases.append((["--debug"], "COMMAND", "`runner COMMAND`"))
    return cases


def refused(cli, argv: list[str], where: str, fix: str, as_json: bool, json_where: str | None = None) -> None:
    label = "runner " + " ".join(argv)
    code, out, err = cli(*argv)
    assert code == 2, f"{label}: exit {code}\n{out}{err}"
    assert "Traceback" not in out + err and "╭" not in err, f"{label}: not runner's message\n{err}"
    if as_json:
        assert out == "", f"{label}: stdout is not empty with --json\n{out}"
        document = json.loads(err)
        assert document["exit_code"] == 2 and len(document["errors"]) == 1, f"{label}: {err}"
        error = document["errors"][0]
        assert set(error) == {"where", "problem", "fix"} and "--help" in error["fix"], f"{label}: {err}"
        assert error["where"] in (where, json_where), f"{label}: names {error['where']!r}, not {where!r}\n{err}"
        return
    assert err.startswith("error: ") and err.count("\n") == 1 and " Fix: " in err, f"{label}: not one paragraph\n{err}"
    assert err.startswith(f"error: {where}: "), f"{label}: does not name {where!r} first\n{err}"
    assert fix in err.split(" Fix: ", 1)[1], f"{label}: the fix lacks {fix!r}\n{err}"
    assert "--help" in err, f"{label}: no `--help` to run\n{err}"


@pytest.mark.parametrize("path, command", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_refuses_usage_errors(cli, sandbox, path, command):
    has_json = "--json" in usage.options(command)
    passes_options_on = command.context_settings.get("ignore_unknown_options")  # `runner shell --json`: the TRAINER '--json'
    for argv, where, fix in leaf_cases(path, command):
        refused(cli, [*path, *argv], where, fix, as_json=False)
        if not passes_options_on:  # --json right after the command: one without --json refuses it first, in JSON all the same
            refused(cli, [*path, "--json", *argv], where, fix, as_json=True, json_where=None if has_json else "--json")


@pytest.mark.parametrize("path, group", GROUPS, ids=[" ".join(p) or "runner" for p, _ in GROUPS])
def test_every_group_refuses_usage_errors(cli, sandbox, path, group):
    for argv, where, fix in group_cases(path, group):
        refused(cli, [*path, *argv], where, fix, as_json=False)
        refused(cli, [*path, *argv, "--json"], where, fix, as_json=True, json_where="--json")


def test_a_typo_names_the_closest_option_only_when_one_is_close(cli, sandbox):
    code, _, err = cli("validate", "job.yaml", "--bogus")
    assert code == 2 and "use --" not in err and "its options are --host, --json, --help" in err


def test_a_word_with_control_characters_is_quoted_on_one_line(cli, sandbox):
    code, _, err = cli("validate", "job.yaml", "--x\nrm -rf /")
    assert code == 2 and err.count("\n") == 1 and "'--x\\nrm -rf /'" in err


# in-process the program's name is pytest's; `runner` in a shell
@pytest.mark.parametrize("argv, shows", [(["validate", "--help"], " validate [OPTIONS] {job}"), (["hosts", "--help"], " hosts [OPTIONS] COMMAND"),
                                         (["--help"], " [OPTIONS] COMMAND")])
def test_help_is_unchanged(cli, sandbox, argv, shows):
    code, out, err = cli(*argv)
    assert code == 0 and "Usage: " in out and shows in out and not err


@pytest.mark.parametrize("argv", [[], ["hosts"], ["dataset"]])
def test_a_group_without_a_command_prints_its_help(cli, sandbox, argv):
    code, out, err = cli(*argv)
    assert code == 2 and "Usage: " in out + err and "Commands" in out + err and "error:" not in err


def test_a_value_typer_itself_refuses_names_the_option():
    """Every option runner has parses through a schema type (a UserError of its own); one that typer converts would
    raise click's BadParameter, which names the option all the same."""
    validate = ROOT.commands["validate"]
    host = next(p for p in validate.params if p.name == "host")
    error = usage.user_error(click_errors.BadParameter("'x' is not a valid integer.", param=host), ROOT, ["validate", "job.yaml", "--host", "x"])
    assert (error.where, error.problem) == ("--host", "'x' is not a valid integer.") and "`runner validate --help`" in error.fix
