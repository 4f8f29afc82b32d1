"""Write random-weight model files from a spec, inside a trainer image (`runner selftest` runs it there as a
one-off container: the files are made on the host that trains, never copied).

Usage: python make_files.py SPEC.json OUT_DIR

Standalone: the standard library, plus numpy for the values (both images have it). Formats by hand:
- safetensors: 8-byte little-endian header length, JSON header (padded to 8 bytes), raw little-endian data;
- torch .pth: the zip archive torch.save writes (archive/data.pkl with _rebuild_tensor_v2 calls and persistent
  storage ids, archive/data/N raw storages aligned to 64 bytes, byteorder, version), stored, zip64.
Values: a random block per tensor, tiled, scaled by the tensor's init std (bf16 = upper 16 bits of float32).
Images without torch (CI's stand-in trainers, which read only headers) get the same files with the data left
as holes (zeros, no disk used); the manifest says which. Where torch exists every .pth is loaded back with
torch.load(weights_only=True) and checked against the spec.

Files that exist and are listed in OUT_DIR/RUNNER-SELFTEST.json with the same fill are kept.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import struct
import sys
import time
import zlib

MANIFEST = "RUNNER-SELFTEST.json"
NOTICE = ("Made by `runner selftest`: random-weight Wan2.1 files in the layout of `runner download`, for smoke tests "
          "only. Not a model. runner owns this folder and may replace it; delete it freely.\n")
SIZES = {"F32": 4, "F16": 2, "BF16": 2}
TORCH_STORAGE = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage"}
TILE = 1 << 20  # values per random block
HF_SEED = "/opt/hf-seed/hub"
T0 = time.time()


def log(msg: str) -> None:
    print(f"[make_files {time.time() - T0:6.1f}s] {msg}", flush=True)


def nbytes(dtype: str, shape: list[int]) -> int:
    n = SIZES[dtype]
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------- values


class Values:
    """Bytes of each tensor: a tiled random block (random) or nothing (holes)."""

    def __init__(self, fill: str, seed: int):
        self.fill = fill
        if fill == "random":
            import numpy as np

            self.np = np
            self.pool = np.random.default_rng(seed).standard_normal(2 * TILE).astype(np.float32)

    def block(self, dtype: str, init: list, key: str) -> bytes:
        np = self.np
        kind, value = init
        if kind == "const":
            a = np.full(TILE, value, dtype=np.float32)
        else:
            start = zlib.crc32(key.encode()) % TILE  # a different window of the pool for each tensor
            a = self.pool[start:start + TILE] * np.float32(value)
        if dtype == "BF16":
            return (a.view(np.uint32) >> 16).astype("<u2").tobytes()
        return a.astype("<f2" if dtype == "F16" else "<f4").tobytes()

    def write(self, f, dtype: str, shape: list[int], init: list, key: str) -> int:
        """Write one tensor's data at the file position (or skip over it); returns its CRC-32."""
        n = nbytes(dtype, shape)
        if self.fill == "holes":
            f.seek(n, os.SEEK_CUR)
            return _crc_of_zeros(n)
        block, crc = self.block(dtype, init, key), 0
        while n > 0:
            chunk = block[:n] if n < len(block) else block
            f.write(chunk)
            crc = zlib.crc32(chunk, crc)
            n -= len(chunk)
        return crc


_ZEROS = bytes(64 << 20)


def _crc_of_zeros(n: int) -> int:
    crc = 0
    while n > 0:
        chunk = memoryview(_ZEROS)[:min(n, len(_ZEROS))]
        crc = zlib.crc32(chunk, crc)
        n -= len(chunk)
    return crc


# ---------------------------------------------------------------- safetensors


def write_safetensors(path: str, tensors: list, values: Values, metadata: dict) -> None:
    header, offset = {"__metadata__": metadata}, 0
    for key, dtype, shape, _ in tensors:
        n = nbytes(dtype, shape)
        header[key] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for key, dtype, shape, init in tensors:
            values.write(f, dtype, shape, init, key)
        f.truncate(8 + len(raw) + offset)


# ---------------------------------------------------------------- torch .pth (zip, stored, zip64)


