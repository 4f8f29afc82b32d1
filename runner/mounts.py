"""The one place where host paths meet container paths.

Inside every container the layout is fixed; only the host side changes (local machine or a remote host's
directories). Rendered trainer files use the container side only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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


HF_LOGIN_FILES = ("token", "stored_tokens")  # where huggingface_hub keeps the tokens of `hf auth login`


def hf_mounts(hf_home: Path) -> list[Mount]:
    """The Hugging Face cache, read-write (hub downloads, musubi's tokenizers), with the login token files it holds
    mounted read-only over it: a trainer can read a token but never change it."""
    table = [Mount("hf-cache", str(hf_home), str(HF_HOME), False)]
    return table + [Mount(f"hf-cache/{name}", str(hf_home / name), str(HF_HOME / name), True)
                    for name in HF_LOGIN_FILES if (hf_home / name).is_file()]
