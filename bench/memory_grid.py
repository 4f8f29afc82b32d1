#!/usr/bin/env python3
"""Measure peak GPU memory and step time of real musubi-tuner Wan2.1 LoRA training over a grid of settings.

Runs on a machine with an NVIDIA GPU. Weights are random but of the real architecture (musubi's own
WanModel, official key names); latent and T5 caches are synthetic but written by musubi's own cache
writers, so the trainer runs exactly as after `wan_cache_latents.py` / `wan_cache_text_encoder_outputs.py`.
No VAE, T5 or tokenizer is needed.

    python bench/memory_grid.py --musubi-src SRC --out results.jsonl [--wheels DIR] POINT... | --grid core

A POINT is TASK:WxHxF:MODE[:CAP_GIB], e.g. 1.3B:832x480x81:fp8+gc+swap10:23
  MODE joins with '+': bf16 | fp8 (weights), gc (activation checkpointing), gcoff (checkpointing with
  activations offloaded to CPU), swapN (N blocks swapped to CPU), bN (batch size N; default 1).
  CAP_GIB caps the allocator to act as a smaller card (see musubi_probe.py).
Prints one line per point and appends one JSON record per point to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES_CORE = ["bf16+gc", "fp8+gc", "fp8+gc+swap10"]
GRID = {
    "core": [f"1.3B:{s}:{m}" for s in ("832x480x81", "832x480x49", "832x480x33", "480x480x81", "480x480x49", "480x480x33") for m in MODES_CORE]
    + ["1.3B:832x480x81:fp8+gc+swap20", "1.3B:832x480x81:fp8+gcoff"],
    # emulated cards (allocator caps), batch 2, no checkpointing: checks of the fitted model, not inputs to it
    "check": ["1.3B:832x480x81:bf16+gc:22.5", "1.3B:832x480x81:bf16+gc:14.5", "1.3B:832x480x81:fp8+gc+swap20:8.5",
              "1.3B:832x480x81:bf16+gc:9", "1.3B:832x480x33:bf16+gc+b2", "1.3B:832x480x33:bf16", "1.3B:480x480x33:bf16"],
    "14b": ["14B:832x480x33:fp8+gc", "14B:832x480x33:fp8+gc+swap20", "14B:832x480x81:fp8+gc", "14B:832x480x81:fp8+gcoff+swap30"],
}


@dataclass(frozen=True)
class Point:
    task: str  # "1.3B" | "14B"
    width: int
    height: int
    frames: int
    weights: str  # "bf16" | "fp8"
    checkpointing: str  # "none" | "gc" | "gcoff"
    swap: int
    batch: int
    cap_gib: float | None

    @classmethod
    def parse(cls, text: str) -> "Point":
        task, size, mode, *rest = text.split(":")
        w, h, f = (int(x) for x in size.split("x"))
        parts = mode.split("+")
        weights = "fp8" if "fp8" in parts else "bf16"
        ckpt = "gcoff" if "gcoff" in parts else "gc" if "gc" in parts else "none"
        swap = next((int(p[4:]) for p in parts if p.startswith("swap")), 0)
        batch = next((int(p[1:]) for p in parts if p.startswith("b") and p[1:].isdigit()), 1)
        return cls(task, w, h, f, weights, ckpt, swap, batch, float(rest[0]) if rest and rest[0] != "-" else None)

    @property
    def name(self) -> str:
        mode = "+".join([self.weights] + ([self.checkpointing] if self.checkpointing != "none" else [])
                        + ([f"swap{self.swap}"] if self.swap else []) + ([f"b{self.batch}"] if self.batch > 1 else []))
        return f"{self.task}:{self.width}x{self.height}x{self.frames}:{mode}" + (f":{self.cap_gib:g}" if self.cap_gib else "")

    @property
    def latent_frames(self) -> int:
        return (self.frames - 1) // 4 + 1  # Wan VAE: causal first frame, then 4x temporal compression

    @property
    def tokens(self) -> int:
        return self.latent_frames * (self.height // 16) * (self.width // 16)  # 8x VAE, 2x2 patches

    def dit_file_dtype(self) -> str:
        # A 14B bf16 file is 28 GB; the 14B points read an fp8 file and cast (musubi's --fp8_base without --fp8_scaled).
        return "float8_e4m3fn" if self.task == "14B" else "bfloat16"

    def trainer_flags(self) -> list[str]:
        flags = []
        if self.weights == "fp8":
            flags += ["--fp8_base"] + ([] if self.dit_file_dtype().startswith("float8") else ["--fp8_scaled"])
        if self.checkpointing != "none":
            flags.append("--gradient_checkpointing")
        if self.checkpointing == "gcoff":
            flags.append("--gradient_checkpointing_cpu_offload")
        if self.swap:
            flags += ["--blocks_to_swap", str(self.swap)]
        return flags


def make_dit(task: str, dtype_name: str, path: Path) -> None:
    """A random DiT of the real architecture: shapes and key names from musubi's WanModel, values N(0, 0.02)."""
    import torch
    from safetensors.torch import save_file

    from musubi_tuner.wan.configs import WAN_CONFIGS
    from musubi_tuner.wan.modules.model import WanModel

    cfg = WAN_CONFIGS[f"t2v-{task}"]
    with torch.device("meta"):
        model = WanModel(model_type="t2v", model_version="2.1", patch_size=cfg.patch_size, text_len=cfg.text_len,
                         in_dim=cfg.in_dim, dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, out_dim=cfg.out_dim,
                         num_heads=cfg.num_heads, num_layers=cfg.num_layers, window_size=cfg.window_size,
                         qk_norm=cfg.qk_norm, cross_attn_norm=cfg.cross_attn_norm, eps=cfg.eps, attn_mode="torch")
    dtype = getattr(torch, dtype_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device).manual_seed(0)
    sd = {}
    for key, meta in model.state_dict().items():
        if key.endswith(".bias"):
            t = torch.zeros(meta.shape, device=device)
        elif "norm" in key:
            t = torch.ones(meta.shape, device=device)
        else:
            t = torch.randn(meta.shape, device=device, generator=gen) * 0.02
        sd[key] = t.to(dtype).cpu()
    save_file(sd, str(path))
    print(f"[grid] random {task} DiT: {sum(v.numel() for v in sd.values()) / 1e9:.2f} B params, {dtype_name} -> {path}", flush=True)


