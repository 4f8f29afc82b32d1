"""Which image variant (CUDA version) a host gets, from its GPUs' compute capability and its driver.

musubi has a CUDA 12.4 image and a CUDA 12.8 one; Blackwell (sm_100, sm_120) needs 12.8, whose PyTorch
builds are the first with Blackwell kernels. diffusion-pipe's image is CUDA 12.8 only (torch 2.9 + cu128, as
its README recommends). A driver older than the minimum NVIDIA lists for the image's toolkit is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.errors import UserError
from runner.gpu.inventory import Inventory

# NVIDIA CUDA Toolkit release notes, "CUDA Toolkit and Corresponding Driver Versions" (Linux x86_64). The
# images are built on nvidia/cuda 12.4.1 and 12.8.1 (Update 1 of each), whose minimums are these.
MIN_DRIVER = {"12.4": "550.54.15", "12.8": "570.124.06"}


@dataclass(frozen=True)
class Variant:
    trainer: str
    cuda: str
    reason: str

    @property
    def tag(self) -> str:
        return f"cu{self.cuda.replace('.', '')}"

    @property
    def pins_table(self) -> str:
        """The variant's name in images/pins.toml: musubi on CUDA 12.8 is [musubi-blackwell]."""
        return "blackwell" if self.trainer == "musubi" and self.cuda == "12.8" else "default"


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def choose(trainer: str, inventory: Inventory) -> Variant:
    if not inventory.gpus:
        raise UserError(inventory.host, inventory.problem or "no NVIDIA GPU found.",
                        "install the NVIDIA driver (nvidia-smi must work) or pick a host with an NVIDIA GPU")
    blackwell = [g for g in inventory.gpus if g.is_blackwell]
    if trainer == "diffpipe":
        variant = Variant(trainer, "12.8", "diffusion-pipe's image is built on CUDA 12.8")
    elif blackwell:
        variant = Variant(trainer, "12.8", f"{blackwell[0].name} is Blackwell (sm_{blackwell[0].sm}): needs CUDA 12.8 builds")
    else:
        variant = Variant(trainer, "12.4", f"{inventory.gpus[0].name} (sm_{inventory.gpus[0].sm}) runs the CUDA 12.4 image")
    need = MIN_DRIVER[variant.cuda]
    driver = inventory.driver_version or "0"
    if version_tuple(driver) < version_tuple(need):
        raise UserError(
            f"{inventory.host}: NVIDIA driver {driver}",
            f"is older than CUDA {variant.cuda} needs (>= {need} on Linux); the {trainer} image would fail with "
            "'CUDA driver version is insufficient'.",
            f"update the NVIDIA driver to {need} or newer (your distribution's nvidia-driver-570 or later package)",
        )
    return variant
