"""The peak-memory model of Wan2.1 LoRA training, per phase, with coefficients fitted by bench/fit_planner.py.

Two phases per trainer, planned for the larger: model caching (VAE latents, then umT5 text embeddings;
diffusion-pipe moves the whole umT5 to the GPU, musubi batches texts through it) and training.

Training: the caching allocator's peak reserved GiB is linear in the latent tokens of a batch, per (trainer where
measured, model, weight precision, checkpointing), with analytic terms for what the measurements vary along one
axis only: blocks swapped to the CPU (one block's weights each, plus a fitted overhead), checkpointed activations
offloaded to the CPU (a fitted share of each block's bf16 input), LoRA rank and 8-bit optimizer states. Memory
outside the allocator (CUDA context, libraries, DeepSpeed's buffers) is added per trainer as measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from runner.gpu.wan import ARCH, GIB, vae_bf16_gib

Weights = str  # "bf16" | "fp8"
Checkpointing = str  # "none" | "gc" | "gcoff" (checkpointed activations offloaded to CPU)
# what an estimate rests on: this trainer and model size measured at several sizes ("measured"), at one size with the
# per-token slope scaled from another model ("one size"), or nothing of this model size measured ("scaled")
Basis = Literal["measured", "one size", "scaled"]

MEASURED_RANK = 32
LORA_BYTES_PER_PARAM = 16  # fp32 weight + fp32 grad + two fp32 AdamW states
ADAM_8BIT_SAVING_PER_PARAM = 6  # two 1-byte states instead of two 4-byte ones


def vae_beyond_wan21_gib(size: str) -> float:
    """This model's VAE's bf16 weights beyond the Wan2.1 VAE's (TI2V-5B's Wan2.2 VAE: 704.7 M parameters against 126.9 M)."""
    return vae_bf16_gib(size) - vae_bf16_gib("1.3B")


@dataclass(frozen=True)
class CachingFit:
    """One trainer's caching phase: the VAE pass and the umT5 pass, each GPU peak = allocator peak + outside."""

    # VAE encode, allocator peak: (GiB, GiB per pixel of one frame). The VAE encodes a clip a few frames at a time, so
    # its peak follows the frame size, not the clip's length (musubi, 832x480: 7.95 GiB at 33 frames, 8.13 at 81; 480x272: 3.24)
    latents: tuple[float, float]
    t5_gib: dict[str, float]  # umT5 precision -> allocator peak while loading it / holding it on the GPU
    t5_per_text_gib: float  # allocator GiB per text of a text-encoder batch (musubi; diffusion-pipe encodes one)
    t5_weights_gib: dict[str, float]  # umT5 weights on the GPU, under which the batch term sits
    outside_gib: float
    host_gib: dict[str, float]  # umT5 precision -> the caching process's peak RSS
    # diffusion-pipe caches in one process: it moves the VAE to the CPU and umT5 to the GPU without emptying PyTorch's
    # cache (utils/dataset.py DatasetManager._handle_task), so the VAE's bf16 weights may stay reserved under umT5's
    # peak, and they stay in RAM. t5_gib and host_gib then hold the Wan2.1 VAE's; a larger VAE adds its difference.
    vae_under_t5: bool = False

    def vae_gib(self, size: str) -> float:
        return vae_beyond_wan21_gib(size) if self.vae_under_t5 else 0.0

    def latents_gib(self, frame_pixels: int) -> float:
        return self.latents[0] + self.latents[1] * frame_pixels

    def gpu_gib(self, t5: str, batch: int, frame_pixels: int, size: str) -> float:
        latents = self.latents_gib(frame_pixels)
        text = max(self.t5_gib[t5], self.t5_weights_gib.get(t5, 0.0) + self.t5_per_text_gib * batch) + self.vae_gib(size)
        return max(latents, text) + self.outside_gib

    def host(self, t5: str, size: str) -> float:
        return self.host_gib[t5] + self.vae_gib(size)


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
    # where one trainer was measured itself: (trainer, task, weights, "gc"|"none") -> (GiB, GiB per token)
    trainer_linear: dict[tuple[str, str, str, str], tuple[float, float]] = field(default_factory=dict)
    trainer_swap_overhead_gib: dict[tuple[str, str], float] = field(default_factory=dict)
    trainer_outside_gib: dict[str, float] = field(default_factory=dict)  # trainer -> GiB outside while training
    # (trainer, "same"|"cast") -> training RSS per byte of the bf16 DiT, where the trainer reads the whole DiT into RAM:
    # "cast" where the file's dtype is not bf16 (diffusion-pipe then holds the file's tensors and the bf16 copy)
    trainer_host_dit_factor: dict[tuple[str, str], float] = field(default_factory=dict)
    caching: dict[str, CachingFit] = field(default_factory=dict)
    # trainer_linear keys measured at one size only: their line goes through that point with a slope scaled by width
    one_size: tuple[tuple[str, str, str, str], ...] = ()


