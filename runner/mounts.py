"""The one place where host paths meet container paths.

Inside every container the layout is fixed; only the host side changes (local machine or a remote host's
directories). Rendered trainer files use the container side only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner.config import default_hf_home
from runner.errors import UserError
from runner.spec import Job

MODELS = PurePosixPath("/models")
DATA = PurePosixPath("/data")
CACHE = PurePosixPath("/cache")
OUTPUTS = PurePosixPath("/outputs")
HF_HOME = PurePosixPath("/hf-cache")
JOB = PurePosixPath("/job")


@dataclass(frozen=True)
class Mount:
    volume: str  # logical name: models, data/0, cache, outputs, hf-cache, job
    host: str
    container: str
    read_only: bool


def dataset_dir(index: int, host_path: Path) -> PurePosixPath:
    """Container path of the index-th dataset: /data/<index>-<folder name, made shell- and TOML-safe>."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", host_path.name).strip("_") or "data"
    return DATA / f"{index}-{safe}"


def job_output_dir(job_name: str) -> PurePosixPath:
    return OUTPUTS / job_name


def job_cache_dir(job_name: str) -> PurePosixPath:
    return CACHE / job_name


def model_path(models_root: Path, host_file: Path) -> PurePosixPath:
    """Container path of a model file or folder, which must lie under the models root."""
    return MODELS / host_file.relative_to(models_root).as_posix()


def to_host(container_path: PurePosixPath, table: list[Mount]) -> Path:
    """The host path behind a container path, through the mount that holds it (the deepest one)."""
    best = max((m for m in table if container_path.is_relative_to(m.container)), key=lambda m: len(m.container), default=None)
    if best is None:
        raise ValueError(f"{container_path} is not under any mount")
    return Path(best.host) / container_path.relative_to(best.container)


def folder_mounts(job: Job) -> list[Mount]:
    """Host → container for the job's own folders on this machine: models, each dataset, cache, outputs, HF cache."""
    m = [Mount("models", str(job.models.root), str(MODELS), True)]
    # diffusion-pipe writes its cache into the dataset folder, so data is mounted read-write
    m += [Mount(f"data/{i}", str(d.path), str(dataset_dir(i, d.path)), False) for i, d in enumerate(job.datasets)]
    m += [
        Mount("cache", str(job.cache), str(CACHE), False),
        Mount("outputs", str(job.output), str(OUTPUTS), False),
        *hf_mounts(job.hf_cache or default_hf_home()),
    ]
    return m


def job_mounts(job: Job, job_dir: Path) -> list[Mount]:
    """Host → container for this job on this machine (the rendered job in job_dir); remote executors swap the
    host side per volume."""
    return folder_mounts(job) + [Mount("job", str(job_dir), str(JOB), True)]


def docker_volumes(table: list[Mount]) -> list[str]:
    """The mounts as Docker's `host:container:mode` binds, every one of them: a host folder may be bound twice
    with one mode (two datasets on one folder), never with two, and no container path twice."""
    for i, a in enumerate(table):
        for b in table[:i]:
            if a.container == b.container:
                raise UserError(f"mount {a.volume}", f"{a.container} is also the container path of {b.volume}; one would hide the other.",
                                "give each volume its own container path.")
            if a.host == b.host and a.read_only != b.read_only:
                raise UserError(f"mount {a.volume}", f"{a.host} is also mounted as {b.volume}, one read-only and one read-write, "
                                "so the container could write into the read-only one.", f"give {a.volume} and {b.volume} separate folders.")
    return [f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}" for m in table]


# folders no job may mount read-write: the system's, or all of the user's files at once
SYSTEM_FOLDERS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/sbin", "/sys", "/usr", "/var")
# nothing inside these is a user's folder either (inside / and /var, and the home folder, it can be)
SYSTEM_TREES = tuple(f for f in SYSTEM_FOLDERS if f not in ("/", "/var"))


def system_folder(folder: Path) -> str | None:
    """What makes `folder` (symlinks resolved) a folder no job may mount read-write: "the system folder /etc",
    "inside the system folder /usr", "your home folder itself"; None for any other folder."""
    real = Path(os.path.realpath(folder))
    if str(real) in SYSTEM_FOLDERS:
        return f"the system folder {real}"
    if real == Path(os.path.realpath(Path.home())):
        return "your home folder itself"
    tree = next((t for t in SYSTEM_TREES if real.is_relative_to(t)), None)
    return f"inside the system folder {tree}" if tree else None


# what each read-write volume holds, to say what two of them sharing a folder would mix
HOLDS = {"data": "training data", "cache": "latent and text caches", "outputs": "LoRAs and checkpoints", "hf-cache": "Hugging Face files"}


@dataclass(frozen=True)
class Overlap:
    inner: Mount  # the folder inside the other; of one folder mounted twice, the read-only one, else a
    outer: Mount
    why: str  # what would go wrong

    @property
    def same_folder(self) -> bool:
        return self.inner.host == self.outer.host


def overlap(a: Mount, b: Mount) -> Overlap | None:
    """How a and b (host sides with symlinks resolved) overlap in a way that lets a container write where it
    must not, or None.

    Refused: a read-only folder equal to or inside a read-write one (the container could change the files it
    mounts read-only), and two read-write volumes of different kinds on one folder or one inside the other
    (each one's files land among the other's: outputs in the training data, caches in the outputs). Allowed:
    folders side by side, a read-write folder inside a read-only one (it can only change itself), and
    datasets sharing or nesting folders (each is mounted on its own; trainers read no sub-folders)."""
    pa, pb = Path(a.host), Path(b.host)
    if a.volume.split("/")[0] == b.volume.split("/")[0] == "hf-cache":  # login files read-only over their own cache
        return None
    if not (pa.is_relative_to(pb) or pb.is_relative_to(pa)) or a.volume.startswith("data/") and b.volume.startswith("data/"):
        return None
    inner, outer = (a, b) if (pa != pb and pa.is_relative_to(pb)) or (pa == pb and not b.read_only) else (b, a)
    if inner.read_only and not outer.read_only:
        return Overlap(inner, outer, f"that is mounted read-write at {outer.container}, so the trainer could change the "
                                     f"files mounted read-only at {inner.container}")
    if inner.read_only or outer.read_only:
        return None
    held = [HOLDS[m.volume.split("/")[0]] for m in (inner, outer)]
    return Overlap(inner, outer, f"both are mounted read-write ({inner.container}, {outer.container}), so the {held[0]} "
                                 f"and the {held[1]} would share one folder, and runs, syncs and pulls would take one for the other")


HF_LOGIN_FILES = ("token", "stored_tokens")  # where huggingface_hub keeps the tokens of `hf auth login`


def hf_mounts(hf_home: Path) -> list[Mount]:
    """The Hugging Face cache, read-write (hub downloads, musubi's tokenizers), with the login token files it holds
    mounted read-only over it: a trainer can read a token but never change it."""
    table = [Mount("hf-cache", str(hf_home), str(HF_HOME), False)]
    return table + [Mount(f"hf-cache/{name}", str(hf_home / name), str(HF_HOME / name), True)
                    for name in HF_LOGIN_FILES if (hf_home / name).is_file()]
