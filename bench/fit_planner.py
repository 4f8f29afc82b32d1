#!/usr/bin/env python3
"""Fit the planner's memory model to the measured runs and write runner/gpu/memory_fit.py.

    python bench/fit_planner.py [bench/data/musubi_h100.jsonl bench/data/gpu_h200.jsonl bench/data/gpu_h200_wan22.jsonl ...]

musubi_h100.jsonl (musubi training, bench/memory_grid.py): per (model, weights, checkpointing) peak reserved GiB =
a + b * tokens, b by least squares over the uncapped runs without swap or offload, a raised to the highest point
(so the model is never below a measured run); then the swap overhead (largest residual) and the offloaded share
(smallest saving) from the runs that have them. gpu_h200.jsonl (bench/gpu_smoke.py, one line per phase): diffusion-
pipe's own training line, swap overhead and memory outside the allocator; both trainers' caching phases; host RAM.
gpu_h200_wan22.jsonl (the same, Wan2.2): diffusion-pipe's TI2V-5B and A14B expert, each at one size: its line through
that point with the 1.3B slope scaled by width (runner.gpu.memmodel.MEASURED_BASE); the VAE's weights in its caching
phase; host RAM.
Prints every measured phase beside the model's estimate of its device peak, with the ratio (must be 1.00-1.15).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.gpu.memmodel import (MEASURED_BASE, SCALED_FROM, CachingFit, MemoryFit, dit_bf16_gib, gpu_gib, host_gib, outside_gib,  # noqa: E402
                                  vae_beyond_wan21_gib, width_scaled_slope)
from runner.gpu.wan import ARCH  # noqa: E402

OUT = ROOT / "runner" / "gpu" / "memory_fit.py"
DATA = ROOT / "bench" / "data"
# Not measured by these runs, taken as reported: diffusion-pipe reads the whole bf16 14B DiT into RAM before
# converting it to float8 (issue 9: 41-45 GiB peak RSS on an H200, examples/t2v-14B-24gb-diffpipe.yaml).
DIFFPIPE_14B_HOST_RSS_GIB = 45.0


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def envelope(points: list[tuple[float, float]], b: float | None = None) -> tuple[float, float]:
    """(a, b): b by least squares unless given, a the smallest intercept that keeps every point on or under the line."""
    if b is None:
        b = slope([x for x, _ in points], [y for _, y in points]) if len({x for x, _ in points}) > 1 else 0.0
    return round(max(y - b * x for x, y in points) + 5e-4, 4), round(b, 10)


def frame_pixels(r: dict) -> int:
    return r["width"] * r["height"]


def tokens(r: dict) -> int:
    return r["tokens"] * r["batch"]


def fit_musubi_training(rows: list[dict]) -> dict:
    ok = [r for r in rows if r["rc"] == 0 and r["cap_gib"] is None]
    plain = [r for r in ok if r["swap"] == 0 and r["checkpointing"] != "gcoff" and r["batch"] == 1]
    linear = {}
    for key in sorted({(r["task"], r["weights"], r["checkpointing"]) for r in plain}):
        pts = [(tokens(r), r["train_peak_reserved_gib"]) for r in plain if (r["task"], r["weights"], r["checkpointing"]) == key]
        if len({x for x, _ in pts}) >= 2:
            linear[key] = envelope(pts)
    partial = MemoryFit("", "", linear, {t: 0.0 for t in ARCH}, 0.0, {}, 0.0)

    def predicted(r: dict, f: MemoryFit, ckpt: str | None = None) -> float | None:
        return gpu_gib(f, r["task"], r["weights"], ckpt or r["checkpointing"], r["swap"], tokens(r))

    swap_overhead = {}
    for task in (t for t in ARCH if t not in SCALED_FROM):  # a scaled size takes its base size's
        res = [r["train_peak_reserved_gib"] - predicted(r, partial) for r in ok
               if r["task"] == task and r["swap"] and r["checkpointing"] == "gc" and predicted(r, partial) is not None]
        swap_overhead[task] = round(max(res) + 5e-4, 4) if res else 0.0
    partial = MemoryFit("", "", linear, swap_overhead, 0.0, {}, 0.0)
    shares = []
    for r in ok:
        if r["checkpointing"] == "gcoff" and predicted(r, partial, "gc") is not None:
            saved = predicted(r, partial, "gc") - r["train_peak_reserved_gib"]
            shares.append(saved / (ARCH[r["task"]].checkpoint_gib_per_token() * tokens(r)))
    outside = {t: round(max(r["context_gib"] for r in ok if r["task"] == t), 3) for t in sorted({r["task"] for r in ok})}
    return {"source": "", "gpu": next(r["gpu"] for r in ok if r.get("gpu")), "linear": linear, "swap_overhead_gib": swap_overhead,
            "offload_fraction": round(min(shares) - 5e-4, 4), "outside_allocator_gib": outside, "host_base_gib": 1.27}


def outside(r: dict) -> float:
    return r["device_peak_gib"] - r["peak_reserved_gib"]


def fit_h200(rows: list[dict], base: dict) -> dict:
    done = [r for r in rows if r["rc"] == 0 and r.get("device_peak_gib") is not None]
    train = [r for r in done if r["trainer"] == "diffpipe" and r["phase"] == "train"]
    plain = [r for r in train if r["swap"] == 0 and r["cap_gib"] is None]
    trainer_linear = {}
    one_size = []
    for key in sorted({(r["task"], r["weights"], r["checkpointing"]) for r in plain}, key=lambda k: (k[0] != MEASURED_BASE, k)):
        pts = [(tokens(r), r["peak_reserved_gib"]) for r in plain if (r["task"], r["weights"], r["checkpointing"]) == key]
        task, weights, ckpt = key
        # a model measured at one size only: one point gives the intercept, the slope is the base size's scaled by width
        if task != MEASURED_BASE and len({x for x, _ in pts}) == 1:
            one_size.append(("diffpipe", *key))
            trainer_linear[("diffpipe", *key)] = envelope(pts, width_scaled_slope(trainer_linear[("diffpipe", MEASURED_BASE, weights, ckpt)][1], task))
        else:
            trainer_linear[("diffpipe", *key)] = envelope(pts)
    partial = MemoryFit(**base, trainer_linear=trainer_linear, trainer_swap_overhead_gib={("diffpipe", "1.3B"): 0.0})
    res = [r["peak_reserved_gib"] - gpu_gib(partial, r["task"], r["weights"], r["checkpointing"], r["swap"], tokens(r), 32,
                                             r["optimizer"] in ("AdamW8bitKahan", "adamw8bit"), "diffpipe") for r in train if r["swap"]]

    def host_factor(r: dict) -> float:
        return (r["host_peak_rss_gib"] - base["host_base_gib"]) / dit_bf16_gib(r["task"])

    # diffusion-pipe reads the whole file and converts it: a bf16 file (Wan2.1's) once; an fp16 one (Comfy-Org's Wan2.2
    # and TI2V-5B files) is held twice for a while, as read and cast to bf16 (2.13 and 2.04 against 1.64)
    def factor(rows: list[dict]) -> float:
        return round(max(host_factor(r) for r in rows) + 5e-4, 3)

    plain_train = [r for r in train if not r["swap"]]
    same = [r for r in plain_train if r.get("dit_file_dtype", "bf16") == "bf16"]
    host_factors = {("diffpipe", "same"): max(factor(same), round((DIFFPIPE_14B_HOST_RSS_GIB - base["host_base_gib"]) / dit_bf16_gib("14B"), 3)),
                    ("diffpipe", "cast"): factor([r for r in plain_train if r not in same])}
    caching = {}
    for trainer in ("diffpipe", "musubi"):
        phases = [r for r in rows if r["trainer"] == trainer and r["phase"] != "train" and r.get("peak_reserved_gib")]
        lat = [r for r in phases if r["phase"] in ("caching", "cache-latents") and r["rc"] == 0]
        text = [r for r in phases if r["phase"] in ("caching", "cache-text-encoder")]
        # diffusion-pipe: umT5's peak and the caching RSS less what a VAE larger than Wan2.1's adds (memmodel.CachingFit)
        vae = {r["task"]: vae_beyond_wan21_gib(r["task"]) if trainer == "diffpipe" else 0.0 for r in phases}
        t5 = {d: round(max(r["peak_reserved_gib"] - vae[r["task"]] for r in text if r["te_dtype"] == d) + 5e-4, 3)
              for d in sorted({r["te_dtype"] for r in text})}
        if trainer == "diffpipe":  # one process caches both: its peak is umT5's, whatever the frame count
            latents, per_text, weights = (0.0, 0.0), 0.0, {}
        else:
            latents = envelope([(frame_pixels(r), r["peak_reserved_gib"]) for r in lat])
            # umT5 pads every text to 512 tokens, so a batch costs the same whatever the captions: runs that ended
            # after loading umT5 give its weights, runs that encoded a batch give the cost per text above them
            loaded = [r for r in text if r["rc"] != 0]
            weights = {d: round(max(r["peak_reserved_gib"] for r in loaded if r["te_dtype"] == d), 3) for d in sorted({r["te_dtype"] for r in loaded})}
            per_text = round(max((r["peak_reserved_gib"] - weights[r["te_dtype"]]) / r["te_batch"]
                                 for r in text if r["rc"] == 0) + 5e-4, 4)
        caching[trainer] = CachingFit(latents, t5, per_text, weights, round(max(outside(r) for r in phases if r.get("device_peak_gib")) + 5e-3, 3),
                                      {d: round(max(r["host_peak_rss_gib"] - vae[r["task"]] for r in phases
                                                    if r["te_dtype"] == d and r["phase"] != "cache-latents"), 2) for d in t5},
                                      trainer == "diffpipe")
    return {"trainer_linear": trainer_linear, "one_size": tuple(one_size), "trainer_swap_overhead_gib": {("diffpipe", "1.3B"): round(max(res) + 5e-4, 4)},
            "trainer_outside_gib": {"diffpipe": round(max(outside(r) for r in train) + 5e-3, 3)},
            "trainer_host_dit_factor": host_factors, "caching": caching}


def cover_musubi_h200_training(f: MemoryFit, rows: list[dict]) -> MemoryFit:
    """musubi's training line comes from the H100 grid; where a newer torch on the H200 peaked higher in device memory,
    raise memory outside the allocator for that model size so the model stays at or above every measured run."""
    outside = dict(f.outside_allocator_gib)
    for r in rows:
        if r["trainer"] == "musubi" and r["phase"] == "train" and r["rc"] == 0 and not r["cap_gib"]:
            short = r["device_peak_gib"] - estimate(f, r)
            if short > 0:
                outside[r["task"]] = round(max(outside[r["task"]], f.outside_allocator_gib[r["task"]] + short + 5e-3), 3)
    return MemoryFit(**{**f.__dict__, "outside_allocator_gib": outside})


def estimate(f: MemoryFit, r: dict) -> float | None:
    """The model's device peak for one measured phase."""
    if r["phase"] == "train":
        alloc = gpu_gib(f, r["task"], r["weights"], r["checkpointing"], r["swap"], tokens(r), 32,
                        r["optimizer"] in ("AdamW8bitKahan", "adamw8bit"), r["trainer"])
        return None if alloc is None else alloc + outside_gib(f, r["trainer"], r["task"])
    cf = f.caching[r["trainer"]]
    if r["phase"] == "cache-latents":
        return cf.latents_gib(frame_pixels(r)) + cf.outside_gib
    if r["phase"] == "cache-text-encoder" and r["rc"] != 0:  # ended after loading umT5: compare the load only
        return cf.t5_gib[r["te_dtype"]] + cf.outside_gib
    return cf.gpu_gib(r["te_dtype"], r["te_batch"], frame_pixels(r), r["task"])