# Model sizes not measured at several sizes take the per-token slope of a size measured at several (MEASURED_BASE)
# scaled by the width (activations per token grow with dim; musubi's 14B/1.3B slopes, 0.000688/0.000227 = 3.0, against
# a width ratio of 3.3). Where a trainer ran a model once (diffusion-pipe TI2V-5B and the A14B expert:
# bench/data/gpu_h200_wan22.jsonl) the fit puts its own line through that point with the scaled slope ("one size");
# a model in SCALED_FROM that a trainer never ran gets the measured size's intercept plus its own weights ("scaled").
MEASURED_BASE = "1.3B"
SCALED_FROM = {"5B": MEASURED_BASE}


def width_scaled_slope(slope: float, task: str) -> float:
    return slope * ARCH[task].dim / ARCH[MEASURED_BASE].dim


def basis(fit: MemoryFit, trainer: str, task: str, ckpt: Checkpointing) -> Basis:
    """What the training estimate of this trainer, model size and checkpointing rests on (fp8 is derived from bf16)."""
    key = (trainer, task, "bf16", "none" if ckpt == "none" else "gc")
    if key in fit.one_size:
        return "one size"
    return "scaled" if task in SCALED_FROM else "measured"


def _scaled(fit: MemoryFit, task: str, weights: Weights, ckpt: Checkpointing, trainer: str) -> tuple[float, float] | None:
    base = SCALED_FROM[task]
    lin = _linear(fit, base, weights, ckpt, trainer)
    if lin is None:
        return None
    bytes_per_param = 2 if weights == "bf16" else 1
    weights_delta = ARCH[task].layers * ARCH[task].block_gib(bytes_per_param) - ARCH[base].layers * ARCH[base].block_gib(bytes_per_param)
    return lin[0] + weights_delta, width_scaled_slope(lin[1], task)


def _linear(fit: MemoryFit, task: str, weights: Weights, ckpt: Checkpointing, trainer: str) -> tuple[float, float] | None:
    gc = "none" if ckpt == "none" else "gc"
    for table, key in ((fit.trainer_linear, (trainer, task, weights, gc)), (fit.linear, (task, weights, gc))):
        if key in table:
            return table[key]
    own = fit.trainer_linear.get((trainer, task, "bf16", gc))
    if weights == "fp8" and own is not None:
        # fp8 weights hold one byte less per block parameter than bf16 (checked on musubi's 1.3B: 1.13 vs 1.30 GiB)
        return own[0] - ARCH[task].layers * ARCH[task].block_gib(1), own[1]
    fp8 = fit.linear.get((task, "fp8", gc))
    if weights == "bf16" and fp8 is not None:
        return fp8[0] + ARCH[task].layers * ARCH[task].block_gib(1), fp8[1]
    return _scaled(fit, task, weights, ckpt, trainer) if task in SCALED_FROM else None


def outside_gib(fit: MemoryFit, trainer: str, task: str) -> float:
    """Memory outside PyTorch's allocator while training: measured per trainer, else musubi's per model size."""
    return fit.trainer_outside_gib.get(trainer, fit.outside_allocator_gib[SCALED_FROM.get(task, task)])


