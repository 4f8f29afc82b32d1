"""An inventory file of named SSH targets in the config folder: hosts.yaml (runner.remote.hosts) and clusters.yaml
(runner.remote.clusters) are read, checked, changed and written the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml
from pydantic import BaseModel, ValidationError

from runner import config, files, inputs
from runner.errors import JobInvalid, UserError


@dataclass(frozen=True)
class Book:
    kind: str  # what an entry is: "host", "cluster"
    key: str  # the file's top-level key, also its name: hosts → hosts.yaml
    entry: type  # the entry's model, with its name (Host, Cluster)
    inventory: type[BaseModel]  # the file's model: {key: {name: fields}}
    options: dict[str, str]  # an entry's field → the `add` option that sets it, where it is not --field
    target_fix: str  # how to write the SSH target, for an error about it
    add_hint: str  # `runner … add` line for a missing entry, with {name}
    remove_command: str  # `runner … rm|remove`
    target_of: Callable[[object], str]  # how an entry's SSH target is named in messages ("ssh u@h", "login u@h")

    @property
    def what(self) -> str:
        return f"{self.key} inventory"

    def path(self) -> Path:
        return config.config_dir() / f"{self.key}.yaml"

    def make(self, name: str, **fields):
        """An entry from `add`'s arguments; a UserError naming the option of each bad one."""
        try:
            return self.entry(name=name, **fields)
        except ValidationError as e:
            errors = []
            for x in e.errors():
                field = str(x["loc"][0]) if x["loc"] else "name"
                option = "NAME" if field == "name" else self.options.get(field, "--" + field.replace("_", "-"))
                fix = self.target_fix if field == "ssh" else "give a value the message allows."
                errors.append(UserError(option, f"{x['msg'].removeprefix('Value error, ')} (given: {inputs.quote(x['input'])}).", fix))
            raise JobInvalid(errors) from None

    def load_all(self) -> dict:
        path = self.path()
        found = inputs.read_yaml(path, self.what, missing_ok=True)
        if found is None or found[0] is None:
            return {}
        fix = f"fix that line, or `{self.remove_command}` the {self.kind} and add it again with `{self.remove_command.rsplit(' ', 1)[0]} add`"
        inventory = inputs.validate(self.inventory, found[0], path, found[1], self.what, fix, fix)
        return {name: self.entry(name=name, **fields.model_dump()) for name, fields in getattr(inventory, self.key).items()}

    def save_all(self, entries: dict) -> None:
        data = {self.key: {n: e.model_dump(mode="json", exclude={"name"}, exclude_none=True) for n, e in sorted(entries.items())}}
        files.write_text(self.path(), yaml.safe_dump(data, sort_keys=False))

    def get(self, name: str):
        entries = self.load_all()
        if name not in entries:
            known = ", ".join(sorted(entries)) or "none yet"
            raise UserError(f"{self.kind} {name!r}", f"is not in the {self.what} ({self.path()}; known: {known}).",
                            f"add it: `{self.add_hint.format(name=name)}`.")
        return entries[name]

    @staticmethod
    def check_files(entry) -> None:
        for opt in ("key", "known_hosts"):
            f = getattr(entry, opt)
            if f is not None and not Path(f).expanduser().is_file():
                raise UserError(f"--{opt.replace('_', '-')}", f"{f} is not a file on this machine.", "give the path of an existing file.")

    def add(self, entry, replace: bool = False, check: Callable[[object], None] = lambda entry: None):
        """Store an entry; one of the same name is replaced only when `replace` says so. check(entry) runs just before
        it is stored (a check over SSH): nothing is stored when it raises."""
        self.check_files(entry)
        entries = self.load_all()
        old = entries.get(entry.name)
        if old is not None and old != entry and not replace:
            raise UserError(f"{self.kind} {entry.name!r}", f"is already in the {self.what} ({self.target_of(old)}).",
                            f"add --replace to replace it, or pick another name; `{self.remove_command.rsplit(' ', 1)[0]} list` shows it.")
        check(entry)
        entries[entry.name] = entry
        self.save_all(entries)
        return entry

    def remove(self, name: str) -> None:
        entries = self.load_all()
        self.get(name)
        del entries[name]
        self.save_all(entries)
