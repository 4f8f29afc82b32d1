"""Preflight checks of a host, written against Shell so a remote host gets the same checks over SSH.

Each check passes or fails with a fix. Required checks (Docker, the NVIDIA Container Toolkit, GPUs, the
driver for the image) make `runner doctor` exit 1 when they fail: the environment is not ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner import preflight
from runner.errors import UserError
from runner.gpu import variant
from runner.gpu.inventory import Inventory, gather, host_ram_gib
from runner.shell import Shell

GIB = 2**30
MIN_FREE_DISK_GIB = 20  # one 14B DiT (28 GB bf16) does not fit under this; caches and LoRAs do
MIN_SHM_GIB = 1  # Docker's default 64 MiB kills DeepSpeed's workers (exit -7)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def check_docker(shell: Shell) -> tuple[Check, dict]:
    """The Docker check, and the daemon's info for the checks that need it ({} when it is unreachable)."""
    try:
        info = preflight.docker_info(shell)
    except UserError as e:
        return Check("docker", False, f"{e.where} {e.problem}", e.fix), {}
    return Check("docker", True, f"Docker Engine {info.get('ServerVersion', '?')}"), info


def check_container_toolkit(shell: Shell, info: dict) -> Check:
    try:
        preflight.check_gpu_runtime(info, shell)
    except UserError as e:
        return Check("nvidia-container-toolkit", False, f"{e.where} {e.problem}", e.fix)
    return Check("nvidia-container-toolkit", True, "Docker can give containers GPUs (nvidia runtime or toolkit CLI present)")


def check_gpus(inv: Inventory) -> Check:
    if not inv.gpus:
        return Check("gpus", False, inv.problem or f"no NVIDIA GPU/driver visible on {inv.host}",
                     "run on a host with an NVIDIA GPU and its driver (nvidia-smi must work), or use a remote host")
    names = ", ".join(f"{g.index}: {g.name} {g.memory_gib:.0f} GiB sm_{g.sm}" for g in inv.gpus)
    return Check("gpus", True, f"{inv.count} GPU(s): {names}; driver {inv.driver_version}, CUDA {inv.cuda_version}")


def check_driver(inv: Inventory, trainer: str) -> Check:
    if not inv.gpus:
        return Check(f"driver-{trainer}", False, "skipped: no GPU, so no driver to check", required=False)
    try:
        v = variant.choose(trainer, inv)
    except UserError as e:
        return Check(f"driver-{trainer}", False, f"{e.where} {e.problem}", e.fix)
    return Check(f"driver-{trainer}", True, f"{trainer} image {v.tag}: {v.reason}; driver {inv.driver_version} is new enough")


def _free_gib(shell: Shell, path: str) -> float | None:
    """Free space of the disk `path` is (or will be) on; None when it cannot be read."""
    try:
        return preflight.free_bytes(shell, [path])[path] / GIB
    except UserError:
        return None


def check_disk(shell: Shell, label: str, path: Path) -> Check:
    free = _free_gib(shell, str(path))
    if free is None:
        return Check(f"disk {label}", False, f"cannot read free space of {path}", "check that the path exists", required=False)
    ok = free >= MIN_FREE_DISK_GIB
    return Check(f"disk {label}", ok, f"{free:.0f} GiB free at {path}",
                 "" if ok else f"free space or point {label} at a disk with at least {MIN_FREE_DISK_GIB} GiB free")


def check_ram(shell: Shell, need_gib: float | None) -> Check:
    ram = host_ram_gib(shell)
    if ram is None:
        return Check("ram", False, "cannot read /proc/meminfo", "", required=False)
    if need_gib is None:
        return Check("ram", True, f"{ram:.0f} GiB host RAM (block swap keeps swapped blocks and the loaded DiT there)", required=False)
    ok = ram >= need_gib
    return Check("ram", ok, f"{ram:.0f} GiB host RAM; the plan needs about {need_gib:.0f} GiB",
                 "" if ok else "add RAM, or swap fewer blocks / skip activation offload (see `runner plan`)", required=False)


def check_shm(shell: Shell) -> Check:
    free = _free_gib(shell, "/dev/shm")
    if free is None:
        return Check("/dev/shm", False, "no /dev/shm", "mount a tmpfs at /dev/shm", required=False)
    ok = free >= MIN_SHM_GIB
    return Check("/dev/shm", ok, f"{free:.1f} GiB free in the host's /dev/shm (for trainers run outside runner's containers, "
                 "which get their own of `shm_size`)",
                 "" if ok else "enlarge it: `sudo mount -o remount,size=8G /dev/shm`", required=False)


def run_checks(shell: Shell, trainers: tuple[str, ...] = ("musubi", "diffpipe"), volumes: dict[str, Path] | None = None,
               ram_need_gib: float | None = None) -> list[Check]:
    inv = gather(shell)
    docker_check, info = check_docker(shell)
    checks = [docker_check, check_container_toolkit(shell, info), check_gpus(inv)]
    checks += [check_driver(inv, t) for t in trainers]
    checks += [check_disk(shell, label, path) for label, path in (volumes or {"current directory": Path.cwd()}).items()]
    checks += [check_ram(shell, ram_need_gib), check_shm(shell)]
    return checks


def ready(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


def doctor_for_job(resolved, shell: Shell) -> list[Check]:
    """`runner doctor [JOB]`: the checks for a resolved job's trainer, volumes and planned RAM (runner.job.resolve
    makes its memory plan for the target's GPUs), or, without a job (None), for both trainers."""
    if resolved is None:
        return run_checks(shell)
    job = resolved.job
    volumes = {"models": job.models.root, "output": job.output, "cache": job.cache}
    ram_need = None
    if resolved.memory_plan is not None:
        from runner.gpu.planner import HOST_RESERVE_GIB

        ram_need = resolved.memory_plan.host_gib + HOST_RESERVE_GIB
    return run_checks(shell, (job.trainer.value,), volumes, ram_need)
