"""Check the LoRA a trainer saved: its format's key names, the rank, the tensor count for the architecture,
and that training moved the B matrices off their zero init."""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass
from pathlib import Path

from runner.models import weights
from runner.spec import Trainer

BLOCKS = 30  # Wan2.1 T2V-1.3B (TI2V-5B too; an A14B expert has 40)
MODULES = [f"{a}.{n}" for a in ("self_attn", "cross_attn") for n in "qkvo"] + ["ffn.0", "ffn.2"]
KEY = {
    # diffusion-pipe: PEFT names with ComfyUI's prefix; musubi: kohya names (lora_unet_ + dots as _), plus an alpha
    Trainer.diffpipe: re.compile(r"diffusion_model\.blocks\.(\d+)\.(self_attn\.[qkvo]|cross_attn\.[qkvo]|ffn\.[02])\.lora_([AB])\.weight"),
    Trainer.musubi: re.compile(r"lora_unet_blocks_(\d+)_(self_attn_[qkvo]|cross_attn_[qkvo]|ffn_[02])\.(lora_down\.weight|lora_up\.weight|alpha)"),
}
PER_MODULE = {Trainer.diffpipe: 2, Trainer.musubi: 3}
ZERO_MASK = {"F32": 0x7FFFFFFF, "F16": 0x7FFF, "BF16": 0x7FFF}  # a value is zero when these bits are
EXPONENT = {"F32": 0x7F800000, "F16": 0x7C00, "BF16": 0x7F80}  # all set: inf or NaN


@dataclass(frozen=True)
class LoraCheck:
    file: str
    tensors: int
    expected: int
    rank: int | None
    dtype: str
    b_nonzero: bool
    b_finite: bool
    problems: tuple[str, ...]


def _scan(f, start: int, info: dict) -> tuple[bool, bool]:
    """(any value non-zero, every value finite) of one tensor, from its raw bits."""
    a, b = info["data_offsets"]
    f.seek(start + a)
    words = array("I" if info["dtype"] == "F32" else "H", f.read(b - a))
    zero, exp = ZERO_MASK[info["dtype"]], EXPONENT[info["dtype"]]
    return any(w & zero for w in words), not any(w & exp == exp for w in words)


def check(path: Path, trainer: Trainer, rank: int, blocks: int = BLOCKS) -> LoraCheck:
    header, start = weights.read_header_and_offset(path)
    header.pop("__metadata__", None)
    problems: list[str] = []
    pattern = KEY[trainer]
    strangers = [k for k in header if not pattern.fullmatch(k)]
    if strangers:
        problems.append(f"{len(strangers)} keys outside {trainer.value}'s LoRA format, e.g. {strangers[0]}")
    expected = blocks * len(MODULES) * PER_MODULE[trainer]
    if len(header) != expected:
        problems.append(f"{len(header)} tensors, {expected} expected for {blocks} blocks x {len(MODULES)} modules")
    down = [v for k, v in header.items() if k.endswith(("lora_A.weight", "lora_down.weight"))]
    up = {k: v for k, v in header.items() if k.endswith(("lora_B.weight", "lora_up.weight"))}
    ranks = sorted({v["shape"][0] for v in down} | {v["shape"][1] for v in up.values()})
    found = ranks[0] if len(ranks) == 1 else None
    if found != rank:
        problems.append(f"rank {', '.join(map(str, ranks)) or 'missing'}, the job asks {rank}")
    with path.open("rb") as f:
        scans = [_scan(f, start, v) for v in up.values()]
    b_nonzero, b_finite = bool(scans) and all(s[0] for s in scans), all(s[1] for s in scans)
    if not b_finite:
        problems.append("B matrices hold inf or NaN: the training diverged")
    dtypes = sorted({v["dtype"] for v in header.values()})
    return LoraCheck(str(path), len(header), expected, found, "/".join(dtypes), b_nonzero, b_finite, tuple(problems))


def newest(folder: Path, trainer: Trainer) -> Path | None:
    """The LoRA a run saved last: diffusion-pipe's RUN/epochN/adapter_model.safetensors, musubi's NAME*.safetensors
    (in a run folder of its own when earlier files were there)."""
    patterns = ["*/*/adapter_model.safetensors"] if trainer is Trainer.diffpipe else ["*.safetensors", "*/*.safetensors"]
    files = [p for pattern in patterns for p in folder.glob(pattern) if p.is_file() and not p.parent.name.endswith("-state")]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None
