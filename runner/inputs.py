"""Reading the files users write — the job, the runner config, the hosts inventory — once and defensively.

A file is read only if it is a regular file of at most MAX_BYTES, decoded as UTF-8 (the line and byte that do not
decode are named), and parsed by a YAML loader that refuses duplicate keys, recursive or numerous aliases and deep
nesting. Schema errors point at file:line and quote the bad value cut to a readable length.
"""

from __future__ import annotations

import codecs
import difflib
import os
import stat
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from runner.errors import JobInvalid, UserError

MAX_BYTES = 1 << 20  # job, config and hosts files are a few KiB; 1 MiB leaves room and bounds the parse
MAX_ALIASES = 20  # enough for `<<: *defaults` in every dataset; a "billion laughs" bomb needs far more
MAX_DEPTH = 32  # the deepest job field is 4 levels down
QUOTE_CHARS = 60

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def quote(value: object) -> str:
    """repr(value), cut so that a huge value never floods a message."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}… ({len(text)} characters)"


def _file_kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular one."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _not_regular(path: Path, what: str, kind: str) -> UserError:
    return UserError(str(path), f"is {kind}, not a regular file; runner reads a {what} only from a regular file.",
                     f"give the path of the {what} itself.")


def _blocked_by_file(path: Path, what: str) -> UserError:
    """A path one of whose folders is a file (e.g. ~/.config/runner being a file)."""
    parent = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
    return UserError(str(path), f"cannot be a {what}: {parent} is a file, not a folder.",
                     f"move the file {parent} aside (runner needs a folder there) and run the command again.")


def read_bytes(path: Path, what: str, missing_ok: bool = False) -> bytes | None:
    """The bytes of a regular file of at most MAX_BYTES; None when it does not exist and missing_ok."""
    try:
        kind = _file_kind(os.stat(path).st_mode)  # never open a FIFO or a device: opening one may block or act
        if kind:
            raise _not_regular(path, what, kind)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise UserError(str(path), f"does not exist (no {what} there).", "check the path.") from None
    except NotADirectoryError:
        raise _blocked_by_file(path, what) from None
    except OSError as e:
        raise UserError(str(path), f"cannot be read ({e.strerror}).", "check the path and its permissions.") from None
    with os.fdopen(fd, "rb") as f:
        kind = _file_kind(os.fstat(f.fileno()).st_mode)  # it may have been swapped since the stat
        if kind:
            raise _not_regular(path, what, kind)
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise UserError(str(path), f"is larger than {MAX_BYTES // (1 << 20)} MiB; a {what} is a few KiB of YAML.",
                        f"give the path of the {what} itself; this file is something else.")
    return data


def decode(data: bytes, path: Path, what: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); a UserError naming the line and byte that do not decode."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UserError(str(path), f"is UTF-16 (it starts with a UTF-16 byte-order mark); a {what} is UTF-8.",
                        f"save it as UTF-8, e.g. `iconv -f UTF-16 -t UTF-8 {path} > fixed.yaml`.")
    data = data.removeprefix(codecs.BOM_UTF8)
    nul = data.find(b"\0")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = e.start
    else:
        if nul < 0:
            return text
        bad = nul
    line = data.count(b"\n", 0, bad) + 1
    column = bad - (data.rfind(b"\n", 0, bad) + 1) + 1
    where = f"{path}:{line}"
    if nul == bad:
        raise UserError(where, f"is binary or UTF-16, not UTF-8 text: a NUL byte at line {line}, byte {column}.",
                        f"give the path of the {what} (YAML text), or save it as UTF-8.")
    raise UserError(where, f"is not UTF-8: byte 0x{data[bad]:02x} at line {line}, byte {column} does not decode "
                           "(Latin-1 or another legacy encoding?).",
                    f"save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > fixed.yaml`.")


def read_text(path: Path, what: str, missing_ok: bool = False) -> str | None:
    data = read_bytes(path, what, missing_ok)
    return None if data is None else decode(data, path, what)


class _Refused(yaml.MarkedYAMLError):
    """A document the loader refuses (duplicate key, alias bomb, nesting); problem and fix are for the user."""

    def __init__(self, mark: yaml.Mark, problem: str, fix: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, recursive aliases, more than MAX_ALIASES aliases and deep nesting,
    and reports integers too long to convert at their line."""

    def __init__(self, text: str):
        super().__init__(text)
        self.aliases, self.depth, self.open_anchors = 0, 0, set()

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(event.start_mark, f"uses more than {MAX_ALIASES} YAML aliases (*name); runner refuses "
                               "documents that expand without bound.", "write the values out, or use fewer aliases.")
            if event.anchor in self.open_anchors:
                raise _Refused(event.start_mark, f"the alias *{event.anchor} refers to the value that contains it.",
                               "remove the recursive alias.")
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused(event.start_mark, f"nests deeper than {MAX_DEPTH} levels.", "flatten the document; job fields nest 4 levels at most.")
        if anchor:
            self.open_anchors.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.discard(anchor)

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = key.start_mark.line + 1
            first = seen.setdefault((key.tag, key.value), line)
            if first != line:
                raise _Refused(key.start_mark, f"the key {quote(key.value)} is set twice, at line {first} and at line {line}; "
                                               "YAML would silently keep the last one.", "keep one of the two.")
        return node

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError as e:
            raise yaml.constructor.ConstructorError(None, None, f"cannot read the number {quote(node.value)} ({e})", node.start_mark) from None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)

