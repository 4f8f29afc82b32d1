"""What a model weight file holds, read from its header only (no torch, no full read).

A .safetensors file starts with an 8-byte little-endian length and a JSON table of tensor names,
dtypes and shapes. That is enough to tell the dtype of a DiT, whether it is a ComfyUI `fp8_scaled`
file, whether it is the 1.3B or 14B model, and whether it is an I2V model.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER = 100 * 2**20

# safetensors dtype names → the names the job file and trainers use
DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F8_E4M3": "float8", "F8_E5M2": "float8_e5m2"}

# model width of a Wan DiT (config `dim`) → task size (Wan2.2 A14B experts are 14B-wide, TI2V-5B 3072)
SIZE_BY_DIM = {1536: "1.3B", 5120: "14B", 3072: "5B"}


@dataclass(frozen=True)
class WeightsInfo:
    dtype: str  # the dtype of most parameters, as named in DTYPES
    fp8_scaled: bool  # ComfyUI "fp8_scaled": fp8 weights with per-tensor scales
    size: str | None  # "1.3B" / "14B" for a Wan DiT, else None
    i2v: bool  # has the CLIP image-embedding layers of Wan2.1's I2V and FLF2V models
    in_dim: int | None = None  # input channels of patch_embedding: 16 T2V, 36 I2V/FLF2V (latents + mask + image), 48 TI2V-5B
    flf2v: bool = False  # the FLF2V image projection's position embedding (img_emb.emb_pos)

    @property
    def variant(self) -> str | None:
        """What the DiT was trained for, as both trainers tell it (diffusion-pipe models/wan/wan.py by
        config.json and cross_attn.k_img, musubi by --task): t2v, i2v (Wan2.1), i2v-v2 (Wan2.2, no CLIP), flf2v, ti2v."""
        if self.size == "5B":
            return "ti2v"
        if self.in_dim == 16:
            return "t2v"
        if self.in_dim == 36:
            return "flf2v" if self.flf2v else "i2v" if self.i2v else "i2v-v2"
        return None


class NotSafetensors(ValueError):
    pass


# every dtype name safetensors writes; anything else fails the trainers' loaders
SAFETENSORS_DTYPES = frozenset("BOOL U8 I8 F8_E5M2 F8_E4M3 F8_E8M0 F4 F6_E2M3 F6_E3M2 I16 U16 F16 BF16 I32 U32 F32 F64 I64 U64 C64".split())


def read_header(path: Path) -> dict:
    return read_header_and_offset(path)[0]


def read_header_and_offset(path: Path) -> tuple[dict, int]:
    """The header of a local .safetensors file and the offset its tensor data starts at (NotSafetensors: why not).
    Only a regular file is opened: a FIFO would block the read."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise NotSafetensors("it is not a regular file")
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else None
        body = f.read(length) if length is not None and 0 < length <= min(MAX_HEADER, size - 8) else b""
    return parse_header(size, length, body), 8 + (length or 0)


def parse_header(size: int, length: int | None, body: bytes) -> dict:
    """A safetensors header checked the way the loaders read it: the file's size, the 8-byte header length
    (None: the file is shorter than that), and the header's bytes. Raises NotSafetensors saying what is wrong."""
    if size == 0:
        raise NotSafetensors("the file is empty")
    if length is None:
        raise NotSafetensors(f"the file is {size} bytes, shorter than a safetensors header")
    if not 0 < length <= MAX_HEADER:
        raise NotSafetensors(f"its header length ({length}) is implausible: it is not a safetensors file")
    if 8 + length > size:
        raise NotSafetensors(f"its header length ({length} bytes) runs past the end of the file ({size} bytes): the file is cut short")
    try:
        header = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise NotSafetensors(f"its header is not UTF-8 text (byte {8 + e.start})") from None
    except json.JSONDecodeError as e:
        raise NotSafetensors(f"its header is not JSON ({e.msg}, character {e.pos} of the header)") from None
    if not isinstance(header, dict):
        raise NotSafetensors(f"its header is a JSON {type(header).__name__}, not an object")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise NotSafetensors("its __metadata__ is not a JSON object")
            continue
        problem = _tensor_problem(entry, data_size)
        if problem:
            raise NotSafetensors(f"tensor {name[:100]!r} {problem}")
    return header


def _tensor_problem(entry: object, data_size: int) -> str | None:
    if not isinstance(entry, dict):
        return "is not described by a JSON object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
        return f"has no known dtype ({str(dtype)[:40]})"
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        return f"has no valid shape ({str(shape)[:40]})"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        return f"has no valid data_offsets ({str(offsets)[:40]})"
    if offsets[1] > data_size:
        return f"ends {offsets[1] - data_size} bytes past the end of the file: the file is cut short"
    return None


