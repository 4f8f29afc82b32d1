"""Helpers shared by runner's CI stand-in trainers (test doubles, no GPU, no model math).

The same file ships in both stand-ins (musubi-tuner: musubi_tuner/_standin.py, diffusion-pipe:
utils/standin_kit.py); tests/test_standin.py checks that the two copies are identical. Only the stdlib,
PyAV (video/image metadata), numpy and tensorboard (its event file writer) are used.

Knobs (environment): STANDIN_STEP_SECONDS (sleep per training step, default 0.02), STANDIN_FAIL_AT_STEP=N
(raise at step N), STANDIN_NAN_AT_STEP=N (a NaN loss at step N, then finite again), STANDIN_NAN_FROM_STEP=N (NaN
from step N on, as when the weights went NaN), STANDIN_HANG_AT_STEP=N (stop printing and wait for ever at step N,
until SIGTERM), STANDIN_OOM_IN=PHASE (cache-latents | cache-text-encoder | train: raise torch's CUDA out-of-memory
error where that phase moves its model to the GPU), STANDIN_LOG_LINE=TEXT (print TEXT as a log line before the first
training step).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import threading
import time
from pathlib import Path

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
IMAGE_FORMATS = {"png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "image2", "avif", "jpegxl_pipe"}


def banner(trainer: str) -> None:
    print(f"STAND-IN for {trainer} (no GPU, no model math): runner's CI test double", flush=True)


def _env_int(name: str) -> int | None:
    v = os.environ.get(name, "").strip()
    return int(v) if v else None


def step_seconds() -> float:
    return float(os.environ.get("STANDIN_STEP_SECONDS", "0.02") or 0)


def fail_at_step() -> int | None:
    return _env_int("STANDIN_FAIL_AT_STEP")


def nan_at_step() -> int | None:
    return _env_int("STANDIN_NAN_AT_STEP")


class StandinFailure(RuntimeError):
    """Raised at STANDIN_FAIL_AT_STEP to test how a failing trainer is reported."""


def step_knobs(step: int) -> float:
    """Sleep for one step, apply the failure knobs; returns the fake loss of this step."""
    if step == 1:
        if os.environ.get("STANDIN_LOG_LINE"):
            print(os.environ["STANDIN_LOG_LINE"], flush=True)
        out_of_memory_in("train")
    delay = step_seconds()
    if delay > 0:
        time.sleep(delay)
    if fail_at_step() == step:
        raise StandinFailure(f"STANDIN_FAIL_AT_STEP={step}: simulated trainer failure at step {step}")
    if _env_int("STANDIN_HANG_AT_STEP") == step:
        while True:  # a hung trainer: no output, no exit; SIGTERM's handler still runs
            time.sleep(3600)
    nan_from = _env_int("STANDIN_NAN_FROM_STEP")
    if nan_at_step() == step or (nan_from is not None and step >= nan_from):
        return float("nan")
    return 0.1 + 0.05 / step


# ---------------------------------------------------------------- CUDA out of memory


class OutOfMemoryError(RuntimeError):
    """Stands for torch.OutOfMemoryError: a traceback names it `torch.OutOfMemoryError`, as torch's does."""


OutOfMemoryError.__module__ = "torch"

# torch >= 2.1's message format (c10/cuda/CUDACachingAllocator.cpp) with figures of a 12 GiB card while umT5-XXL
# (10.85 GiB allocated, measured on an H200) moves to the GPU
OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 40.00 MiB. GPU 0 has a total capacity of 11.50 GiB of which 17.25 MiB is free. "
    "Including non-PyTorch memory, this process has 11.48 GiB memory in use. Of the allocated memory 10.85 GiB is allocated "
    "by PyTorch, and 101.50 MiB is reserved by PyTorch but unallocated. If reserved but unallocated memory is large try "
    "setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See documentation for Memory "
    "Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
)