Lines = dict[tuple, int]


def _key_lines(node: yaml.Node, path: tuple = ()) -> Lines:
    """Every key path of a YAML document with its 1-based line, so schema errors point at the file."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                sub = path + (key.value,)
                lines.update(_key_lines(value, sub))
                lines[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_key_lines(item, path + (i,)))
    return lines


def parse_yaml(text: str, path: Path) -> tuple[object, Lines]:
    """The document of `text` and the line of every key path; a UserError at file:line when it is not valid YAML."""
    loader = None
    try:
        loader = _Loader(text)  # its reader refuses non-printable characters at once
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Refused as e:
        raise UserError(f"{path}:{e.problem_mark.line + 1}", e.problem, e.fix) from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise UserError(f"{path}:{line}", f"holds the control character U+{e.character:04X}, which YAML does not allow in a file.",
                        "remove it (a control character pasted by accident?).") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(where, f"is not valid YAML ({getattr(e, 'problem', None) or e}).", "fix the syntax at that line.") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, (_key_lines(node) if node is not None else {})


def read_yaml(path: Path, what: str, missing_ok: bool = False) -> tuple[object, Lines] | None:
    """A YAML file read defensively (see the module docstring); None when it is missing and missing_ok."""
    text = read_text(path, what, missing_ok)
    return None if text is None else parse_yaml(text, path)


def dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_FIXES = {
    "literal_error": "use one of the values listed",
    "enum": "use one of the values listed",
    "greater_than": "use a number greater than {gt}",
    "greater_than_equal": "use a number of at least {ge}",
    "less_than": "use a number below {lt}",
    "less_than_equal": "use a number of at most {le}",
    "int_parsing": "use a whole number, e.g. 4",
    "int_type": "use a whole number, e.g. 4",
    "int_from_float": "use a whole number, e.g. 4",
    "float_parsing": "use a number, e.g. 0.0002",
    "float_type": "use a number, e.g. 0.0002",
    "string_type": "write it as text (quote it if YAML reads it as something else: '…')",
    "string_pattern_mismatch": "use the characters the field's description lists",
    "list_type": "write a YAML list, e.g. [33]",
    "tuple_type": "write a YAML list of the length the field takes",
    "too_short": "give at least one value",
    "too_long": "give as many values as the field takes",
    "dict_type": "write a YAML mapping (key: value lines)",
    "model_type": "write a YAML mapping (key: value lines)",
    "bool_type": "use true or false",
    "path_type": "write a path",
}


def _siblings(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names allowed beside the last key of loc (for "did you mean")."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return []
        annotation = info.annotation
        inner = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = inner[0] if inner else annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def schema_errors(err: ValidationError, path: Path, lines: Lines, model: type[BaseModel], fields_doc: str, example: str) -> list[UserError]:
    """Each pydantic error as a UserError at path:line, with the problem, the value given (cut) and a fix."""
    out = []
    for e in err.errors():
        loc = e["loc"]
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
        given = f" (given: {quote(e['input'])})" if e["type"] != "missing" and not isinstance(e["input"], dict) else ""
        problem = f"{e['msg'].removeprefix('Value error, ')}{given}."
        fix = f"add it; {example}" if e["type"] == "missing" else _FIXES.get(e["type"], "change it as the message says").format(**e.get("ctx", {}))
        fix += "" if e["type"] == "missing" else f"; {example}"
        if e["type"] == "extra_forbidden":
            problem = f"unknown key{given}; runner refuses keys it does not know rather than ignore them (the trainers do too)."
            close = difflib.get_close_matches(str(loc[-1]), _siblings(model, loc), n=1)
            fix = f"rename it to `{close[0]}` if you meant that, or remove it; {fields_doc}" if close else f"remove it or check its spelling; {fields_doc}"
        out.append(UserError(f"{path}:{line}: {dotted(loc) or 'top level'}", problem, fix))
    return out


M = typing.TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: object, path: Path, lines: Lines, what: str, fields_doc: str, example: str) -> M:
    """`data` (a parsed YAML document) as `model`; every problem at its path:line (JobInvalid)."""
    if data is None:
        raise UserError(str(path), f"is empty; a {what} is a YAML mapping.", example)
    if not isinstance(data, dict):
        raise UserError(str(path), f"is not a YAML mapping (it holds {type(data).__name__} {quote(data)}); a {what} is a mapping of fields.", example)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise JobInvalid(schema_errors(e, path, lines, model, fields_doc, example)) from None
