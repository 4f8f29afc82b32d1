"""Every bad input a user can make, generated: each field of the job schema, each CLI option, each kind of bad
job/config/hosts file. For each the promise is the same: exit 2, one message that names the file:line or the option,
says what is wrong and how to fix it (" Fix: "), no traceback, nothing written or deleted, and quickly.

The job fields come from walking the pydantic model and the options from walking the click command tree, so a new
field or option is covered by the generators, or fails here by name until it has bad values (or a stated exemption).
No engine is reachable in these tests (DOCKER_HOST points at nothing): a command that contacts Docker before it
refuses the input fails here, as its message names Docker instead of the input.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
import types
import typing
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from runner import cli as runner_cli
from runner import inputs
from runner.fields import fields as documented_fields
from runner.fields import nested_model
from runner.spec import Job, read_job

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "t2v-1.3B-musubi.yaml"
TIME_LIMIT_S = 10  # per case; each takes well under a second


# --- running one case -------------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under root (not following links): kind, size and modification time."""
    out = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            st = os.lstat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


class TookTooLong(Exception):
    pass


@contextmanager
def time_limit(seconds: float):
    def expire(signum, frame):
        raise TookTooLong(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch) -> Path:
    """A working folder with a valid job (job.yaml) and a data folder; config, state and HOME inside tmp_path; no
    Docker engine reachable."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "job.yaml").write_text(EXAMPLE.read_text())
    for var, sub in (("XDG_CONFIG_HOME", "config"), ("RUNNER_STATE", "state"), ("HOME", "home")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    for var in ("RUNNER_CONFIG", "RUNNER_PINS", "RUNNER_CA_BUNDLE", "RUNNER_GPUS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def refused(sandbox: Path, capsys, monkeypatch):
    """check(argv, *names): run `runner argv` in-process and assert the promise; returns stderr."""
    root = sandbox.parent

    def check(argv: list, *names: str) -> str:
        label = "runner " + " ".join(map(repr, map(str, argv)))
        capsys.readouterr()
        before = tree(root)
        monkeypatch.setattr(sys, "argv", ["runner", *map(str, argv)])
        start = time.monotonic()
        try:
            with time_limit(TIME_LIMIT_S):
                runner_cli.main()
            code = 0
        except SystemExit as e:
            code = e.code
        except TookTooLong:
            pytest.fail(f"{label}: still running after {TIME_LIMIT_S} s (a hang)")
        elapsed = time.monotonic() - start
        out, err = capsys.readouterr()
        assert code == 2, f"{label}: exit {code}, not 2\nstdout: {out[:2000]}\nstderr: {err[:2000]}"
        assert "Traceback" not in out + err, f"{label}: a traceback\n{err}"
        assert err.lstrip().startswith("error: ") and " Fix: " in err, f"{label}: not one `where: problem Fix: fix` paragraph\n{err[:2000]}"
        for name in names:
            assert name in err, f"{label}: the message does not name {name!r}\n{err[:2000]}"
        assert len(err) < 6000, f"{label}: a {len(err)}-character message (a value echoed whole?)"
        assert tree(root) == before, f"{label}: files were written or deleted"
        assert elapsed < TIME_LIMIT_S
        return err

    return check


# --- the job schema, field by field -----------------------------------------------------------------------------


def schema_fields(model: type[BaseModel] = Job, prefix: tuple = ()):
    """(path, annotation, metadata) of every field, depth first; a list of models contributes its item 0."""
    for name, info in model.model_fields.items():
        path = prefix + (name,)
        yield path, info.annotation, info.metadata
        nested, is_list = nested_model(info.annotation)
        if nested:
            yield from schema_fields(nested, path + ((0,) if is_list else ()))


def documented(path: tuple) -> str:
    """The field as README and `runner fields` name it: datasets[].frames."""
    return inputs.dotted(path).replace("[0]", "[]")


def _constraints(metadata) -> dict:
    found = {}
    for m in metadata:
        for key in ("gt", "ge", "lt", "le", "min_length", "pattern"):
            if getattr(m, key, None) is not None:
                found[key] = getattr(m, key)
        found |= _constraints(getattr(m, "metadata", ()))
    return found


def bad_values(annotation, metadata=()) -> list:
    """Values the schema must refuse for a field of this type: the wrong type, true/false where a number belongs,
    infinities, the bounds just crossed. Empty when the type is one the generator does not know."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return bad_values(args[0], [*metadata, *args[1:]])
    if origin in (typing.Union, types.UnionType):
        return bad_values([a for a in args if a is not type(None)][0], metadata)
    c = _constraints(metadata)
    crossed = [c["gt"]] if "gt" in c else [c["ge"] - 1] if "ge" in c else []
    crossed += [c["lt"]] if "lt" in c else [c["le"] + 1] if "le" in c else []
    if annotation is bool:
        return ["maybe", 2]
    if annotation is int:
        return [True, "many", 2.5, *crossed]
    if annotation is float:
        return [True, "fast", math.inf, -math.inf, math.nan, *crossed]
    if annotation is str:
        return [["a", "list"], *(["not a name!"] if "pattern" in c else [])]
    if annotation is Path:
        return [["a", "list"], "", "a\nb"]
    if origin is typing.Literal or (isinstance(annotation, type) and issubclass(annotation, Enum)):
        return ["no-such-value", *([1] if True in args else [])]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ["not a mapping"]
    if origin is list:
        inner = ["not a mapping"] if nested_model(annotation)[0] else bad_values(args[0])[:1]
        return ["not a list", *([[]] if "min_length" in c else []), *([inner] if inner else [])]
    if origin is tuple:
        first = bad_values(args[0])[:1]
        return ["not a list", [0.5], *([first * len(args)] if first else [])]
    if origin is dict:
        keyed = [{"not a name!": "v"}] if typing.get_origin(args[0]) is typing.Annotated else []
        return ["not a mapping", {"KEY": ["a", "list"]}, *keyed]
    return []