def _pint(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2 ** 31) <= n < 2 ** 31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _pstr(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _ptuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t" if items else b")"


def torch_pickle(tensors: list) -> bytes:
    """data.pkl of torch.save({key: tensor}): protocol 2, one storage per tensor (key = its index)."""
    out = [b"\x80\x02}("]
    for i, (key, dtype, shape, _) in enumerate(tensors):
        numel = nbytes(dtype, shape) // SIZES[dtype]
        stride, acc = [], 1
        for d in reversed(shape):
            stride.insert(0, acc)
            acc *= d
        storage = _ptuple([_pstr("storage"), f"ctorch\n{TORCH_STORAGE[dtype]}\n".encode(), _pstr(str(i)), _pstr("cpu"), _pint(numel)])
        args = [storage + b"Q", _pint(0), _ptuple([_pint(d) for d in shape]), _ptuple([_pint(s) for s in stride]),
                b"\x89", b"ccollections\nOrderedDict\n)R"]
        out.append(_pstr(key) + b"ctorch._utils\n_rebuild_tensor_v2\n" + _ptuple(args) + b"R")
    out.append(b"u.")
    return b"".join(out)


class ZipWriter:
    """Stored (uncompressed) zip64 entries, each one's data aligned to 64 bytes as torch's writer does."""

    def __init__(self, f):
        self.f, self.entries = f, []

    def add(self, name: str, size: int, write) -> None:
        """write(f) -> crc writes exactly `size` bytes of data at the current position (or seeks over them)."""
        raw = name.encode()
        at = self.f.tell()
        zip64 = struct.pack("<HHQQ", 1, 16, size, size)
        pad = -(at + 30 + len(raw) + len(zip64) + 4) % 64
        extra = zip64 + struct.pack("<HH", 0x4246, pad) + b"\0" * pad  # 'FB' padding field, like torch's
        self.f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, 0, 0xFFFFFFFF, 0xFFFFFFFF, len(raw), len(extra)) + raw + extra)
        crc = write(self.f)
        end = self.f.tell()
        assert end == at + 30 + len(raw) + len(extra) + size, f"{name}: wrote {end - at} bytes"
        self.f.seek(at + 14)
        self.f.write(struct.pack("<I", crc))
        self.f.seek(end)
        self.entries.append((raw, crc, size, at))

    def add_bytes(self, name: str, data: bytes) -> None:
        self.add(name, len(data), lambda f: (f.write(data), zlib.crc32(data))[1])

    def close(self) -> None:
        start = self.f.tell()
        for raw, crc, size, at in self.entries:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, at)
            self.f.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                                     len(raw), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + raw + extra)
        end = self.f.tell()
        n = len(self.entries)
        self.f.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, end - start, start))
        self.f.write(struct.pack("<IIQI", 0x07064B50, 0, end, 1))
        self.f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
        self.f.truncate()


def write_pth(path: str, tensors: list, values: Values) -> None:
    archive = os.path.splitext(os.path.basename(path))[0]
    with open(path, "wb") as f:
        z = ZipWriter(f)
        z.add_bytes(f"{archive}/data.pkl", torch_pickle(tensors))
        z.add_bytes(f"{archive}/byteorder", b"little")
        for i, (key, dtype, shape, init) in enumerate(tensors):
            z.add(f"{archive}/data/{i}", nbytes(dtype, shape), lambda f, t=(dtype, shape, init, key): values.write(f, *t))
        z.add_bytes(f"{archive}/version", b"3\n")
        z.close()


def check_pth(path: str, tensors: list) -> None:
    """torch.load it back (real images only) and compare names, shapes and dtypes; values must be finite."""
    import torch

    names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    assert list(sd) == [t[0] for t in tensors], f"{path}: keys differ from the spec"
    for key, dtype, shape, _ in tensors:
        v = sd[key]
        assert list(v.shape) == shape and v.dtype == names[dtype], f"{path}: {key} is {v.dtype} {list(v.shape)}"
    sample = sd[tensors[0][0]].flatten()[:4096].float()
    assert torch.isfinite(sample).all(), f"{path}: non-finite values"


