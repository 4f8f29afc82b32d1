#!/usr/bin/env python3
"""GPU run of `runner caption`'s captioner on the real-size Qwen2.5-VL-7B architecture with random weights: GiB and
seconds per video at 33 and 81 frames (and any other count), beside runner's estimate (runner.gpu.captioning).

    # in the captioner image (`runner build caption`), from the repository root:
    docker run --rm --gpus all -v "$PWD:/w" -w /w runner-caption:latest python bench/gpu_caption.py --jsonl /w/bench/data/gpu_caption.jsonl
    # or with a Python that has torch 2.5.1, torchvision 0.20.1, transformers 4.57.6, accelerate, av, pillow, numpy
    # (and bitsandbytes 0.49.2 for --quant 8bit/4bit): images/caption/requirements.lock is that set
    python bench/gpu_caption.py [--size 7b] [--frames 33 81] [--quant none 8bit 4bit] [--scratch DIR] [--jsonl FILE]

What is real: transformers' Qwen2_5_VLForConditionalGeneration at the 7B's config (28 layers × 3584, a 32-layer vision
tower; images/caption/app/random_qwen.py), its processor and video processor, and the captioner's own code path
(images/caption/app/caption_media.py: PyAV decodes an mp4, frames sampled at 16 fps and sized to at most 448×448 as
runner sends them, greedy generate). What is made up: the weights (random) and the tokenizer (a small BPE with Qwen's
special tokens); every caption runs to its full length (min_new_tokens = max_new_tokens), since random weights stop at
random. --quant 8bit/4bit saves the random bf16 model to --scratch (about 17 GB) and loads it back through
bitsandbytes as `runner caption --model qwen2.5-vl-7b-8bit/-4bit` does.

One JSON line per (quant, frames, run): peak allocated and reserved GiB (torch.cuda), seconds per video, frames and
vision tokens, and the estimate. Run 1 of each size includes CUDA's one-time kernel setup; run 2 is the steady figure.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "images" / "caption" / "app"))

import av  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import caption_media  # noqa: E402
import random_qwen  # noqa: E402

MAX_PIXELS = 448 * 448  # runner.caption.run.FRAME_PIXELS
FPS = 16.0  # a Wan2.1 job's training fps (runner caption --job)


def write_video(path: Path, frames: int, width: int = 832, height: int = 480) -> Path:
    """A moving gradient at 16 fps, H.264: a training clip's size and length."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(int(FPS)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x = np.arange(width)[None, :, None]
        for i in range(frames):
            img = np.broadcast_to((x + i * 5) % 256, (height, width, 3)).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def estimate(size: str, quant: str | None, frames: int, new_tokens: int) -> dict | None:
    """runner's estimate, where runner's own modules import (not inside the image, which has no runner)."""
    try:
        sys.path.insert(0, str(REPO))
        from runner.gpu.captioning import estimate as runner_estimate
        from runner.models.captioner import PRESETS
    except ImportError:
        return None
    name = {"7b": "qwen2.5-vl-7b", "3b": "qwen2.5-vl-3b"}.get(size, "none") + (f"-{quant}" if quant else "")
    if name not in PRESETS:
        return None
    e = runner_estimate(PRESETS[name], frames, MAX_PIXELS, new_tokens)
    return {"preset": name, "peak_gib": round(e.peak_gib, 2), "vision_tokens": e.vision_tokens}


def load(size: str, quant: str, scratch: Path, saved: dict):
    """(model, processor): bf16 built on the device; 8bit/4bit loaded back from a saved copy of it."""
    device, dtype = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
    if quant == "none":
        return random_qwen.build(size, device, dtype)
    if "path" not in saved:
        model, processor = random_qwen.build(size, device, dtype)
        saved["path"] = scratch / f"random-qwen2.5-vl-{size}"
        model.save_pretrained(saved["path"])
        processor.save_pretrained(saved["path"])
        del model
        free()
    return caption_media.load(str(saved["path"]), quant)


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peaks() -> dict:
    if not torch.cuda.is_available():
        return {"peak_allocated_gib": None, "peak_reserved_gib": None, "gpu": "CPU (a smoke run: no memory figures)"}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2), "gpu": torch.cuda.get_device_name()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("7b", "3b", "tiny"), default="7b", help="tiny: a CPU smoke run of this script")
    ap.add_argument("--frames", type=int, nargs="+", default=[33, 81])
    ap.add_argument("--quant", nargs="+", choices=("none", "8bit", "4bit"), default=["none"])
    ap.add_argument("--new-tokens", type=int, default=80, help="caption length in tokens (--style short: 80, detailed: 300)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--scratch", type=Path, default=None, help="folder for the saved random model of --quant 8bit/4bit (about 17 GB)")
    ap.add_argument("--jsonl", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-caption-"))
    videos = {n: write_video(tmp / f"clip{n}.mp4", n) for n in args.frames}
    work = {"prompt": "Describe this video in one sentence.", "fps": FPS, "max_frames": 96, "max_pixels": MAX_PIXELS,
            "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    rows, saved = [], {}
    for quant in args.quant:
        model, processor = load(args.size, quant, args.scratch or tmp, saved)
        for n, video in videos.items():
            for run in range(1, args.runs + 1):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                _, seen = caption_media.caption(model, processor, str(video), "video", work)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                row = {"size": args.size, "quant": ("bf16" if torch.cuda.is_available() else "fp32") if quant == "none" else quant, "frames": n, "frames_seen": seen, "run": run,
                       "s_per_video": round(time.perf_counter() - start, 2), **peaks(), "new_tokens": args.new_tokens,
                       "estimate": estimate(args.size, None if quant == "none" else quant, seen, args.new_tokens)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.jsonl:
                    with args.jsonl.open("a") as f:
                        f.write(json.dumps(row) + "\n")
        del model
        free()
    print("\n| quant | frames | run | s/video | peak allocated GiB | peak reserved GiB | estimate GiB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        est = r["estimate"]["peak_gib"] if r["estimate"] else "n/a"
        print(f"| {r['quant']} | {r['frames']} | {r['run']} | {r['s_per_video']} | {r['peak_allocated_gib']} | {r['peak_reserved_gib']} | {est} |")


if __name__ == "__main__":
    main()
