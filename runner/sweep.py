"""A sweep: one job file with a `sweep:` block of fields to vary, expanded into one job per combination of their values
(the grid of every field's list):

    sweep:
      optimizer.lr: [1e-4, 2e-4]
      lora.rank: [16, 32]

Each job is the file without its sweep, with those fields set (over the file's own value, if it has one), named
`<name>-<field><value>-…` after the last part of each field's name (`ball-1p3b-lr1e-4-rank16`; `<name>-<i>` when such
names would be too long or alike). `runner validate` and `runner render` show every job, located in the sweep file
(a value of the sweep that a field refuses is reported at its line there). `runner train` runs them as several job
files: it writes each as a plain job file into runner's state (`written`), with the file's folders made absolute, so
that each run records a job file of its own that a resume or a requeue reads again.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from runner import config, files, inputs
from runner.errors import UserError
from runner.fields import fields
from runner.spec import FIELDS_DOC, SWEEP, JobRead, parsed_job

MAX_JOBS = 1000  # Slurm's default MaxArraySize (1001) allows array task ids 0–1000
NAME_MAX = 64  # runner.spec.Job.name's pattern
_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
EXAMPLE_SWEEP = "e.g. `sweep: {optimizer.lr: [1e-4, 2e-4], lora.rank: [16, 32]}`"


@dataclass(frozen=True)
class Point:
    """One job of a sweep: its name, the values of the swept fields (none: a plain job file's one job), and the job as
    read (its lines in the sweep file)."""

    name: str
    values: dict[str, object]
    read: JobRead
    data: dict  # the job file's document for this point: the sweep's values set, no sweep block

    def describe(self) -> str:
        return f"{self.name} ({', '.join(f'{k}={_shown(v)}' for k, v in self.values.items())})"


def expand(file: Path) -> list[Point]:
    """The jobs of the sweep in `file`, each validated (JobInvalid at the sweep file's lines); for a plain job file its
    one job, with no values (the file is read once either way)."""
    data, lines = inputs.read_yaml(file, "job file")
    if not isinstance(data, dict) or SWEEP not in data:
        read = parsed_job(file, data, lines)
        return [Point(read[0].name, {}, read, data)]
    base = {k: v for k, v in data.items() if k != SWEEP}
    grid = _grid(data[SWEEP], base, file, lines)
    combos = list(itertools.product(*[[(field, i, v) for i, v in enumerate(values)] for field, (_, values) in grid.items()]))
    if len(combos) > MAX_JOBS:
        raise UserError(f"{file}:{lines.get((SWEEP,), 1)}: sweep", f"makes {len(combos)} jobs (the product of its lists' lengths), more than "
                        f"the {MAX_JOBS} a Slurm job array takes by default.", "vary fewer fields or values, or split it into several files.")
    points = []
    for combo in combos:
        point, point_lines = copy.deepcopy(base), dict(lines)
        for field, i, value in combo:
            loc = grid[field][0]
            _set(point, loc, copy.deepcopy(value))
            for key in [k for k in point_lines if k[:len(loc)] == loc]:
                del point_lines[key]
            point_lines[loc] = lines[(SWEEP, field, i)]
        points.append(Point("", {field: value for field, _, value in combo}, parsed_job(file, point, point_lines), point))
    return _named(points, str(base.get("name")), file, lines)


def _grid(sweep: object, base: dict, file: Path, lines: inputs.Lines) -> dict[str, tuple[tuple, list]]:
    """The sweep block checked: each field name → (its path in the job document, its values)."""
    at = f"{file}:{lines.get((SWEEP,), 1)}: sweep"
    if not isinstance(sweep, dict) or not sweep:
        raise UserError(at, f"is {inputs.quote(sweep)}; it should map each field to vary to a list of its values.", f"write it as a mapping, {EXAMPLE_SWEEP}.")
    known = {f.name: f for f in fields()}
    grid = {}
    for field, values in sweep.items():
        where = f"{file}:{lines.get((SWEEP, field), 1)}: sweep.{field}"
        loc = _loc(str(field), where, known, base)
        if not isinstance(values, list) or not values:
            raise UserError(where, f"is {inputs.quote(values)}; a swept field takes a list of one or more values.",
                            f"write its values as a YAML list, {EXAMPLE_SWEEP}.")
        seen = [json.dumps(v, sort_keys=True, default=str) for v in values]
        twice = next((i for i in range(len(values)) if seen[i] in seen[:i]), None)
        if twice is not None:
            raise UserError(where, f"lists the value {inputs.quote(values[twice])} twice: two jobs would be the same.", "list each value once.")
        if any(isinstance(v, dict) for v in values):
            raise UserError(where, "lists a mapping; a sweep sets single fields.", f"vary the fields inside it one by one, {EXAMPLE_SWEEP}.")
        grid[str(field)] = (loc, values)
    return grid


def _loc(field: str, where: str, known: dict, base: dict) -> tuple:
    """The path of a swept field in the job document, e.g. datasets[0].frames → ("datasets", 0, "frames")."""
    if "[]" in field:
        raise UserError(where, "names no dataset: a sweep sets one dataset's field.", f"give the dataset's index, e.g. {field.replace('[]', '[0]')}.")
    parts = [_PART.fullmatch(p) for p in field.split(".")]
    if not all(parts):
        raise UserError(where, "is not a field name (dotted, such as optimizer.lr or datasets[0].frames).", f"name a job field; {FIELDS_DOC}.")
    if field in ("name", SWEEP):
        raise UserError(where, "cannot be swept: each job of a sweep is named after the values it sets.", "vary other fields; the jobs get names of their own.")
    schema_name = re.sub(r"\[\d+\]", "[]", field)
    doc = known.get(schema_name)
    if doc is None:
        close = difflib.get_close_matches(schema_name, list(known), n=1)
        hint = f"`{close[0].replace('[]', '[0]')}`" if close else "a job field"
        raise UserError(where, "is not a job field.", f"name {hint} if you meant that; {FIELDS_DOC}.")
    if "mapping" in doc.type:
        inner = next((n for n in known if n.startswith((schema_name + ".", schema_name + "[]."))), None)
        raise UserError(where, f"is a group of fields ({doc.type}); a sweep sets single fields.",
                        f"vary a field inside it, e.g. {inner.replace('[]', '[0]')}." if inner else "vary single fields.")
    loc: list = []
    for m in parts:
        loc += [m.group(1)] + ([int(m.group(2))] if m.group(2) is not None else [])
    node: object = base  # each part's parent in the job file, which must hold it
    for i, part in enumerate(loc):
        parent = inputs.dotted(tuple(loc[:i]))
        if isinstance(part, int):
            count = len(node) if isinstance(node, list) else 0
            if part >= count:
                raise UserError(where, f"names item {part} of {parent}, and the job has {count}.",
                                f"use an index below {count}." if count else "add the item to the job first.")
            node = node[part]
        elif node is None or isinstance(node, dict):
            node = (node or {}).get(part)
        else:
            raise UserError(where, f"has no place in the job: {parent} is {inputs.quote(node)} there.", f"write {parent} in the job as a mapping of its fields, then sweep {field}.")
    return tuple(loc)


def _set(data: dict, loc: tuple, value: object) -> None:
    """Set the value at loc, making the mappings above it (checked by _loc: nothing else is there)."""
    node = data
    for part in loc[:-1]:
        if isinstance(part, str) and node.get(part) is None:
            node[part] = {}
        node = node[part]
    node[loc[-1]] = value


def _shown(value: object) -> str:
    return "_".join(map(_shown, value)) if isinstance(value, list) else json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _named(points: list[Point], name: str, file: Path, lines: inputs.Lines) -> list[Point]:
    """Each point named `<name>-<field><value>…`, or `<name>-<i>` when those names are too long or alike."""
    def label(field: str, value: object) -> str:
        return _UNSAFE.sub("_", re.sub(r"\[\d+\]", "", field).rsplit(".", 1)[-1] + _shown(value))

    names = [f"{name}-" + "-".join(label(f, v) for f, v in p.values.items()) for p in points]
    if len(set(names)) < len(names) or max(map(len, names)) > NAME_MAX:
        width = len(str(len(points)))
        names = [f"{name}-{i:0{width}d}" for i in range(1, len(points) + 1)]
        if len(names[0]) > NAME_MAX:
            raise UserError(f"{file}:{lines.get(('name',), 1)}: name", f"is too long to name the jobs of its sweep ({names[0]} has more than {NAME_MAX} characters).",
                            "shorten it.")
    return [Point(n, p.values, (p.read[0].model_copy(update={"name": n}), p.read[1]), {**p.data, "name": n}) for n, p in zip(names, points)]


def written(file: Path, points: list[Point]) -> list[Path]:
    """Each point as a plain job file in runner's state (<state>/sweeps/<file's stem>-<hash of its path>/), its
    folders absolute (as read from the sweep file's folder); a header names the sweep it came from."""
    folder = config.state_dir() / "sweeps" / f"{file.stem}-{hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:8]}"
    out = []
    for p in points:
        job, data = p.read[0], copy.deepcopy(p.data)
        data.setdefault("models", {})["root"] = str(job.models.root)
        for i, dataset in enumerate(job.datasets):
            data["datasets"][i]["path"] = str(dataset.path)
        data |= {"output": str(job.output), "cache": str(job.cache)} | ({"hf_cache": str(job.hf_cache)} if job.hf_cache else {})
        path = folder / f"{p.name}.yaml"
        folder.mkdir(parents=True, exist_ok=True)
        files.write_text(path, f"# written by runner: the job {p.describe()} of the sweep in {file.resolve()}; edit that file, not this one\n"
                         + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        out.append(path)
    return out