# ---------------------------------------------------------------- tokenizer


def write_tokenizer(path: str, repo: str) -> str:
    """The umT5 tokenizer folder: a copy of the image's own (seeded from the hub at build), else a STAND-IN."""
    subfolder = os.path.join(*path.split(os.sep)[-2:])
    seeded = sorted(glob.glob(os.path.join(HF_SEED, f"models--{repo.replace('/', '--')}", "snapshots", "*", subfolder)))
    if seeded:
        shutil.copytree(seeded[-1], path)
        return f"umT5 tokenizer {repo}/{subfolder} from the image"
    os.makedirs(path)
    pieces = [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["\u2581", -2.0]]
    pieces += [[c, -3.0] for c in "abcdefghijklmnopqrstuvwxyz0123456789.,'-"]
    pieces += [["\u2581" + c, -3.5] for c in "abcdefghijklmnopqrstuvwxyz"]
    special = [{"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
               for i, p in enumerate(["<pad>", "</s>", "<unk>"])]
    meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    eos = {"SpecialToken": {"id": "</s>", "type_id": 0}}
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special, "normalizer": None,
        "pre_tokenizer": meta, "decoder": meta,
        "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}, eos],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, eos, {"Sequence": {"id": "B", "type_id": 0}}, eos],
                           "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": pieces, "byte_fallback": False},
    }
    files = {
        "tokenizer.json": tok,
        "tokenizer_config.json": {"tokenizer_class": "T5TokenizerFast", "model_max_length": 512, "extra_ids": 0,
                                  "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "additional_special_tokens": []},
        "special_tokens_map.json": {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    }
    for name, content in files.items():
        with open(os.path.join(path, name), "w") as f:
            json.dump(content, f, indent=1)
    with open(os.path.join(path, "STAND-IN.txt"), "w") as f:
        f.write(f"STAND-IN tokenizer written by `runner selftest`, NOT {repo}/{subfolder}: the image holds no seeded "
                "tokenizer. A 73-piece unigram model (pad=0, eos=1, unk=2 as in T5): token ids differ from umT5.\n")
    return "STAND-IN tokenizer (the image has none)"


# ---------------------------------------------------------------- main


def make(entry: dict, out: str, values: Values) -> str | None:
    path = os.path.join(out, entry["path"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    label = None
    if entry["kind"] == "json":
        with open(tmp, "w") as f:
            json.dump(entry["content"], f, indent=2)
    elif entry["kind"] == "tokenizer":
        label = write_tokenizer(tmp, entry["repo"])
    elif entry["kind"] == "safetensors":
        write_safetensors(tmp, entry["tensors"], values, {"format": "pt", "made_by": "runner selftest (random weights)"})
    else:
        write_pth(tmp, entry["tensors"], values)
        if values.fill == "random":
            check_pth(tmp, entry["tensors"])
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    return label


def main() -> None:
    spec_file, out = sys.argv[1], sys.argv[2]
    with open(spec_file) as f:
        spec = json.load(f)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "README.txt"), "w") as f:
        f.write(NOTICE)
    manifest_file = os.path.join(out, MANIFEST)
    manifest = {"made_by": "runner selftest", "hash": spec["hash"], "files": {}, "labels": {}}
    if os.path.exists(manifest_file):
        with open(manifest_file) as f:
            manifest = json.load(f)
    fill = "random" if importlib.util.find_spec("torch") else "holes"
    manifest["fill"] = fill
    values = Values(fill, spec["seed"])
    for entry in spec["files"]:
        path = os.path.join(out, entry["path"])
        if manifest["files"].get(entry["path"]) == fill and os.path.exists(path):
            log(f"kept {entry['path']}")
            continue
        log(f"writing {entry['path']} ({fill})")
        label = make(entry, out, values)
        manifest["files"][entry["path"]] = fill
        if label:
            manifest["labels"][entry["path"]] = label
        with open(manifest_file + ".tmp", "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(manifest_file + ".tmp", manifest_file)
    log(f"done: {len(spec['files'])} files in {out}")


if __name__ == "__main__":
    main()