# values a type alone does not tell: a frame count is at least 1, a caption extension starts with a dot
EXTRA_BAD = {
    "datasets[].frames": [[0], [-3]],
    "datasets[].caption_extension": ["txt", "./captions.txt", ".txt\n"],
    "datasets[].resolutions": [[0], [[832]]],
    "models.preset": ["no-such-preset"],
    "name": ["", "x" * 100_000],
    "memory": ["low"],
    "env": [{"A": "a\x00b"}],
    "gpus": [0, -1, "ALL", [], [0, 0], [-1], [1.5], [True]],
}
FIELDS = list(schema_fields())


def _set(data: dict, path: tuple, value) -> None:
    for part in path[:-1]:
        if isinstance(data, dict) and not isinstance(data.get(part), (dict, list)):
            data[part] = {}
        data = data[part]
    data[path[-1]] = value


def _key_line(text: str, path: tuple) -> int:
    """The 1-based line of the key at path in a YAML text (PyYAML's composer, not runner's reader)."""
    node = yaml.compose(text)
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.SequenceNode):
            node = node.value[part]
            line = node.start_mark.line + 1
            continue
        key, node = next((k, v) for k, v in node.value if k.value == part)
        line = key.start_mark.line + 1
    return line


def test_the_walk_sees_every_documented_field():
    assert {documented(p) for p, _, _ in FIELDS} == {f.name for f in documented_fields()}


def test_the_base_job_is_valid(sandbox):
    assert read_job(sandbox / "job.yaml")[0].name == "ball-1p3b"


@pytest.mark.parametrize("path, annotation, metadata", FIELDS, ids=[documented(p) for p, _, _ in FIELDS])
def test_every_job_field_refuses_bad_values(refused, sandbox, path, annotation, metadata):
    values = bad_values(annotation, metadata) + EXTRA_BAD.get(documented(path), [])
    assert values, f"{documented(path)}: no bad values for its type {annotation!r}; teach bad_values() this type"
    base = yaml.safe_load(EXAMPLE.read_text())
    where = inputs.dotted(path)
    for value in values:
        data = json.loads(json.dumps(base))
        _set(data, path, value)
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 20)
        (sandbox / "job.yaml").write_text(text)
        err = refused(["validate", "job.yaml"], f"job.yaml:")
        found = re.search(rf"job\.yaml:(\d+): {re.escape(where)}", err)
        assert found, f"{where} = {value!r:.80}: the message does not point at job.yaml:LINE: {where}\n{err[:1000]}"
        key_line = _key_line(text, path)
        assert key_line <= int(found[1]) <= key_line + 3, f"{where} = {value!r:.80}: line {found[1]}, the key is on line {key_line}"


