"""The hosts inventory: remote GPU hosts by name, in <config dir>/hosts.yaml.

A host is an SSH target (user@address[:port] or a ~/.ssh/config alias), an optional key and known_hosts
file, and four folders on the host that become the container's /models, /data, /cache and /outputs.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from runner import inputs
from runner.errors import UserError
from runner.remote.inventory import Book
from runner.spec import Text

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# user@address:port with the characters ssh, a shell and ssh_config aliases agree on: no leading '-' (an option to
# ssh), no whitespace, no '$' or backquote (runner's fix messages print `ssh <target>` for the user to paste)
SSH_TARGET = re.compile(r"(?:(?P<user>[A-Za-z0-9_][A-Za-z0-9._-]*)@)?(?P<address>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_][A-Za-z0-9._-]*)"
                        r"(?::(?P<port>[0-9]{1,5}))?")
VOLUMES = ("models", "data", "cache", "outputs")
TARGET_FIX = "write user@address, user@address:port (port 1-65535), or a Host alias of ~/.ssh/config, e.g. ubuntu@10.0.0.5:2222."


def _host_name(name: str) -> str:
    if not NAME.fullmatch(name) or name == "local":
        raise ValueError('a host name is letters, digits, ".", "_" or "-" (not "local"), e.g. gpu01')
    return name


def _ssh_target(ssh: str) -> str:
    m = SSH_TARGET.fullmatch(ssh)
    if m and 1 <= int(m["port"] or 22) <= 65535:
        return ssh
    if ssh.startswith("-"):
        raise ValueError("an SSH target cannot start with '-': ssh would read it as an option")
    if re.search(r"[\s\x00-\x1f\x7f]", ssh):
        raise ValueError("an SSH target holds no whitespace or control characters (a trailing newline?)")
    if re.search(r"[$`;|&<>()'\"\\]", ssh):
        raise ValueError("an SSH target holds no shell characters ($, `, ;, |, &, quotes, parentheses)")
    if m:
        raise ValueError(f"port {int(m['port'])} is outside 1-65535")
    raise ValueError("is not [user@]address[:port] or an ssh_config alias")


def _folder(path: str) -> str:
    # docker's --volume syntax splits at ':'; a newline would end the remote command line
    if ":" in path or re.search(r"[\x00-\x1f\x7f]", path) or not (path.startswith("/") or path.startswith("~/")):
        raise ValueError("a host folder is an absolute path or one starting with ~/, without ':' or control characters")
    return path


HostName = Annotated[str, AfterValidator(_host_name)]
SshTarget = Annotated[str, AfterValidator(_ssh_target)]
Folder = Annotated[str, AfterValidator(_folder)]


class HostFields(BaseModel):
    """A host as hosts.yaml stores it under its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ssh: SshTarget  # user@address[:port], or an alias of ~/.ssh/config
    key: Text | None = None
    known_hosts: Text | None = None  # default: the alias's UserKnownHostsFile, else ~/.ssh/known_hosts
    models: Folder = "~/runner/models"
    data: Folder = "~/runner/data"
    cache: Folder = "~/runner/cache"
    outputs: Folder = "~/runner/outputs"


class Host(HostFields):
    name: HostName

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


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hosts: dict[HostName, HostFields] = {}


def _target(ssh: str) -> dict:
    m = SSH_TARGET.fullmatch(ssh)
    if not m:
        raise UserError("--ssh", f"{inputs.quote(ssh)} is not an SSH target.", TARGET_FIX)
    return m.groupdict()


BOOK = Book("host", "hosts", Host, Inventory, {}, TARGET_FIX, "runner hosts add {name} --ssh user@address", "runner hosts rm",
            lambda h: f"ssh {h.ssh}")
make, inventory_file, load_all, save_all, get, add, remove = BOOK.make, BOOK.path, BOOK.load_all, BOOK.save_all, BOOK.get, BOOK.add, BOOK.remove