def write(f: MemoryFit, sources: str) -> None:
    fields = ", ".join(f"{k}={getattr(f, k)!r}" for k in f.__dataclass_fields__)
    OUT.write_text(
        f'"""Generated by bench/fit_planner.py from {sources}; do not edit by hand, rerun the fit."""\n\n'
        "from runner.gpu.memmodel import CachingFit, MemoryFit\n\n"
        f"FIT = MemoryFit({fields})\n"
    )


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:]] or [DATA / "musubi_h100.jsonl", DATA / "gpu_h200.jsonl", DATA / "gpu_h200_wan22.jsonl"]
    musubi, *h200_files = ([json.loads(x) for x in p.read_text().splitlines() if x.strip()] for p in paths)
    h200 = [r for rows in h200_files for r in rows]
    base = fit_musubi_training(musubi)
    base["source"] = " + ".join(str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in paths)
    f = cover_musubi_h200_training(MemoryFit(**base, **fit_h200(h200, base)), h200)
    errs = [gpu_gib(f, r["task"], r["weights"], r["checkpointing"], r["swap"], tokens(r)) - r["train_peak_reserved_gib"]
            for r in musubi if r["rc"] == 0]
    rel = max(e / r["train_peak_reserved_gib"] for e, r in zip(errs, (r for r in musubi if r["rc"] == 0)))
    f = MemoryFit(**{**f.__dict__, "max_abs_error_gib": math.ceil(max(map(abs, errs)) * 1000) / 1000,
                     "max_rel_error": math.ceil(rel * 10000) / 10000})
    write(f, base["source"])
    print(f"fit written to {OUT.relative_to(ROOT)}")
    print(f"{'musubi training (H100)':42s} {'tokens':>7s} {'measured':>9s} {'model':>7s} {'error':>6s} {'step_s':>7s}")
    for r in musubi:
        p = gpu_gib(f, r["task"], r["weights"], r["checkpointing"], r["swap"], tokens(r))
        meas = r["train_peak_reserved_gib"]
        status = "OOM" if r["oom"] else (f"{meas:9.2f}" if meas is not None else "-")
        err = f"{p - meas:+6.2f}" if p is not None and meas is not None and not r["oom"] else ""
        print(f"{r['name']:42s} {tokens(r):7d} {status:>9s} {p:7.2f} {err:>6s} {r['step_s'] or '-':>7}")
    print(f"\n{'H200 phase (device peak, GiB)':44s} {'rc':>3s} {'measured':>9s} {'model':>7s} {'ratio':>6s} {'RSS':>6s} {'model':>6s}")
    for r in h200:
        if r.get("device_peak_gib") is None:
            continue
        e = estimate(f, r)
        host = ""
        if r["phase"] == "train":
            host = f"{host_gib(f, r['task'], r['checkpointing'], tokens(r), trainer=r['trainer'], swap=r['swap'], dit_file_bf16=r.get('dit_file_dtype', 'bf16') == 'bf16'):6.1f}"
        elif r["phase"] != "cache-latents":
            host = f"{f.caching[r['trainer']].host(r['te_dtype'], r['task']):6.1f}"
        print(f"{r['name'] + ' ' + r['phase']:44s} {r['rc']:3d} {r['device_peak_gib']:9.2f} {e:7.2f} {e / r['device_peak_gib']:6.3f} "
              f"{r['host_peak_rss_gib']:6.1f} {host}")
    print(f"musubi training: max |error| {f.max_abs_error_gib} GiB, max relative {f.max_rel_error:.1%} (never below a measured run)")


if __name__ == "__main__":
    main()
