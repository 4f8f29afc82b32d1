"""Environment variables runner injects into the training container: one table of rules, each with its source.

User overrides (the job's `env:`) win over every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from runner.gpu.inventory import Gpu, Inventory


@dataclass(frozen=True)
class Context:
    inventory: Inventory | None  # None: GPUs unknown (no host to ask)
    trainer: str
    gpus_used: int = 1
    low_vram: bool = False  # from the memory plan
    device_ids: tuple[int, ...] | None = None  # the job's device ids; None: the first gpus_used
    nodes: int = 1  # machines of a multi-node run, each with gpus_used GPUs

    def used(self) -> list[Gpu]:
        """The inventory's GPUs the job trains on (none when the inventory is unknown)."""
        gpus = self.inventory.gpus if self.inventory is not None else []
        if self.device_ids is None:
            return gpus[: self.gpus_used]
        return [g for g in gpus if g.index in self.device_ids]

    def p2p_broken(self) -> bool:
        """Whether nvidia-smi reports no P2P between two of the GPUs the job trains on."""
        ids = {g.index for g in self.used()}
        return self.inventory is not None and any({int(i) for i in pair.split("-")} <= ids for pair in self.inventory.p2p_broken())


@dataclass(frozen=True)
class Rule:
    name: str
    applies: Callable[[Context], bool]
    variables: dict[str, str]
    reason: str
    source: str


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    reason: str
    source: str


NO_P2P = {"NCCL_P2P_DISABLE": "1", "NCCL_IB_DISABLE": "1"}
# between machines NCCL needs InfiniBand (or RoCE) where there is one: only P2P inside each machine is turned off
NO_P2P_MULTINODE = {"NCCL_P2P_DISABLE": "1"}
RTX_40 = "GeForce RTX 40xx (consumer Ada) cards have no working P2P; NCCL hangs or fails without "
RTX_40_SOURCE = "diffusion-pipe README (8f83dbf): 'RTX 4000 series needs NCCL_P2P_DISABLE=1 NCCL_IB_DISABLE=1'"


def _rtx_40(c: Context) -> bool:
    return any(g.is_geforce_rtx_40 for g in c.used())


RULES: tuple[Rule, ...] = (
    Rule(
        "cuda-home",
        lambda c: True,
        {"CUDA_HOME": "/usr/local/cuda"},
        "DeepSpeed runs $CUDA_HOME/bin/nvcc -V; CUDA_HOME is one path, not a list (':/usr/local/cuda' breaks it)",
        "diffusion-pipe requirements.txt (deepspeed==0.18.4) and DeepSpeed's op builder; ../shared/UPSTREAM.md",
    ),
    Rule(
        "device-order",
        lambda c: c.device_ids is not None or (c.inventory is not None and c.inventory.count > 1),
        {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"},
        "CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi (the job's `gpus:` ids, the memory plan, "
        "`runner doctor`) numbers them by PCI bus, and so does CUDA with this",
        "CUDA C Programming Guide, CUDA environment variables (CUDA_DEVICE_ORDER)",
    ),
    Rule(
        "geforce-rtx-40-no-p2p",
        # Upstream's wording is unconditional ("RTX 4000 series needs"); with one GPU NCCL has no peer to
        # reach, so the variables cost nothing there, and a job moved to two GPUs needs no new rule.
        lambda c: c.nodes == 1 and _rtx_40(c),
        NO_P2P,
        RTX_40 + "these",
        RTX_40_SOURCE,
    ),
    Rule(
        "geforce-rtx-40-no-p2p-multinode",
        lambda c: c.nodes > 1 and _rtx_40(c),
        NO_P2P_MULTINODE,
        RTX_40 + "NCCL_P2P_DISABLE; InfiniBand stays on between the machines",
        RTX_40_SOURCE,
    ),
    Rule(
        "no-p2p-between-gpus",
        lambda c: c.nodes == 1 and c.gpus_used > 1 and c.p2p_broken(),
        NO_P2P,
        "nvidia-smi reports no P2P between GPUs this job trains on; NCCL must not try it",
        "`nvidia-smi topo -p2p r` on the host",
    ),
    Rule(
        "no-p2p-between-gpus-multinode",
        lambda c: c.nodes > 1 and c.gpus_used > 1 and c.p2p_broken(),
        NO_P2P_MULTINODE,
        "nvidia-smi reports no P2P between GPUs this job trains on; NCCL must not try it (InfiniBand stays on between the machines)",
        "`nvidia-smi topo -p2p r` on the host",
    ),
    Rule(
        "low-vram-allocator",
        lambda c: c.low_vram,
        {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"},
        "the plan runs close to the card's memory; expandable segments cut allocator fragmentation",
        "diffusion-pipe README low-VRAM recipe; PyTorch CUDA semantics docs (expandable_segments)",
    ),
)


def environment(ctx: Context, overrides: dict[str, str] | None = None) -> list[EnvVar]:
    """Variables to inject, each with the reason of the first rule that set it; overrides win."""
    out: dict[str, EnvVar] = {}
    for rule in RULES:
        if rule.applies(ctx):
            for name, value in rule.variables.items():
                out.setdefault(name, EnvVar(name, value, rule.reason, rule.source))
    for name, value in (overrides or {}).items():
        out[name] = EnvVar(name, value, "set in the job's env: (user overrides win)", "job file")
    return list(out.values())


def job_environment(job, inventory, memory_plan=None, nodes: int = 1) -> list[EnvVar]:
    """The rules for `job` (None: the GPU rules alone) on the GPUs of `inventory` (None or empty: unknown GPUs),
    on each of `nodes` machines. memory_plan: the job's runner.gpu.planner.MemoryPlan for those GPUs (runner.job.resolve makes it)."""
    gpus = inventory if inventory is not None and inventory.gpus else None
    low_vram = bool(job is not None and gpus and memory_plan is not None and memory_plan.low_vram)
    trainer = job.trainer.value if job is not None else "diffpipe"
    used = (job.gpu_count or (gpus.count if gpus else 1)) if job is not None else (gpus.count if gpus else 1)
    ids = tuple(job.gpu_ids) if job is not None and job.gpu_ids else None
    return environment(Context(gpus, trainer, used, low_vram, ids, nodes), job.env if job is not None else None)


def env_for_job(resolved, shell) -> list[EnvVar]:
    """What `runner env` prints: the rules for a job resolved with its target's GPUs (runner.job.resolve: its
    inventory and memory plan), or, without a job (None), the GPU rules for the GPUs `shell` sees."""
    from runner.gpu.inventory import gather

    if resolved is None:
        return job_environment(None, gather(shell))
    return job_environment(resolved.job, resolved.inventory, resolved.memory_plan)