def gpu_gib(fit: MemoryFit, task: str, weights: Weights, ckpt: Checkpointing, swap: int, tokens: int,
            rank: int = MEASURED_RANK, adam_8bit: bool = False, trainer: str = "musubi") -> float | None:
    """Predicted peak reserved GiB of the training process, or None where nothing measured supports a prediction."""
    lin = _linear(fit, task, weights, ckpt, trainer)
    if lin is None:
        return None
    arch = ARCH[task]
    intercept, slope = lin
    if ckpt == "gcoff":
        slope -= fit.offload_fraction * arch.checkpoint_gib_per_token()
    mem = intercept + slope * tokens
    if swap:
        like = SCALED_FROM.get(task, task)
        overhead = fit.trainer_swap_overhead_gib.get((trainer, like), fit.swap_overhead_gib[like])
        mem += overhead - swap * arch.block_gib(2 if weights == "bf16" else 1)
    mem += (arch.lora_params(rank) - arch.lora_params(MEASURED_RANK)) * LORA_BYTES_PER_PARAM / GIB
    if adam_8bit:
        mem -= arch.lora_params(rank) * ADAM_8BIT_SAVING_PER_PARAM / GIB
    return mem


def dit_bf16_gib(task: str) -> float:
    arch = ARCH[task]
    return arch.layers * arch.block_params * 1.02 * 2 / GIB  # blocks plus embeddings and head, about 2% more


def host_gib(fit: MemoryFit, task: str, ckpt: Checkpointing, tokens: int, dit_file_bytes_per_param: float = 2,
             trainer: str = "musubi", swap: int = 0, processes: int = 1, dit_file_bf16: bool = False) -> float:
    """Peak host RAM of the training processes on one machine (one per GPU). musubi memory-maps the DiT file (its
    pages are shared by the processes) and each process keeps its swapped blocks in RAM; diffusion-pipe reads the
    whole DiT file into each process's RAM before converting it, a fitted multiple of the bf16 DiT that covers its
    swapped blocks too, larger where the file is not bf16. Plus each process's offloaded activations."""
    arch = ARCH[task]
    factor = fit.trainer_host_dit_factor.get((trainer, "same" if dit_file_bf16 else "cast"))
    if factor is not None:
        mem = processes * (fit.host_base_gib + factor * dit_bf16_gib(task))
    else:
        mem = processes * (fit.host_base_gib + swap * arch.block_gib(2)) + dit_bf16_gib(task) * dit_file_bytes_per_param / 2
    if ckpt == "gcoff":
        mem += processes * fit.offload_fraction * arch.checkpoint_gib_per_token() * tokens
    return mem


# What a multi-GPU run holds outside PyTorch's allocator beyond one GPU training alone (NCCL's communicator buffers
# and streams), measured on two H200s (bench/data/gpu_h200x2.jsonl, 1.3B at 33 and 81 frames): musubi +0.83 GiB
# (0.75 -> 1.58); diffusion-pipe +0.19 while training (3.20 -> 3.39) and +0.28 while caching (1.22 -> 1.50), which it
# does in every training process: DeepSpeed sets up its NCCL group on one GPU too, so most of it is in the one-GPU
# figure already.
NCCL_GIB = {"musubi": 0.85, "diffpipe": 0.3}
GRAD_BUCKET_BYTES_PER_PARAM = 4  # DDP (and DeepSpeed's data parallel) all-reduce the LoRA's fp32 gradients through a bucket copy


def parallel_gib(task: str, weights: Weights, rank: int, replicas: int, stages: int, trainer: str) -> float:
    """What each GPU holds more (or less) than one GPU training alone. Data parallel (DDP on musubi, DeepSpeed on
    diffusion-pipe): every GPU a whole copy of the model, plus its gradient buckets and NCCL's buffers. Pipeline
    parallel (diffusion-pipe's pipeline_stages): the DiT's blocks split across the stages, the heaviest stage holding
    ceil(blocks / stages) of them; activations are not split (the first stage keeps its share of up to `stages`
    micro-batches in flight, as many checkpointed block inputs as one GPU holds for one)."""
    arch = ARCH[task]
    extra = NCCL_GIB[trainer] if replicas * stages > 1 else 0.0
    if replicas > 1:
        extra += arch.lora_params(rank) * GRAD_BUCKET_BYTES_PER_PARAM / GIB
    if stages > 1:
        extra -= (arch.layers - math.ceil(arch.layers / stages)) * arch.block_gib(2 if weights == "bf16" else 1)
    return extra
