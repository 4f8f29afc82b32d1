"""Click's usage errors — a missing argument, an unknown option or command, an option without its value, a value
typer's own types refuse, an extra argument — as runner's UserError: one paragraph that names the option or argument,
says what is wrong, and gives the fix (the command line to type, the closest name for a typo, `runner … --help`).

runner.cli's root group converts every usage error raised below it with `converted`, so no command handles its own.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager

from typer.core import TyperGroup

from runner.errors import UserError
from runner.inputs import quote

try:  # typer ≥ 0.20 carries its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # older typer runs on click itself
    from click import exceptions as click_errors

SHOWN_CHARS = 200  # a message quoting the command line is cut after this many characters


@contextmanager
def converted(root: TyperGroup, argv: list[str]):
    """Re-raise a usage error as a UserError. The help that a group without a command prints stays as it is."""
    try:
        yield
    except click_errors.NoArgsIsHelpError:
        raise
    except click_errors.UsageError as e:
        raise user_error(e, root, argv) from None


def user_error(e, root: TyperGroup, argv: list[str]) -> UserError:
    """The UserError for a click UsageError raised while parsing `runner ARGV`."""
    names, command, unknown = walk(root, argv)
    if e.ctx is not None:  # the command being parsed; some parser errors do not say, and the walk finds it
        command, names = e.ctx.command, _names(e.ctx)
    path = " ".join(["runner", *names])
    help_ = f"run `{path} --help` for what each part takes"
    if isinstance(e, click_errors.MissingParameter) and e.param is not None:
        shown = display(e.param)
        return UserError(shown, f"`{path}` needs {shown}{_about(e.param)}.", f"give it: `{synopsis(path, command)}` ({help_}).")
    if isinstance(e, click_errors.NoSuchOption):
        return _no_such_option(e.option_name, path, command)
    if isinstance(e, click_errors.BadOptionUsage):
        return _bad_option_usage(e, path, command, help_)
    if isinstance(e, click_errors.BadParameter) and e.param is not None:
        return UserError(display(e.param), _printable(e.message), f"{help_}.")
    if isinstance(command, TyperGroup):
        return _no_command(path, command, unknown)  # "Missing command." or "No such command …": the walk stopped at this group
    return UserError(path, f"{_printable(e.message).rstrip('.')}.", f"the command line is `{synopsis(path, command)}`; quote a value "
                     f"that has spaces ({help_}).")


def _no_such_option(option: str, path: str, command) -> UserError:
    known = options(command)
    close = difflib.get_close_matches(option.lstrip("-"), [o.lstrip("-") for o in known], n=1)  # "--" alike in all
    fix = f"use --{close[0]}" if close else f"leave it out; its options are {', '.join(known)}"
    return UserError(_word(option), f"`{path}` has no option {_word(option)}.", f"{fix} (run `{path} --help` for what each does).")


def _bad_option_usage(e, path: str, command, help_: str) -> UserError:
    param = next((p for p in command.params if e.option_name in p.opts + p.secondary_opts), None)
    if param is None:
        return UserError(_word(e.option_name), f"{_printable(e.message).rstrip('.')}.", f"{help_}.")
    if getattr(param, "is_flag", False):
        return UserError(e.option_name, f"{e.option_name} is a switch: it takes no value.", f"write {e.option_name} alone, without =VALUE ({help_}).")
    return UserError(e.option_name, f"{e.option_name} is given without its value{_about(param)}.",
                     f"put the value right after it, e.g. `{e.option_name} {param.name.upper()}` ({help_}).")


def _no_command(path: str, group: TyperGroup, unknown: str | None) -> UserError:
    names = [name for name, sub in group.commands.items() if not sub.hidden]
    listed = f"its commands are {', '.join(names)} (run `{path} --help` for what each does)"
    if unknown is None:
        return UserError("COMMAND", f"`{path}` needs a command.", f"give one: `{path} COMMAND`; {listed}.")
    close = difflib.get_close_matches(unknown, names, n=1)
    fix = f"use `{path} {close[0]}`; {listed}" if close else listed
    return UserError(_word(unknown), f"`{path}` has no command {_word(unknown)}.", f"{fix}.")


def walk(root: TyperGroup, argv: list[str]) -> tuple[list[str], object, str | None]:
    """The command names of a command line, the command they lead to, and the word a group did not know as one of
    its commands (None when they all were). Groups take only switches, so every other word names a command."""
    names, command = [], root
    for word in (w for w in argv if not w.startswith("-")):
        if not isinstance(command, TyperGroup):
            break
        if word not in command.commands:
            return names, command, word
        names.append(word)
        command = command.commands[word]
    return names, command, None


def _names(ctx) -> list[str]:
    names = []
    while ctx.parent is not None:  # the root's name is how runner was started (runner, python -m runner…): not asked
        names.append(ctx.info_name)
        ctx = ctx.parent
    return names[::-1]


def display(param) -> str:
    """An option by its long name (--host), an argument by its name in capitals (JOB), as --help shows them."""
    return max(param.opts, key=len) if param.param_type_name == "option" else param.name.upper()


def options(command) -> list[str]:
    return [o for p in command.params if p.param_type_name == "option" for o in p.opts if o.startswith("--")] + ["--help"]


def synopsis(path: str, command) -> str:
    """The command line a command needs: its required arguments and options, then [OPTIONS]."""
    if isinstance(command, TyperGroup):
        return f"{path} COMMAND"
    parts = [path]
    for p in command.params:
        if p.param_type_name == "argument":
            name = p.name.upper() + ("..." if p.nargs == -1 else "")
            parts.append(name if p.required else f"[{name}]")
        elif p.required:
            parts.append(f"{display(p)} {p.name.upper()}")
    if any(p.param_type_name == "option" and not p.required for p in command.params):
        parts.append("[OPTIONS]")
    return " ".join(parts)


def _about(param) -> str:
    return f": {param.help}" if param.help else ""


def _word(text: str) -> str:
    """A word of the command line as typed; quoted (cut, escaped) where it is empty, long, or has spaces or control
    characters."""
    plain = text and text.isprintable() and not any(c.isspace() for c in text) and len(text) <= 60
    return text if plain else quote(text)


def _printable(text: str) -> str:
    """Click's own message, on one line and cut: it may quote whatever the command line held."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text)} characters)"
