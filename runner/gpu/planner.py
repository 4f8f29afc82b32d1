"""Memory planner: the fastest settings whose predicted peak fits the GPU and host RAM, or what would fit.

A job has two phases on the GPU, and the plan must fit the larger: model caching (VAE latents, then umT5 text
embeddings) and training. Training candidates are only settings that ran on a GPU (VERIFIED, with where), fastest
first: bf16 with checkpointing, fp8 weights, then blocks swapped to the CPU (swap costs little: 3.2 -> 3.5 s/step
for 20 of 30 blocks on 1.3B), then checkpointed activations offloaded to the CPU (costs much). Caching candidates:
umT5 in bf16, then in fp8 (musubi `--fp8_t5`, diffusion-pipe `text_encoder_fp8`), then with musubi's text-encoder
batch at 1. bench/README.md lists the runs behind each.

Several GPUs (Layout): memory is planned per GPU, for the card with the least memory among those the job uses, and
host RAM for all the processes of one machine (runner.gpu.memmodel parallel_gib, host_gib).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from runner.gpu.memmodel import MEASURED_BASE, NCCL_GIB, SCALED_FROM, Basis, Checkpointing, MemoryFit, basis, dit_bf16_gib, gpu_gib, host_gib, outside_gib, parallel_gib
from runner.gpu.memory_fit import FIT
from runner.gpu.wan import latent_tokens
from runner.models import modelfiles
from runner.spec import DEFAULT_VIDEO_FRAMES, Memory, Task, experts

HOST_RESERVE_GIB = 4.0  # OS, dataloader workers, page cache for the caches
LOW_VRAM_GIB = 2.0  # within this much of the card, expandable segments are worth it
OPTIMIZER_8BIT = {"musubi": "adamw8bit", "diffpipe": "AdamW8bitKahan"}
CKPT_SETTING: dict[str, bool | str] = {"none": False, "gc": True, "gcoff": "unsloth"}
TEXT_ENCODER_BATCH = Memory.model_fields["text_encoder_batch"].default  # musubi's recipe, unless the card needs less

# (weights, checkpointing, blocks swapped, 8-bit optimizer states) that ran on a GPU, fastest first.
# musubi renders `unsloth` as plain checkpointing, so it has no offload candidate.
VERIFIED: dict[tuple[str, str], tuple[tuple[str, Checkpointing, int, bool], ...]] = {
    ("musubi", "1.3B"): (("bf16", "gc", 0, False), ("fp8", "gc", 0, False), ("fp8", "gc", 10, False), ("fp8", "gc", 20, False)),
    ("musubi", "14B"): (("fp8", "gc", 0, False), ("fp8", "gc", 20, False)),
    ("diffpipe", "1.3B"): (("bf16", "gc", 0, False), ("fp8", "gc", 28, True)),
    ("diffpipe", "14B"): (("fp8", "gcoff", 32, True),),
}
# TI2V-5B: the settings that ran on the model of its depth (1.3B, 30 blocks); diffusion-pipe's bf16+GC also ran on
# TI2V-5B itself (bench/gpu_jobs/dp-5b.yaml), its other estimates are derived or scaled (runner.gpu.memmodel.SCALED_FROM).
# musubi has no TI2V-5B at its pin (validation refuses the job); its entry only lets the planner answer for the size.
VERIFIED[("musubi", "5B")] = VERIFIED[("musubi", "1.3B")]
VERIFIED[("diffpipe", "5B")] = VERIFIED[("diffpipe", "1.3B")]
CACHING: dict[str, tuple[tuple[str, int], ...]] = {  # (umT5 precision, text-encoder batch), cheapest last
    "musubi": (("bf16", TEXT_ENCODER_BATCH), ("fp8", TEXT_ENCODER_BATCH), ("fp8", 1)),
    "diffpipe": (("bf16", 1), ("fp8", 1)),
}


def margin_gib(predicted: float, fit: MemoryFit) -> float:
    """Safety margin: twice the largest error on the measured points, at least 0.5 GiB, plus 5% for extrapolation."""
    return max(0.5, 2 * fit.max_abs_error_gib) + 0.05 * predicted


def model_size(task: str) -> str:
    return Task(task).size


@dataclass(frozen=True)
class Layout:
    """How a job spreads over the GPUs of one machine: one process per GPU, `stages` of them per pipeline
    (diffusion-pipe), the rest data-parallel replicas."""

    gpus: int = 1
    stages: int = 1

    @property
    def replicas(self) -> int:
        return max(1, self.gpus // self.stages)


@dataclass(frozen=True)
class MemoryPlan:
    task: str
    trainer: str
    tokens: int
    vram_gib: float
    ram_gib: float | None
    fits: bool
    transformer_dtype: Literal["bfloat16", "float8"] = "bfloat16"
    checkpointing: Checkpointing = "gc"
    blocks_to_swap: int = 0
    optimizer_8bit: bool = False
    gpu_gib: float = 0.0  # predicted peak on the card, the larger phase: allocator peak + memory outside it
    margin_gib: float = 0.0
    host_gib: float = 0.0  # predicted peak host RAM, the larger phase
    suggestions: tuple[str, ...] = ()
    text_encoder_dtype: Literal["bfloat16", "float8"] = "bfloat16"  # umT5 while caching
    text_encoder_batch: int = 1  # texts per umT5 batch while caching (musubi's --batch_size)
    caching_gpu_gib: float = 0.0
    training_gpu_gib: float = 0.0
    basis: Basis = "measured"  # what the training estimate rests on (runner.gpu.memmodel.basis)
    layout: Layout = Layout()

    @property
    def estimate_note(self) -> str | None:
        """A line for `runner plan` where the estimate is not measured at several sizes of this model."""
        if self.basis == "one size":
            return (f"MEASURED AT ONE SIZE, SLOPE SCALED: {self.task} on {self.trainer} ran on a GPU at one size; the cost per "
                    f"latent token is {MEASURED_BASE}'s scaled by width")
        if self.basis == "scaled":
            return f"UNMEASURED: {self.task}: estimate scaled from {SCALED_FROM[model_size(self.task)]}, not measured on a GPU yet"
        return None

    @property
    def activation_checkpointing(self) -> bool | str:
        return CKPT_SETTING[self.checkpointing]

    @property
    def optimizer_type(self) -> str | None:
        """The optimizer to set, or None to keep the job's (or the trainer's default)."""
        return OPTIMIZER_8BIT[self.trainer] if self.optimizer_8bit else None

    @property
    def low_vram(self) -> bool:
        return self.fits and (self.transformer_dtype == "float8" or self.vram_gib - self.gpu_gib - self.margin_gib < LOW_VRAM_GIB)

    def memory_update(self) -> dict[str, object]:
        """Fields of runner.spec.Memory this plan sets (for `memory: auto` at render time)."""
        update = {"transformer_dtype": self.transformer_dtype, "activation_checkpointing": self.activation_checkpointing,
                  "blocks_to_swap": self.blocks_to_swap, "text_encoder_dtype": self.text_encoder_dtype}
        if self.trainer == "musubi":  # diffusion-pipe caches one caption at a time (caching_batch_size = 1)
            update["text_encoder_batch"] = self.text_encoder_batch
        return update


def _caching(trainer: str, size: str, frame_pixels: int, vram_gib: float, fit: MemoryFit, layout: Layout) -> tuple[str, int, float, float]:
    """The first caching setting that fits (else the smallest): (umT5 precision, batch, GPU GiB, host GiB).
    musubi caches in one process; diffusion-pipe's caching runs in every training process, each with its umT5."""
    cf = fit.caching[trainer]
    processes = layout.gpus if trainer == "diffpipe" else 1
    nccl = NCCL_GIB[trainer] if processes > 1 else 0.0
    options = [(t5, batch, cf.gpu_gib(t5, batch, frame_pixels, size) + nccl, processes * cf.host(t5, size)) for t5, batch in CACHING[trainer]]
    return next((o for o in options if o[2] + margin_gib(o[2], fit) <= vram_gib), options[-1])


