"""What a model weight file holds, read from its header only (no torch, no full read).

A .safetensors file starts with an 8-byte little-endian length and a JSON table of tensor names,
dtypes and shapes. That is enough to tell the dtype of a DiT, whether it is a ComfyUI `fp8_scaled`
file, whether it is the 1.3B or 14B model, and whether it is an I2V model.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER = 100 * 2**20

# safetensors dtype names → the names the job file and trainers use
DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F8_E4M3": "float8", "F8_E5M2": "float8_e5m2"}

# model width of a Wan2.1 DiT (config `dim`) → task size
SIZE_BY_DIM = {1536: "1.3B", 5120: "14B"}


@dataclass(frozen=True)
class WeightsInfo:
    dtype: str  # the dtype of most parameters, as named in DTYPES
    fp8_scaled: bool  # ComfyUI "fp8_scaled": fp8 weights with per-tensor scales
    size: str | None  # "1.3B" / "14B" for a Wan DiT, else None
    i2v: bool  # has the image-embedding layers of the I2V models


class NotSafetensors(ValueError):
    pass


def read_header(path: Path) -> dict:
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise NotSafetensors("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise NotSafetensors("header length is implausible")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise NotSafetensors(f"header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise NotSafetensors("header is not a JSON object")
    return header


# Reads the header of the file "$1" on whichever machine runs it, with POSIX tools only (a GPU host need not have
# Python): the 8-byte little-endian length, then that many bytes of JSON. Exit 3: unreadable; 4: not safetensors.
HEADER_COMMAND = (
    'n=$(od -An -tu8 -N8 -- "$1") || exit 3; n=$((n)); '
    f'[ "$n" -gt 0 ] && [ "$n" -le {MAX_HEADER} ] || exit 4; tail -c +9 -- "$1" | head -c "$n"'
)


def read_header_on(shell, path: str) -> dict:
    """read_header, through a runner.shell.Shell: the header of `path` as the shell's machine sees it."""
    r = shell.run(["sh", "-c", HEADER_COMMAND, "sh", str(path)], timeout=60)
    if r.returncode == 3 or (not r.ok and r.returncode != 4):
        raise OSError(f"cannot read {path} on {shell.name} ({r.stderr.strip()[:200]})")
    if r.returncode == 4:
        raise NotSafetensors("header length is implausible")
    try:
        header = json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise NotSafetensors(f"header is not JSON ({e})") from e
    if not isinstance(header, dict):
        raise NotSafetensors("header is not a JSON object")
    return header


def info(header: dict) -> WeightsInfo:
    """What a safetensors header says about its weights."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    counts = Counter(v["dtype"] for v in tensors.values() if len(v.get("shape", ())) >= 2)
    dtype = DTYPES.get(counts.most_common(1)[0][0], "unknown") if counts else "unknown"
    names = list(tensors)
    fp8_scaled = "scaled_fp8" in tensors or any(k.endswith(".scale_weight") for k in names)
    size = None
    for k, v in tensors.items():
        if k.endswith("patch_embedding.weight"):
            size = SIZE_BY_DIM.get(v["shape"][0])
    i2v = any(".img_emb." in f".{k}" or ".k_img." in k for k in names)
    return WeightsInfo(dtype=dtype, fp8_scaled=fp8_scaled, size=size, i2v=i2v)
