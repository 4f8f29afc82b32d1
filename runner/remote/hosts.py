"""The hosts inventory: remote GPU hosts by name, in <config dir>/hosts.yaml.

A host is an SSH target (user@address[:port] or a ~/.ssh/config alias), an optional key and known_hosts
file, and four folders on the host that become the container's /models, /data, /cache and /outputs.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from runner import config, files
from runner.errors import UserError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SSH_TARGET = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<address>\[[0-9A-Fa-f:.]+\]|[^@:\s\[\]]+)(?::(?P<port>\d{1,5}))?$")
VOLUMES = ("models", "data", "cache", "outputs")


class Host(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    ssh: str  # user@address[:port], or an alias of ~/.ssh/config
    key: str | None = None
    known_hosts: str | None = None  # default: the alias's UserKnownHostsFile, else ~/.ssh/known_hosts
    models: str = "~/runner/models"
    data: str = "~/runner/data"
    cache: str = "~/runner/cache"
    outputs: str = "~/runner/outputs"

    @property
    def user(self) -> str | None:
        return _target(self.ssh)["user"]

    @property
    def address(self) -> str:
        return _target(self.ssh)["address"].strip("[]")

    @property
    def port(self) -> int | None:
        p = _target(self.ssh)["port"]
        return int(p) if p else None


def _target(ssh: str) -> dict:
    m = SSH_TARGET.match(ssh)
    if not m:
        raise UserError("--ssh", f"{ssh!r} is not an SSH target.", "write user@address, user@address:port, or a Host alias of ~/.ssh/config.")
    return m.groupdict()


def inventory_file() -> Path:
    return config.config_dir() / "hosts.yaml"


def load_all() -> dict[str, Host]:
    path = inventory_file()
    if not path.is_file():
        return {}
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return {name: Host(name=name, **fields) for name, fields in (raw.get("hosts") or {}).items()}
    except (yaml.YAMLError, ValidationError, TypeError, AttributeError) as e:
        raise UserError(str(path), f"is not a valid hosts inventory ({e}).", "fix it, or remove it and add the hosts again with `runner hosts add`.") from e


def save_all(hosts: dict[str, Host]) -> None:
    path = inventory_file()
    data = {"hosts": {n: h.model_dump(exclude={"name"}, exclude_none=True) for n, h in sorted(hosts.items())}}
    files.write_text(path, yaml.safe_dump(data, sort_keys=False))


def get(name: str) -> Host:
    hosts = load_all()
    if name not in hosts:
        known = ", ".join(sorted(hosts)) or "none yet"
        raise UserError(f"host {name!r}", f"is not in the hosts inventory ({inventory_file()}; known: {known}).",
                        f"add it: `runner hosts add {name} --ssh user@address`.")
    return hosts[name]


def add(host: Host) -> Host:
    if not NAME.match(host.name) or host.name == "local":
        raise UserError("host name", f"{host.name!r} cannot name a host.", "use letters, digits, '.', '_' or '-' (not \"local\"), e.g. gpu01.")
    _target(host.ssh)
    for v in VOLUMES:
        path = getattr(host, v)
        # docker's --volume syntax splits at ':'; a newline would end the remote command line
        if ":" in path or "\n" in path or not (path.startswith("/") or path.startswith("~/")):
            raise UserError(f"--{v}", f"{path!r} cannot be a host folder.", "give an absolute path or one starting with ~/, without ':' or newlines.")
    for opt in ("key", "known_hosts"):
        f = getattr(host, opt)
        if f is not None and not Path(f).expanduser().is_file():
            raise UserError(f"--{opt.replace('_', '-')}", f"{f} is not a file on this machine.", "give the path of an existing file.")
    hosts = load_all()
    hosts[host.name] = host
    save_all(hosts)
    return host


def remove(name: str) -> None:
    hosts = load_all()
    get(name)
    del hosts[name]
    save_all(hosts)
