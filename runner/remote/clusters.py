"""The clusters inventory: Slurm clusters by name, in <config dir>/clusters.yaml, beside the hosts inventory.

A cluster is reached through its login node, an SSH target like a host's (runner.remote.hosts), and keeps the same four
folders; on a cluster they must be on the filesystem its login and compute nodes share (home folders usually are): the
datasets and the rendered job are staged there once, and every node of a job mounts them. Jobs are submitted with
sbatch to `partition` and charged to `account` (Slurm's defaults when unset); `runtime` is how a compute node runs
the trainer's image.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from runner import config, files, inputs
from runner.errors import JobInvalid, UserError
from runner.remote.hosts import TARGET_FIX, Host, HostFields, HostName

PREFIX = "slurm:"  # job records name a cluster's runs "slurm:NAME" (a host name holds no ':')
# sbatch's --partition / --account: names of the scheduler's, one word (no option, no shell character)
SLURM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")


class Runtime(str, enum.Enum):
    docker = "docker"
    enroot = "enroot"
    apptainer = "apptainer"


def _slurm_name(name: str) -> str:
    if not SLURM_NAME.fullmatch(name):
        raise ValueError("a Slurm partition or account is letters, digits, '_', '.' or '-', not starting with '-' or '.'")
    return name


SlurmName = Annotated[str, AfterValidator(_slurm_name)]


class ClusterFields(HostFields):
    """A cluster as clusters.yaml stores it under its name: the login node's SSH settings and the shared folders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheduler: str = "slurm"
    partition: SlurmName | None = None
    account: SlurmName | None = None
    runtime: Runtime = Runtime.docker


class Cluster(ClusterFields, Host):
    """The login node as a Host (runner.remote.ssh connects to it like to any host), plus the scheduler's settings."""

    @property
    def record_host(self) -> str:
        return PREFIX + self.name


class Inventory(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clusters: dict[HostName, ClusterFields] = {}


def make(name: str, **fields) -> Cluster:
    """A cluster from `runner clusters add`'s arguments; a UserError naming the option of each bad one."""
    try:
        return Cluster(name=name, **fields)
    except ValidationError as e:
        errors = []
        for x in e.errors():
            field = str(x["loc"][0]) if x["loc"] else "name"
            option = {"name": "NAME", "ssh": "--login"}.get(field, "--" + field.replace("_", "-"))
            fix = TARGET_FIX if field == "ssh" else "give a value the message allows."
            errors.append(UserError(option, f"{x['msg'].removeprefix('Value error, ')} (given: {inputs.quote(x['input'])}).", fix))
        raise JobInvalid(errors) from None


def inventory_file() -> Path:
    return config.config_dir() / "clusters.yaml"


def load_all() -> dict[str, Cluster]:
    path = inventory_file()
    found = inputs.read_yaml(path, "clusters inventory", missing_ok=True)
    if found is None or found[0] is None:
        return {}
    fix = "fix that line, or `runner clusters remove` the cluster and add it again with `runner clusters add`"
    inventory = inputs.validate(Inventory, found[0], path, found[1], "clusters inventory", fix, fix)
    return {name: Cluster(name=name, **fields.model_dump()) for name, fields in inventory.clusters.items()}


def save_all(clusters: dict[str, Cluster]) -> None:
    data = {"clusters": {n: c.model_dump(mode="json", exclude={"name"}, exclude_none=True) for n, c in sorted(clusters.items())}}
    files.write_text(inventory_file(), yaml.safe_dump(data, sort_keys=False))


def get(name: str) -> Cluster:
    clusters = load_all()
    if name not in clusters:
        known = ", ".join(sorted(clusters)) or "none yet"
        raise UserError(f"cluster {name!r}", f"is not in the clusters inventory ({inventory_file()}; known: {known}).",
                        f"add it: `runner clusters add {name} --slurm --login user@login-node`.")
    return clusters[name]


def check_files(cluster: Cluster) -> None:
    for opt in ("key", "known_hosts"):
        f = getattr(cluster, opt)
        if f is not None and not Path(f).expanduser().is_file():
            raise UserError(f"--{opt.replace('_', '-')}", f"{f} is not a file on this machine.", "give the path of an existing file.")


def add(cluster: Cluster, replace: bool = False, check=lambda cluster: None) -> Cluster:
    """Store a cluster; one of the same name is replaced only when `replace` says so. check(cluster) runs before it
    is stored (the preflight on the cluster): nothing is stored when it raises."""
    check_files(cluster)
    clusters = load_all()
    old = clusters.get(cluster.name)
    if old is not None and old != cluster and not replace:
        raise UserError(f"cluster {cluster.name!r}", f"is already in the clusters inventory (login {old.ssh}).",
                        "add --replace to replace it, or pick another name; `runner clusters list` shows it.")
    check(cluster)
    clusters[cluster.name] = cluster
    save_all(clusters)
    return cluster


def remove(name: str) -> None:
    clusters = load_all()
    get(name)
    del clusters[name]
    save_all(clusters)