def _evaluate(task: str, trainer: str, tokens: int, frame_pixels: int, vram_gib: float, ram_gib: float | None, rank: int,
              fit: MemoryFit, dits: int = 1, layout: Layout = Layout(), dit_file_bf16: bool = False) -> tuple[MemoryPlan | None, MemoryPlan | None]:
    """(first plan that fits, the plan with the least GPU memory considered). dits: DiTs one run loads (musubi's
    A14B expert: both keeps the inactive expert in host RAM: --offload_inactive_dit, or its swapped state dict)."""
    size = model_size(task)
    t5, batch, cache_gpu, cache_host = _caching(trainer, size, frame_pixels, vram_gib, fit, layout)
    smallest: MemoryPlan | None = None
    smallest_need = math.inf  # unrounded: the plan records its need rounded to 0.01 GiB
    candidates = VERIFIED[(trainer, size)]
    if layout.stages > 1:  # diffusion-pipe swaps blocks only with pipeline_stages 1: the same settings without swap
        candidates = tuple(dict.fromkeys((w, c, 0, a) for w, c, _, a in candidates))
    for weights, ckpt, swap, adam8 in candidates:
        alloc = gpu_gib(fit, size, weights, ckpt, swap, tokens, rank, adam8, trainer)
        if alloc is None:
            continue
        train = alloc + outside_gib(fit, trainer, size) + parallel_gib(size, weights, rank, layout.replicas, layout.stages, trainer)
        need = max(train, cache_gpu)
        margin = margin_gib(need, fit)
        host = max(host_gib(fit, size, ckpt, tokens, trainer=trainer, swap=swap, processes=layout.gpus, dit_file_bf16=dit_file_bf16) + (dits - 1) * dit_bf16_gib(size), cache_host)
        host_ok = ram_gib is None or host + HOST_RESERVE_GIB <= ram_gib
        fits = need + margin <= vram_gib and host_ok
        plan = MemoryPlan(task, trainer, tokens, vram_gib, ram_gib, fits, "bfloat16" if weights == "bf16" else "float8",
                    ckpt, swap, adam8, round(need, 2), round(margin, 2), round(host, 1), (),
                    "bfloat16" if t5 == "bf16" else "float8", batch, round(cache_gpu, 2), round(train, 2), basis(fit, trainer, size, ckpt), layout)
        if fits:
            return plan, plan
        if need < smallest_need:
            smallest, smallest_need = plan, need
    return None, smallest