def make_dataset(root: Path, p: Point, items: int = 2, text_tokens: int = 120) -> Path:
    """Synthetic caches in musubi's own format and a dataset TOML that reads only them."""
    import torch

    from musubi_tuner.dataset.cache_io import save_latent_cache_wan, save_text_encoder_output_cache_wan
    from musubi_tuner.dataset.image_video_dataset import ItemInfo

    tag = f"{p.width}x{p.height}x{p.frames}"
    cache, videos = root / f"cache_{tag}", root / f"videos_{tag}"
    toml = root / f"dataset_{tag}_b{p.batch}.toml"
    if not cache.exists():
        cache.mkdir(parents=True)
        videos.mkdir(parents=True)  # stays empty: training globs the cache directory only
        gen = torch.Generator().manual_seed(1)
        for i in range(items):
            stem = f"item{i}"
            item = ItemInfo(f"{stem}_00000-{p.frames:03d}", "caption", (p.width, p.height), (p.width, p.height, p.frames),
                            frame_count=p.frames)
            item.latent_cache_path = str(cache / f"{stem}_00000-{p.frames:03d}_{p.width:04d}x{p.height:04d}_wan.safetensors")
            item.text_encoder_output_cache_path = str(cache / f"{stem}_wan_te.safetensors")
            latent = torch.randn(16, p.latent_frames, p.height // 8, p.width // 8, generator=gen).to(torch.bfloat16)
            save_latent_cache_wan(item, latent, None, None, None)
            save_text_encoder_output_cache_wan(item, (torch.randn(text_tokens, 4096, generator=gen) * 0.1).to(torch.bfloat16))
    toml.write_text(
        f'[general]\nresolution = [{p.width}, {p.height}]\ncaption_extension = ".txt"\nbatch_size = {p.batch}\n'
        f"enable_bucket = false\nbucket_no_upscale = false\n\n"
        f'[[datasets]]\nvideo_directory = "{videos}"\ncache_directory = "{cache}"\ntarget_frames = [{p.frames}]\n'
        f'frame_extraction = "head"\nnum_repeats = {max(1, p.batch)}\n'
    )
    return toml


def summarize(p: Point, log: Path, rc: int, train_log: str, wall: float) -> dict:
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    start = next((e for e in events if e["event"] == "start"), {})
    setup = next((e for e in events if e["event"] == "setup_done"), {})
    steps = [e for e in events if e["event"] == "step"]
    timed = [s["dt"] for s in steps[1:]] or [s["dt"] for s in steps]  # step 1 includes warm-up

    def peak(key: str, rows: list[dict]) -> float | None:
        values = [r[key] for r in rows if key in r]  # host RSS was added after the first grid
        return round(max(values), 3) if values else None

    return {
        **asdict(p), "name": p.name, "tokens": p.tokens, "rc": rc,
        "oom": "OutOfMemoryError" in train_log or "CUDA out of memory" in train_log,
        "steps": len(steps), "gpu": start.get("gpu"), "torch": start.get("torch"),
        "setup_peak_alloc_gib": setup.get("peak_alloc_gib") and round(setup["peak_alloc_gib"], 3),
        "setup_peak_reserved_gib": setup.get("peak_reserved_gib") and round(setup["peak_reserved_gib"], 3),
        "train_peak_alloc_gib": peak("peak_alloc_gib", steps), "train_peak_reserved_gib": peak("peak_reserved_gib", steps),
        "host_peak_rss_gib": peak("host_peak_rss_gib", steps),
        "context_gib": round(steps[-1]["device_used_gib"] - steps[-1]["reserved_gib"], 3) if steps else None,
        "step_s": round(statistics.median(timed), 3) if timed else None,
        "wall_s": round(wall, 1),
    }


def run_point(p: Point, args: argparse.Namespace, dits: dict[tuple[str, str], Path], timeout: float) -> dict:
    key = (p.task, p.dit_file_dtype())
    if key not in dits:
        dits[key] = args.work / f"wan2.1_t2v_{p.task}_random_{key[1]}.safetensors"
        make_dit(p.task, key[1], dits[key])
    toml = make_dataset(args.work, p)
    slug = p.name.replace(":", "_").replace("+", "-")
    log, out_dir = args.work / f"{slug}.jsonl", args.work / f"out_{slug}"
    log.unlink(missing_ok=True)
    argv = [sys.executable, str(HERE / "musubi_probe.py"), "--task", f"t2v-{p.task}", "--dit", str(dits[key]),
            "--dataset_config", str(toml), "--sdpa", "--mixed_precision", "bf16", "--optimizer_type", "adamw",
            "--learning_rate", "1e-4", "--network_module", "networks.lora_wan", "--network_dim", "32", "--network_alpha", "32",
            "--timestep_sampling", "shift", "--discrete_flow_shift", "3.0", "--max_train_steps", str(min(args.steps, 2) if p.task == "14B" else args.steps),
            "--max_data_loader_n_workers", "1", "--seed", "42", "--output_dir", str(out_dir), "--output_name", "bench",
            *p.trainer_flags()]
    env = {**os.environ, "BENCH_LOG": str(log), "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    if p.cap_gib:
        env["BENCH_CAP_GIB"] = str(p.cap_gib)
    t0 = time.time()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    (args.work / f"{slug}.log").write_text(" ".join(argv) + "\n" + text)
    rec = summarize(p, log, rc, text, time.time() - t0)
    if rc != 0 and not rec["oom"]:
        rec["error_tail"] = text[-1500:]
    return rec


def install_wheels(wheels: Path) -> None:
    target = Path("/tmp/bench-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade",
                    "--target", str(target), *map(str, sorted(wheels.glob("*.whl")))], check=True)
    sys.path.insert(0, str(target))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("points", nargs="*")
    ap.add_argument("--grid", choices=sorted(GRID), action="append", default=[])
    ap.add_argument("--musubi-src", type=Path, required=True, help="musubi-tuner's src/ at the pinned commit")
    ap.add_argument("--wheels", type=Path, help="wheels to install into /tmp/bench-site first (packages the GPU machine lacks)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-grid"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=540, help="seconds; points that cannot start in time are skipped")
    ap.add_argument("--point-timeout", type=float, default=150)
    args = ap.parse_args()
    t_start = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.wheels:
        install_wheels(args.wheels)
    # PyAV is imported by musubi's dataset module but unused when training from caches.
    stubs = HERE / "stubs"
    paths = [str(args.musubi_src.resolve()), str(stubs)] + ([str(Path("/tmp/bench-site"))] if args.wheels else [])
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")])
    sys.path[:0] = paths
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")

    points = [Point.parse(s) for g in args.grid for s in GRID[g]] + [Point.parse(s) for s in args.points]
    dits: dict[tuple[str, str], Path] = {}
    for p in points:
        left = args.deadline - (time.time() - t_start)
        if left < 45:
            print(f"[grid] SKIP {p.name}: {left:.0f}s left", flush=True)
            continue
        rec = run_point(p, args, dits, min(args.point_timeout, left - 10))
        with args.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"[grid] {p.name:40s} rc={rec['rc']:<3} oom={rec['oom']!s:5} tokens={p.tokens:6d} "
              f"setup={rec['setup_peak_reserved_gib']} train_alloc={rec['train_peak_alloc_gib']} "
              f"train_resv={rec['train_peak_reserved_gib']} step={rec['step_s']}s wall={rec['wall_s']}s", flush=True)
        if rec.get("error_tail"):
            print(rec["error_tail"][-600:], flush=True)


if __name__ == "__main__":
    main()
