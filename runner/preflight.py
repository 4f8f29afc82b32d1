"""Checks before a job starts, written once against the Shell protocol: the same code for this machine
and for remote hosts (runner.shell.LocalShell, runner.remote.ssh.RemoteShell). Each failure names its fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from runner.errors import UserError
from runner.shell import Shell

TOOLKIT_FIX = (
    "install the NVIDIA Container Toolkit (https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/"
    "latest/install-guide.html), run `sudo nvidia-ctk runtime configure --runtime=docker` and restart Docker."
)
MIN_FREE_GB = 1.0  # cache and outputs: latents and LoRA saves need at least this much


def docker_info(shell: Shell) -> dict:
    r = shell.run(["docker", "info", "--format", "{{json .}}"], timeout=30)
    if r.returncode == 127:
        raise UserError(f"host {shell.name}", "has no `docker` command.", "install Docker Engine there (https://docs.docker.com/engine/install/).")
    if not r.ok:
        raise UserError(f"host {shell.name}", f"cannot reach its Docker daemon ({(r.stderr or r.stdout).strip()[:300]}).",
                        "start it there (`sudo systemctl start docker`) and add the SSH user to the docker group (`sudo usermod -aG docker USER`).")
    return json.loads(r.stdout)


def has_gpu_runtime(info: dict, shell: Shell) -> bool:
    """Whether `--gpus` can work: the nvidia runtime is registered, or the toolkit's CLI is installed."""
    if "nvidia" in (info.get("Runtimes") or {}):
        return True
    return shell.run(["sh", "-c", "command -v nvidia-container-cli || command -v nvidia-ctk"], timeout=15).ok


def check_gpu_runtime(info: dict, shell: Shell) -> None:
    if not has_gpu_runtime(info, shell):
        raise UserError("NVIDIA Container Toolkit", f"is not installed on {shell.name}, so Docker cannot give containers a GPU "
                        "(the daemon would fail with 'could not select device driver \"\" with capabilities: [[gpu]]').", TOOLKIT_FIX)


def gpus(shell: Shell) -> list[str]:
    """'name, memory' of each GPU the driver sees."""
    r = shell.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], timeout=30)
    if not r.ok or not r.stdout.strip():
        raise UserError(f"host {shell.name}", f"shows no GPU to `nvidia-smi` ({(r.stderr or r.stdout).strip()[:200] or 'no output'}).",
                        "install the NVIDIA driver there and check `nvidia-smi`; RUNNER_GPUS=none runs without GPUs (stand-in trainers only).")
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


# The nearest existing folder of each path (paths that do not exist yet are created later), then df of it.
_DF = 'for p do while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done; df -Pk -- "$p" | tail -n 1; done'


def free_bytes(shell: Shell, paths: list[str]) -> dict[str, int]:
    r = shell.run(["sh", "-c", _DF, "sh", *paths], timeout=30)
    rows = r.stdout.strip().splitlines()
    if not r.ok or len(rows) != len(paths):
        raise UserError(f"host {shell.name}", f"could not measure free disk of {', '.join(paths)} ({r.stderr.strip()[:200]}).", "check that `df` works there.")
    return {p: int(row.split()[3]) * 1024 for p, row in zip(paths, rows)}


def check_free(shell: Shell, path: str, need: int, what: str, free: int | None = None) -> None:
    """free: the bytes free there when the caller measured them already."""
    free = free_bytes(shell, [path])[path] if free is None else free
    if free < need:
        raise UserError(f"host {shell.name}: {path}", f"has {free / 2**20:.1f} MiB free; {what} needs {need / 2**20:.1f} MiB.",
                        "free space there, or point the host at a larger disk (`runner hosts add NAME … --data/--cache/--outputs DIR`).")


def make_dirs(shell: Shell, paths: list[str]) -> None:
    if not paths:
        return
    r = shell.run(["mkdir", "-p", "--", *paths], timeout=30)
    if r.ok:
        r = shell.run(["sh", "-c", 'for p do [ -w "$p" ] || { echo "$p"; exit 1; }; done', "sh", *paths], timeout=30)
    if not r.ok:
        raise UserError(f"host {shell.name}", f"cannot create or write {(r.stderr or r.stdout).strip()[:300]}.",
                        "give the SSH user write access there, or choose other folders with `runner hosts add NAME … --models/--data/--cache/--outputs DIR`.")


def check_model_files(folder: str, root: Path, missing: dict[str, Path], where: str, fix: str) -> None:
    """Refuse a job whose model files (job field → path under root on this machine) are missing in `folder`, the
    target's models folder in the layout of models.root, as resolving the job found; where: the target, for the error."""
    if missing:
        listing = ", ".join(f"{field} {p.relative_to(root).as_posix()}" for field, p in missing.items())
        raise UserError(f"{where}: {folder}", f"lacks model files the job uses: {listing}; the trainer would stop when it opens them. "
                        "Nothing was started.", fix)