def plan(task: str, trainer: str, width: int, height: int, frames: int, batch: int, vram_gib: float,
         ram_gib: float | None = None, rank: int = 32, fit: MemoryFit = FIT, dits: int = 1, layout: Layout = Layout(),
         dit_file_bf16: bool = False) -> MemoryPlan:
    tokens = latent_tokens(width, height, frames, model_size(task)) * batch
    found, smallest = _evaluate(task, trainer, tokens, width * height, vram_gib, ram_gib, rank, fit, dits, layout, dit_file_bf16)
    if found:
        return found
    assert smallest is not None
    return MemoryPlan(**{**smallest.__dict__, "fits": False,
                   "suggestions": tuple(_what_would_fit(task, trainer, width, height, frames, batch, vram_gib, ram_gib, rank, fit, smallest, dits, layout,
                                                          dit_file_bf16))})


def _what_would_fit(task: str, trainer: str, width: int, height: int, frames: int, batch: int, vram_gib: float,
                    ram_gib: float | None, rank: int, fit: MemoryFit, smallest: MemoryPlan, dits: int, layout: Layout,
                    dit_file_bf16: bool) -> list[str]:
    out = []
    if ram_gib is not None and smallest.host_gib + HOST_RESERVE_GIB > ram_gib:
        out.append(f"more host RAM: at least {smallest.host_gib + HOST_RESERVE_GIB:.0f} GiB for these settings")

    def fits(w: int, h: int, f: int, b: int) -> bool:
        return _evaluate(task, trainer, latent_tokens(w, h, f, model_size(task)) * b, w * h, vram_gib, ram_gib, rank, fit, dits, layout, dit_file_bf16)[0] is not None

    if batch > 1 and fits(width, height, frames, 1):
        out.append("batch size 1 (use gradient accumulation for a larger effective batch)")
    fewer = next((f for f in range(frames - 4, 0, -4) if fits(width, height, f, batch)), None)
    if fewer:
        out.append(f"fewer frames: {fewer} (4k+1) at {width}x{height}")
    for scale in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4):
        w, h = max(16, int(width * scale) // 16 * 16), max(16, int(height * scale) // 16 * 16)
        if fits(w, h, frames, batch):
            out.append(f"lower resolution: {w}x{h} at {frames} frames")
            break
    if smallest.caching_gpu_gib >= smallest.training_gpu_gib:
        out.append(f"model caching alone needs about {smallest.caching_gpu_gib + margin_gib(smallest.caching_gpu_gib, fit):.1f} GiB "
                   "even with the smallest caching settings (the umT5 text encoder and the VAE run on the GPU)")
    out.append(f"a GPU with more memory: these settings need about {smallest.gpu_gib + smallest.margin_gib:.1f} GiB at least")
    return out


def plan_for_job(job, vram_gib: float, ram_gib: float | None = None) -> MemoryPlan:
    """MemoryPlan for the largest bucket of a runner.spec.Job. Apply with job.memory.model_copy(update=plan.memory_update())
    and, when plan.optimizer_type is set, job.optimizer.model_copy(update={"type": plan.optimizer_type})."""
    best, size = None, job.task.size
    for ds in job.datasets:
        for res in ds.resolutions:
            w, h = (res, res) if isinstance(res, int) else res
            for f in ds.frames or DEFAULT_VIDEO_FRAMES:
                if best is None or latent_tokens(w, h, f, size) > latent_tokens(*best, size):
                    best = (w, h, f)
    assert best is not None
    dits = len(experts(job)) if job.trainer.value == "musubi" else 1  # diffusion-pipe trains one expert per run
    layout = Layout(job.gpu_count or 1, job.pipeline_stages)
    return plan(job.task.value, job.trainer.value, *best, job.schedule.batch_size, vram_gib, ram_gib, job.lora.rank, dits=max(dits, 1),
                layout=layout, dit_file_bf16=_dit_file_is_bf16(job))


def _dit_file_is_bf16(job) -> bool:
    """From the DiT file's name (the planner runs before the files are read): the presets' ComfyUI files say their
    dtype (wan2.1_t2v_14B_bf16, wan2.2_t2v_low_noise_14B_fp16); a name that doesn't is taken for one to cast."""
    dit = modelfiles.resolve(job).dit
    return dit is not None and "bf16" in dit.name.lower()