def out_of_memory_in(phase: str, hang: bool = False) -> None:
    """STANDIN_OOM_IN=phase: raise torch's out-of-memory error here. hang: like diffusion-pipe, whose non-daemon
    caching process keeps the interpreter from exiting after the traceback, never exit (holding the "GPU")."""
    if os.environ.get("STANDIN_OOM_IN") != phase:
        return
    if hang:
        threading.Thread(target=threading.Event().wait, name="caching process").start()
    raise OutOfMemoryError(OOM_MESSAGE)


# ---------------------------------------------------------------- SIGTERM


def on_sigterm(cleanup) -> None:
    """On SIGTERM run `cleanup`, then die by SIGTERM like an unhandled python process (exit -15 / 143)."""

    def handler(signum, _frame):
        try:
            cleanup()
        finally:
            print("received SIGTERM, exiting", file=sys.stderr, flush=True)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------- safetensors by hand


def write_safetensors(path: str | os.PathLike, tensors: dict[str, tuple], metadata: dict[str, str] | None = None) -> Path:
    """Write tensors {name: (dtype, shape[, raw bytes])}, zeros unless bytes are given: 8-byte little-endian
    header length, JSON header, then the data."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    offset = 0
    data: list[tuple[int, bytes]] = []
    for name, (dtype, shape, *value) in tensors.items():
        n = DTYPE_SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        if value:
            data.append((offset, value[0]))
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data to 8 bytes with spaces
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + offset)  # zeros, except the values given
        for at, value in data:
            f.seek(8 + len(raw) + at)
            f.write(value)
    os.replace(tmp, path)
    return path


def scalar(dtype: str, value: float) -> bytes:
    """One float as the bytes of a 0-d tensor of dtype F32, F16 or BF16."""
    if dtype == "F16":
        return struct.pack("<e", value)
    f32 = struct.pack("<f", value)
    return f32[2:] if dtype == "BF16" else f32


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict, dict]:
    """(tensors, metadata) from a safetensors header; ValueError when it is not one."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file ({e})") from None
    meta = header.pop("__metadata__", None) or {}
    return header, meta


# ---------------------------------------------------------------- media metadata (PyAV)


def probe_video(path: str | os.PathLike) -> tuple[int, float, int, int]:
    """(frame count, fps, width, height) of the first video stream, counting frames by decoding."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 0) or 0.0
        w, h = s.codec_context.width, s.codec_context.height
        n = 0
        for frame in c.decode(video=0):
            if n == 0:
                w, h = frame.width, frame.height
            n += 1
    return n, fps, w, h


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image, decoded by FFmpeg through PyAV."""
    import av

    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            return frame.width, frame.height
    raise ValueError(f"{path}: no image could be decoded")


# ---------------------------------------------------------------- progress lines


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """tqdm-like lines (`steps:  40%|####      | 4/10 [00:01<00:02,  3.50it/s, avr_loss=0.1]`) on stderr, one per update."""

    def __init__(self, total: int, desc: str = "steps", initial: int = 0):
        self.total, self.desc, self.n = total, desc, initial
        self.start = time.monotonic()
        self.initial = initial

    def update(self, n: int = 1, **postfix) -> None:
        self.n += n
        elapsed = time.monotonic() - self.start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        remaining = (self.total - self.n) / rate if rate > 0 else 0.0
        frac = self.n / self.total if self.total else 1.0
        bar = ("#" * int(frac * 10)).ljust(10)
        extra = "".join(f", {k}={v}" for k, v in postfix.items())
        speed = f"{1 / rate:5.2f}s/it" if 0 < rate < 1 else f"{rate:5.2f}it/s"  # tqdm turns the rate over below 1 it/s
        print(f"{self.desc}: {frac * 100:3.0f}%|{bar}| {self.n}/{self.total} [{_clock(elapsed)}<{_clock(remaining)}, {speed}{extra}]", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- TensorBoard


class EventWriter:
    """Scalars as torch's SummaryWriter writes them (simple_value summaries), through tensorboard's EventFileWriter, which
    SummaryWriter itself uses: a real event file. Unlike SummaryWriter (flush every 120 s) it flushes at every scalar."""

    def __init__(self, logdir: str | os.PathLike):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))
        self._writer.flush()