# Reads the header of the file "$1" on whichever machine runs it, with POSIX tools only (a GPU host need not have
# Python): the file's size, a newline, and (when it has 8 bytes) the 8-byte little-endian header length, a newline
# and (when it is plausible) that many bytes of header. Exit 3: unreadable; 5: not a regular file (a FIFO blocks).
HEADER_COMMAND = (
    '[ -f "$1" ] || exit 5; s=$(wc -c < "$1") || exit 3; s=$((s)); echo "$s"; [ "$s" -ge 8 ] || exit 0; '
    'n=$(od -An -tu8 -N8 -- "$1" | tr -d " ") || exit 3; echo "$n"; '
    f'[ ${{#n}} -le 9 ] && [ "$n" -gt 0 ] && [ "$n" -le {MAX_HEADER} ] && [ "$n" -le $((s - 8)) ] || exit 0; '
    'tail -c +9 -- "$1" | head -c "$n"'
)


def read_header_on(shell, path: str) -> dict:
    """read_header, through a runner.shell.Shell: the header of `path` as the shell's machine sees it."""
    r = shell.run(["sh", "-c", HEADER_COMMAND, "sh", str(path)], timeout=60)
    if r.returncode == 5:
        raise NotSafetensors("it is not a regular file")
    lines = r.stdout.split("\n", 2) if r.ok else []
    try:
        size, length = int(lines[0]), (int(lines[1]) if len(lines) > 1 and lines[1] else None)
    except (ValueError, IndexError):
        raise OSError(f"cannot read {path} on {shell.name} ({r.stderr.strip()[:200]})") from None
    body = lines[2] if len(lines) > 2 else ""
    if "\ufffd" in body:  # the shell decoded the bytes as UTF-8 and replaced what was not; all before it was UTF-8
        raise NotSafetensors(f"its header is not UTF-8 text (byte {8 + len(body[:body.index(chr(0xFFFD))].encode())})")
    return parse_header(size, length, body.encode())


# What torch.load needs of a .pth, for each file "$@", one verdict per line: "empty"; "zip" (torch.save's format
# since 1.6) with its end-of-central-directory record in the last 64 KiB, else "cut"; "pickle" (the legacy format
# opens with pickle's PROTO opcode 0x80); anything else "other". POSIX tools only, like HEADER_COMMAND.
PTH_COMMAND = (
    'for f do [ -s "$f" ] || { echo empty; continue; }; h=$(head -c 4 -- "$f" | od -An -tx1 | tr -d " \n"); '
    'if [ "$h" = 504b0304 ]; then tail -c 65558 -- "$f" | od -An -tx1 -v | tr -d " \n" | grep -q 504b0506 && echo zip || echo cut; '
    'else case $h in 80*) echo pickle;; *) echo other;; esac; fi; done'
)
_PTH_PROBLEMS = {
    "empty": "the file is empty",
    "cut": "it is a zip archive (torch.save's format) without its end record: the file is cut short",
    "other": "it is neither torch.save's zip archive nor a pickle: not a .pth file",
}


def pth_problems(shell, paths: list[str]) -> list[str | None]:
    """Why torch.load would fail on each .pth file (None: it has the shape of one), read on the shell's machine."""
    if not paths:
        return []
    r = shell.run(["sh", "-c", PTH_COMMAND, "sh", *paths], timeout=60)
    verdicts = r.stdout.splitlines()
    if not r.ok or len(verdicts) != len(paths):
        raise OSError(f"cannot read the .pth files on {shell.name} ({r.stderr.strip()[:200]})")
    return [_PTH_PROBLEMS.get(v) for v in verdicts]


def info(header: dict) -> WeightsInfo:
    """What a safetensors header says about its weights."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    counts = Counter(v["dtype"] for v in tensors.values() if len(v.get("shape", ())) >= 2)
    dtype = DTYPES.get(counts.most_common(1)[0][0], "unknown") if counts else "unknown"
    names = list(tensors)
    fp8_scaled = "scaled_fp8" in tensors or any(k.endswith(".scale_weight") for k in names)
    size = in_dim = None
    for k, v in tensors.items():
        if k.endswith("patch_embedding.weight"):
            size = SIZE_BY_DIM.get(v["shape"][0]) if v["shape"] else None
            in_dim = v["shape"][1] if len(v["shape"]) > 1 else None
    i2v = any(".img_emb." in f".{k}" or ".k_img." in k for k in names)
    flf2v = any(k.endswith("img_emb.emb_pos") for k in names)
    return WeightsInfo(dtype=dtype, fp8_scaled=fp8_scaled, size=size, i2v=i2v, in_dim=in_dim, flf2v=flf2v)