# --- the issue's examples, word for word ------------------------------------------------------------------------


def _job(sandbox: Path, extra: str) -> None:
    (sandbox / "job.yaml").write_text(EXAMPLE.read_text() + extra)


@pytest.mark.parametrize("extra, names", [
    ("memory:\n  blocks_to_swap: true\n", ["job.yaml:12: memory.blocks_to_swap", "not true"]),
    ("optimizer:\n  lr: .inf\n", ["job.yaml:12: optimizer.lr", "finite"]),
    ("optimizer:\n  eps: -1.0e-8\n", ["job.yaml:12: optimizer.eps", "greater than 0"]),
    ("optimizer:\n  betas: [1.5, -0.2]\n", ["job.yaml:12: optimizer.betas[0]", "job.yaml:12: optimizer.betas[1]"]),
    ("memory: low\n", ["job.yaml:11: memory", "`memory: auto`"]),
    ("lora:\n  rank: 8\n  rank: 16\n", ["job.yaml:13", "at line 12 and at line 13", "keep one"]),
    ("datasets:\n  - path: other\n", ["job.yaml:11", "at line 8 and at line 11"]),
])
def test_issue_examples_in_the_job(refused, sandbox, extra, names):
    _job(sandbox, extra)
    refused(["validate", "job.yaml"], *names)


def test_frames_zero_hints_at_4k_plus_1(refused, sandbox):
    (sandbox / "job.yaml").write_text(EXAMPLE.read_text().replace("frames: [33]", "frames: [0]"))
    err = refused(["validate", "job.yaml"], "job.yaml:10: datasets[0].frames[0]", "4k+1", "33")
    assert "-3" not in err


@pytest.mark.parametrize("preset, names", [
    ("t2v-14B", ["job.yaml:7: models.preset", "is for task t2v-14B", "use preset t2v-1.3B"]),
    ("bogus", ["job.yaml:7: models.preset", "not a `runner download` preset"]),
])
def test_presets_are_named_at_their_line(refused, sandbox, preset, names):
    (sandbox / "job.yaml").write_text(EXAMPLE.read_text().replace("preset: t2v-1.3B", f"preset: {preset}"))
    refused(["validate", "job.yaml"], *names)


def test_a_huge_value_is_quoted_cut(refused, sandbox):
    (sandbox / "job.yaml").write_text(EXAMPLE.read_text().replace("name: ball-1p3b", "name: " + "x" * 900_000))
    err = refused(["validate", "job.yaml"], "job.yaml:2: name", "characters)")
    assert len(err) < 1000


@pytest.mark.parametrize("command", [["train"], ["train", "--host", "gpu01"], ["validate"], ["render", "--out", "out"], ["plan"], ["env"], ["doctor"]])
@pytest.mark.parametrize("extra, names", [("  bad: [\n", ["job.yaml:11", "not valid YAML"]), ("bogus: 1\n", ["job.yaml:11: bogus", "unknown key"])])
def test_the_job_is_read_before_docker_or_ssh(refused, sandbox, command, extra, names):
    (sandbox.parent / "config" / "runner").mkdir()
    (sandbox.parent / "config" / "runner" / "hosts.yaml").write_text("hosts:\n  gpu01:\n    ssh: nobody@192.0.2.1\n")  # TEST-NET: unroutable
    _job(sandbox, extra)
    err = refused([command[0], "job.yaml", *command[1:]], *names)
    assert "Docker" not in err and "SSH" not in err


# --- job, config and hosts files: every kind of bad file --------------------------------------------------------


VALID = {
    "job": EXAMPLE.read_text().replace("name: ball-1p3b", 'name: "ball-1p3b"'),
    "config": 'shm_size: "16g"\nulimits:\n  memlock: -1\n',
    "hosts": 'hosts:\n  gpu01:\n    ssh: "ubuntu@10.0.0.5"\n',
}


def _first_key(text: str) -> str:
    return next(line for line in text.splitlines() if line and not line.startswith("#")).split(":")[0]


