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
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from runner.remote.hosts import TARGET_FIX, Host, HostFields, HostName
from runner.remote.inventory import Book

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


BOOK = Book("cluster", "clusters", Cluster, Inventory, {"ssh": "--login"}, TARGET_FIX,
            "runner clusters add {name} --slurm --login user@login-node", "runner clusters remove", lambda c: f"login {c.ssh}")
make, inventory_file, load_all, get, check_files, add, remove = BOOK.make, BOOK.path, BOOK.load_all, BOOK.get, BOOK.check_files, BOOK.add, BOOK.remove
