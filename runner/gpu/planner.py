"""Memory planner: the fastest settings whose predicted peak fits the GPU and host RAM, or what would fit.

Candidates, fastest first (step times from bench/data): bf16 without checkpointing (1.3B only: the one
measured), bf16 + checkpointing, fp8 weights + checkpointing, then blocks swapped to the CPU one at a
time (costs little: 3.2 -> 3.5 s/step for 20 of 30 blocks on 1.3B), then checkpointed activations offloaded
to the CPU (costs much: 3.2 -> 8.9 s on 1.3B). Each is tried with AdamW, then with 8-bit AdamW states.

diffusion-pipe was not measured (it needs flash-attn and DeepSpeed). It runs the same Wan DiT code; its
plan uses the musubi model plus DIFFPIPE_EXTRA_GIB for DeepSpeed's engine buffers, an assumption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from runner.gpu.memmodel import Checkpointing, MemoryFit, gpu_gib, host_gib
from runner.gpu.memory_fit import FIT
from runner.gpu.wan import latent_tokens

DIFFPIPE_EXTRA_GIB = 1.0  # assumed, not measured: DeepSpeed engine buffers beyond musubi's accelerate loop
HOST_RESERVE_GIB = 4.0  # OS, dataloader workers, page cache for the caches
LOW_VRAM_GIB = 2.0  # within this much of the card, expandable segments are worth it
MAX_SWAP = {"musubi": {"1.3B": 29, "14B": 39}, "diffpipe": {"1.3B": 28, "14B": 38}}  # trainers' own asserts
OPTIMIZER_8BIT = {"musubi": "adamw8bit", "diffpipe": "AdamW8bitKahan"}
CKPT_SETTING: dict[str, bool | str] = {"none": False, "gc": True, "gcoff": "unsloth"}


def margin_gib(predicted: float, fit: MemoryFit) -> float:
    """Safety margin: twice the largest error on the measured points, at least 0.5 GiB, plus 5% for extrapolation."""
    return max(0.5, 2 * fit.max_abs_error_gib) + 0.05 * predicted


def model_size(task: str) -> str:
    return "1.3B" if "1.3B" in task else "14B"


@dataclass(frozen=True)
class Plan:
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
    gpu_gib: float = 0.0  # predicted peak on the card: allocator peak + memory outside it + trainer extra
    margin_gib: float = 0.0
    host_gib: float = 0.0
    suggestions: tuple[str, ...] = ()

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
        return {"transformer_dtype": self.transformer_dtype, "activation_checkpointing": self.activation_checkpointing,
                "blocks_to_swap": self.blocks_to_swap}


def _candidates(size: str, trainer: str):
    yield "bf16", "none", 0
    yield "bf16", "gc", 0
    yield "fp8", "gc", 0
    for swap in range(1, MAX_SWAP[trainer][size] + 1):
        yield "fp8", "gc", swap
    for swap in range(0, MAX_SWAP[trainer][size] + 1):
        yield "fp8", "gcoff", swap


def _evaluate(task: str, trainer: str, tokens: int, vram_gib: float, ram_gib: float | None, rank: int,
              fit: MemoryFit) -> tuple[Plan | None, Plan | None]:
    """(first plan that fits, the plan with the least GPU memory considered)."""
    size = model_size(task)
    smallest: Plan | None = None
    for weights, ckpt, swap in _candidates(size, trainer):
        for adam8 in (False, True):
            alloc = gpu_gib(fit, size, weights, ckpt, swap, tokens, rank, adam8)
            if alloc is None:
                continue
            need = alloc + fit.outside_allocator_gib[size] + (DIFFPIPE_EXTRA_GIB if trainer == "diffpipe" else 0.0)
            margin = margin_gib(need, fit)
            host = host_gib(fit, size, ckpt, tokens)
            host_ok = ram_gib is None or host + HOST_RESERVE_GIB <= ram_gib
            fits = need + margin <= vram_gib and host_ok
            plan = Plan(task, trainer, tokens, vram_gib, ram_gib, fits, "bfloat16" if weights == "bf16" else "float8",
                        ckpt, swap, adam8, round(need, 2), round(margin, 2), round(host, 1))
            if fits:
                return plan, plan
            if smallest is None or need < smallest.gpu_gib:
                smallest = plan
    return None, smallest


def plan(task: str, trainer: str, width: int, height: int, frames: int, batch: int, vram_gib: float,
         ram_gib: float | None = None, rank: int = 32, fit: MemoryFit = FIT) -> Plan:
    tokens = latent_tokens(width, height, frames) * batch
    found, smallest = _evaluate(task, trainer, tokens, vram_gib, ram_gib, rank, fit)
    if found:
        return found
    assert smallest is not None
    return Plan(**{**smallest.__dict__, "fits": False,
                   "suggestions": tuple(_what_would_fit(task, trainer, width, height, frames, batch, vram_gib, ram_gib, rank, fit, smallest))})


def _what_would_fit(task: str, trainer: str, width: int, height: int, frames: int, batch: int, vram_gib: float,
                    ram_gib: float | None, rank: int, fit: MemoryFit, smallest: Plan) -> list[str]:
    out = []
    if ram_gib is not None and smallest.host_gib + HOST_RESERVE_GIB > ram_gib:
        out.append(f"more host RAM: at least {smallest.host_gib + HOST_RESERVE_GIB:.0f} GiB for these settings")

    def fits(w: int, h: int, f: int, b: int) -> bool:
        return _evaluate(task, trainer, latent_tokens(w, h, f) * b, vram_gib, ram_gib, rank, fit)[0] is not None

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
    out.append(f"a GPU with more memory: these settings need about {smallest.gpu_gib + smallest.margin_gib:.1f} GiB at least")
    return out


def plan_for_job(job, vram_gib: float, ram_gib: float | None = None) -> Plan:
    """Plan for the largest bucket of a runner.spec.Job. Apply with job.memory.model_copy(update=plan.memory_update())
    and, when plan.optimizer_type is set, job.optimizer.model_copy(update={"type": plan.optimizer_type})."""
    best = None
    for ds in job.datasets:
        for res in ds.resolutions:
            w, h = (res, res) if isinstance(res, int) else res
            for f in ds.frames or [33]:
                if best is None or latent_tokens(w, h, f) > latent_tokens(*best):
                    best = (w, h, f)
    assert best is not None
    return plan(job.task.value, job.trainer.value, *best, job.schedule.batch_size, vram_gib, ram_gib, job.lora.rank)


def gpu_memory(shell, vram_gib: float | None = None, ram_gib: float | None = None) -> tuple[float, float | None]:
    """GPU and host memory to plan for: as given, else the smallest GPU and the RAM that `shell` sees."""
    from runner.errors import UserError
    from runner.gpu.inventory import gather, host_ram_gib

    if vram_gib is None:
        inv = gather(shell)
        if not inv.gpus:
            raise UserError(shell.name, (inv.problem or "no GPU found") + ", so there is no memory to plan for.",
                            "pass the card's memory, e.g. --vram 24 (GiB), and --ram for host RAM")
        vram_gib = min(g.memory_gib for g in inv.gpus)
    return vram_gib, ram_gib if ram_gib is not None else host_ram_gib(shell)


def plan_job_on(job, shell, vram_gib: float | None = None, ram_gib: float | None = None) -> Plan:
    """`runner plan`: the job's plan for the given memory, or for the smallest GPU and the RAM `shell` sees."""
    return plan_for_job(job, *gpu_memory(shell, vram_gib, ram_gib))
