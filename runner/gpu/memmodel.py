"""The peak-memory model of Wan2.1 LoRA training, with coefficients fitted by bench/fit_planner.py.

Peak GPU memory (the caching allocator's peak reserved bytes) is linear in the latent tokens of a batch,
with an intercept and slope per (model, weight precision, checkpointing) measured on musubi-tuner, and
analytic terms for what the measurements vary along one axis only: blocks swapped to the CPU (one block's
weights each), checkpointed activations offloaded to the CPU (a fitted share of each block's bf16 input),
LoRA rank and 8-bit optimizer states. Memory outside the allocator (CUDA context, libraries) is added
per model as measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.gpu.wan import ARCH, GIB

Weights = str  # "bf16" | "fp8"
Checkpointing = str  # "none" | "gc" | "gcoff" (checkpointed activations offloaded to CPU)

MEASURED_RANK = 32
LORA_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + two fp32 AdamW states
ADAM_8BIT_SAVING_PER_PARAM = 6  # two 1-byte states instead of two 4-byte ones


@dataclass(frozen=True)
class MemoryFit:
    source: str
    gpu: str
    linear: dict[tuple[str, str, str], tuple[float, float]]  # (task, weights, "gc"|"none") -> (GiB, GiB per token)
    swap_overhead_gib: dict[str, float]
    offload_fraction: float
    outside_allocator_gib: dict[str, float]
    host_base_gib: float  # process RSS beyond the memory-mapped DiT file
    max_abs_error_gib: float = 0.0
    max_rel_error: float = 0.0


def _linear(fit: MemoryFit, task: str, weights: Weights, ckpt: Checkpointing) -> tuple[float, float] | None:
    key = (task, weights, "none" if ckpt == "none" else "gc")
    if key in fit.linear:
        return fit.linear[key]
    fp8 = fit.linear.get((task, "fp8", key[2]))
    if weights == "bf16" and fp8 is not None:
        # bf16 weights hold one more byte per block parameter than fp8 (checked on 1.3B, where both are measured)
        return fp8[0] + ARCH[task].layers * ARCH[task].block_gib(1), fp8[1]
    return None


def gpu_gib(fit: MemoryFit, task: str, weights: Weights, ckpt: Checkpointing, swap: int, tokens: int,
            rank: int = MEASURED_RANK, adam_8bit: bool = False) -> float | None:
    """Predicted peak reserved GiB of the training process, or None where nothing measured supports a prediction."""
    lin = _linear(fit, task, weights, ckpt)
    if lin is None:
        return None
    arch = ARCH[task]
    intercept, slope = lin
    if ckpt == "gcoff":
        slope -= fit.offload_fraction * arch.checkpoint_gib_per_token()
    mem = intercept + slope * tokens
    if swap:
        mem += fit.swap_overhead_gib[task] - swap * arch.block_gib(2 if weights == "bf16" else 1)
    mem += (arch.lora_params(rank) - arch.lora_params(MEASURED_RANK)) * LORA_BYTES_PER_PARAM / GIB
    if adam_8bit:
        mem -= arch.lora_params(rank) * ADAM_8BIT_SAVING_PER_PARAM / GIB
    return mem


def host_gib(fit: MemoryFit, task: str, ckpt: Checkpointing, tokens: int, dit_file_bytes_per_param: float = 2) -> float:
    """Peak host RAM of the training process: the DiT file (memory-mapped while loading) plus offloaded activations."""
    arch = ARCH[task]
    params = arch.layers * arch.block_params * 1.02  # blocks plus embeddings and head, about 2% more
    mem = fit.host_base_gib + params * dit_file_bytes_per_param / GIB
    if ckpt == "gcoff":
        mem += fit.offload_fraction * arch.checkpoint_gib_per_token() * tokens
    return mem