def _cut_in_quotes(text: str) -> str:
    return text[: text.index('"') + 3]


KINDS = {
    # kind: (make the file at path from the valid text, what the message names besides the file)
    "empty": (lambda p, t: p.write_bytes(b""), ["empty"]),
    "truncated": (lambda p, t: p.write_text(_cut_in_quotes(t)), ["not valid YAML"]),
    "binary": (lambda p, t: p.write_bytes(bytes(range(256)) * 8), ["UTF-8"]),
    "latin-1": (lambda p, t: p.write_bytes((t + "# café\n").encode("latin-1")), ["not UTF-8", "0xe9", "Latin-1"]),
    "utf-16": (lambda p, t: p.write_text(t, encoding="utf-16"), ["UTF-16"]),
    "huge": (lambda p, t: p.write_text(t + "#" + "x" * (2 << 20) + "\n"), ["1 MiB"]),
    "fifo": (lambda p, t: os.mkfifo(p), ["FIFO"]),
    "folder": (lambda p, t: p.mkdir(), ["folder"]),
    "device": (lambda p, t: p.symlink_to("/dev/zero"), ["character device"]),
    "alias bomb": (lambda p, t: p.write_text(t + "bomb: &a [x, x]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i - 1}'}, *{'a' if i == 0 else f'b{i - 1}'}]\n" for i in range(40))), ["aliases"]),
    "recursive alias": (lambda p, t: p.write_text(t + "loop: &l [*l]\n"), ["refers to the value that contains it"]),
    "deep": (lambda p, t: p.write_text(t + "deep: " + "[" * 5000 + "]" * 5000 + "\n"), ["nests deeper"]),
    "duplicate key": (lambda p, t: p.write_text(t + _first_key(t) + ": again\n"), ["set twice"]),
    "long number": (lambda p, t: p.write_text(t + "n: 1" + "0" * 5000 + "\n"), ["cannot read the number", "characters)"]),
    "control character": (lambda p, t: p.write_text(t + "bell: \x07\n"), ["U+0007"]),
    "not a mapping": (lambda p, t: p.write_text("- just\n- a list\n"), ["not a YAML mapping"]),
}
# an empty config or hosts file means no settings / no hosts: valid
APPLIES = {"job": set(KINDS), "config": set(KINDS) - {"empty"}, "hosts": set(KINDS) - {"empty"}}


def _place(kind_of_file: str, sandbox: Path, monkeypatch) -> tuple[Path, list]:
    """Where the file goes and the command that reads it (a bad one is refused before anything else)."""
    config = sandbox.parent / "config" / "runner"
    if kind_of_file == "job":
        return sandbox / "bad.yaml", ["validate", "bad.yaml"]
    if kind_of_file == "config":
        monkeypatch.setenv("RUNNER_CONFIG", str(sandbox / "config.yaml"))
        return sandbox / "config.yaml", ["build", "musubi"]
    config.mkdir()
    return config / "hosts.yaml", ["hosts", "list"]


@pytest.mark.parametrize("kind_of_file", list(APPLIES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_bad_file(refused, sandbox, monkeypatch, kind_of_file, kind):
    if kind not in APPLIES[kind_of_file]:
        pytest.skip(f"an {kind} {kind_of_file} file is valid: no settings, no hosts")
    path, argv = _place(kind_of_file, sandbox, monkeypatch)
    make, names = KINDS[kind]
    make(path, VALID[kind_of_file])
    refused(argv, path.name, *names)


def test_duplicate_keys_name_both_lines(refused, sandbox):
    (sandbox / "job.yaml").write_text(EXAMPLE.read_text() + "name: again\n")
    refused(["validate", "job.yaml"], "job.yaml:11", "at line 2 and at line 11")


@pytest.mark.parametrize("argv", [["build", "musubi"], ["hosts", "list"], ["hosts", "add", "gpu01", "--ssh", "u@h"]])
def test_config_folder_that_is_a_file(refused, sandbox, argv):
    (sandbox.parent / "config" / "runner").write_text("not a folder\n")
    refused(argv, str(sandbox.parent / "config" / "runner"), "is a file, not a folder")


@pytest.mark.parametrize("command", [["train"], ["render", "--out", "out"], ["plan"], ["env"], ["doctor"], ["dataset", "check", "data", "--job"]])
def test_every_command_reads_the_job_through_the_reader(refused, sandbox, command):
    os.mkfifo(sandbox / "fifo.yaml")
    argv = [*command, "fifo.yaml"] if command[-1] == "--job" else [command[0], "fifo.yaml", *command[1:]]
    refused(argv, "fifo.yaml", "FIFO")


# --- CLI options, walked from the command tree -------------------------------------------------------------------


def commands(command=None, path=()):
    command = command or typer.main.get_command(runner_cli.app)
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from commands(sub, path + (name,))
    else:
        yield path, command


FLAG = "a flag: on or off, nothing to get wrong"
# placeholders that let a command reach the option under test
REQUIRED = {"job": "job.yaml", "out_dir": "out", "dst": "clips", "directory": "data", "src": "data", "trainer": "musubi",
            "preset": "t2v-1.3B", "name": "gpu01", "ssh": "u@h", "login": "u@h"}
NOT_A_HOST = (["nosuch"], "nosuch")
# options that are not parsed through a schema type: bad values and what the message must name
CASES = {
    "host": NOT_A_HOST,
    ("validate", "job"): (["data"], "folder"), ("render", "job"): (["data"], "folder"), ("train", "job"): (["data"], "folder"), ("resume", "job"): (["data"], "folder"),
    ("plan", "job"): (["data"], "folder"), ("env", "job"): (["data"], "folder"), ("doctor", "job"): (["data"], "folder"),
    ("sample", "job"): (["data"], "folder"),
    ("dataset check", "job"): (["data"], "folder"),
    ("logs", "job"): (["nosuch"], "nosuch"), ("stop", "job"): (["nosuch"], "nosuch"), ("pull", "job"): (["nosuch"], "nosuch"),
    ("board", "jobs"): (["nosuch"], "nosuch"),
    ("hosts add", "name"): (["not a name!", "local"], "NAME"),
    ("hosts add", "ssh"): (["-oProxyCommand=id", "$(id)@host", "u@h:0", "u@h:99999", "host\n", "u@h`id`"], "--ssh"),
    ("hosts add", "key"): (["no-such-key"], "--key"), ("hosts add", "known_hosts"): (["no-such-file"], "--known-hosts"),
    **{("hosts add", v): (["relative", "/a:b", "/a\nb"], f"--{v}") for v in ("models", "data", "cache", "outputs")},
    ("hosts rm", "name"): (["nosuch"], "nosuch"),
    "cluster": (["nosuch"], "nosuch"),
    ("clusters add", "name"): (["not a name!", "local"], "NAME"),
    ("clusters add", "login"): (["-oProxyCommand=id", "$(id)@host", "u@h:0", "u@h:99999", "host\n", "u@h`id`"], "--login"),
    ("clusters add", "partition"): (["-x", "a b", "$(id)", ""], "--partition"), ("clusters add", "account"): (["-x", "a;b"], "--account"),
    ("clusters add", "runtime"): (["podman"], "--runtime"),
    ("clusters add", "key"): (["no-such-key"], "--key"), ("clusters add", "known_hosts"): (["no-such-file"], "--known-hosts"),
    **{("clusters add", v): (["relative", "/a:b", "/a\nb"], f"--{v}") for v in ("models", "data", "cache", "outputs")},
    ("clusters remove", "name"): (["nosuch"], "nosuch"),
    ("download", "preset"): (["bogus"], "bogus"), ("download", "fmt"): (["bogus"], "--format"), ("download", "trainer"): (["bogus"], "--trainer"),
    ("selftest", "trainer"): (["bogus"], "--trainer"), ("selftest", "fmt"): (["bogus"], "--format"),
    ("selftest", "task"): (["bogus", "t2v-14B"], "--task"), ("dataset prepare", "task"): (["bogus"], "--task"),
    ("dataset check", "directory"): (["no-such-folder"], "no-such-folder"),
    ("dataset check", "task"): (["bogus"], "--task"), ("dataset check", "trainer"): (["bogus"], "--trainer"),
    ("dataset prepare", "src"): (["no-such-folder"], "no-such-folder"),
    ("plan", "caption"): (["bogus"], "--caption"),
    ("caption", "directory"): (["no-such-folder"], "no-such-folder"), ("caption", "model"): (["bogus"], "--model"),
    ("caption", "trigger"): (["", "two\nlines"], "--trigger"), ("caption", "style"): (["bogus"], "--style"),
    ("caption", "prompt"): (["no-such-file"], "no-such-file"), ("caption", "job"): (["data"], "folder"),
    ("build", "variant"): (["bogus"], "bogus"), ("build", "pins"): (["data"], "folder"),
}
# values a schema type alone does not tell (validators), as a command line gives them
EXTRA_CLI = {"--caption-extension": ["txt", "./captions.txt", ""], "--frames": ["0", "-3"], "--min-frames": ["0"],
             "--prompt": ["", "a ball --w 64", "a\nb"], "--epochs": ["", "0", "2,,4"]}
EXEMPT = {
    "as_json": FLAG, "slurm": FLAG, "detach": FLAG, "follow": FLAG, "resume": FLAG, "fresh": FLAG, "dry_run": FLAG, "replace": FLAG, "every": FLAG, "overwrite": FLAG,
}


def options():
    for path, command in commands():
        for param in command.params:
            yield " ".join(path), command, param


OPTIONS = list(options())


def _cli_text(value) -> str | None:
    """A generated bad value as a command line gives it; None for values a command line cannot give (lists)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def _argv(name: str, command, param, value: str) -> list[str]:
    argv = name.split()
    for p in command.params:
        given = value if p is param else REQUIRED.get(p.name) if p.required else None
        if given is None:
            continue
        if p.param_type_name == "argument":
            argv.append(given)
        else:
            argv += [p.opts[0], given]
    return argv


@pytest.mark.parametrize("name, command, param", OPTIONS, ids=[f"{n} {p.opts[0] if p.param_type_name == 'option' else p.name.upper()}" for n, _, p in OPTIONS])
def test_every_cli_option_refuses_bad_values(refused, sandbox, name, command, param):
    if param.name in EXEMPT:
        pytest.skip(EXEMPT[param.name])
    (sandbox / "a-file").write_text("")
    parser = param.type_descriptor.parameter_info.parser
    if getattr(parser, "schema", None) is not None:
        values = [t for t in map(_cli_text, bad_values(parser.schema)) if t is not None]
        values += ["a-file"] if getattr(parser, "folder", False) else []
        values += EXTRA_CLI.get(parser.option, [])
        names = (parser.option,)
    else:
        case = CASES.get((name, param.name)) or CASES.get(param.name)
        assert case, f"runner {name} {param.opts[0]}: no bad values; add them to CASES (or a reason to EXEMPT)"
        values, names = case[0], (case[1],)
    assert values, f"runner {name} {param.opts[0]}: its schema type gives no bad value a command line can hold"
    for value in values:
        refused(_argv(name, command, param, value), *names)


def test_a_bad_option_with_json_is_one_json_error(sandbox, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["runner", "plan", "job.yaml", "--vram", "-5", "--json"])
    with pytest.raises(SystemExit) as exit_:
        runner_cli.main()
    assert exit_.value.code == 2
    assert json.loads(capsys.readouterr().err)["errors"][0]["where"] == "--vram"


def _succeeds(monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["runner", *argv])
    with pytest.raises(SystemExit) as exit_:
        runner_cli.main()
    assert exit_.value.code == 0


def test_a_duplicate_host_is_refused_unless_replaced(refused, sandbox, monkeypatch):
    hosts_file = sandbox.parent / "config" / "runner" / "hosts.yaml"
    _succeeds(monkeypatch, "hosts", "add", "gpu01", "--ssh", "ubuntu@10.0.0.5")
    first = hosts_file.read_text()
    refused(["hosts", "add", "gpu01", "--ssh", "ubuntu@10.0.0.6"], "host 'gpu01'", "already in the hosts inventory", "--replace")
    assert hosts_file.read_text() == first
    _succeeds(monkeypatch, "hosts", "add", "gpu01", "--ssh", "ubuntu@10.0.0.6", "--replace")
    assert "ubuntu@10.0.0.6" in hosts_file.read_text() and "10.0.0.5" not in hosts_file.read_text()
