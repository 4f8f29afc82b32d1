#!/usr/bin/env python3
"""GPU run of `runner sample`'s real path: a sample plan rendered by runner, run by musubi-tuner's own
wan_generate_video.py (and convert_lora.py for a diffusion-pipe LoRA), each video checked and measured.

    # 1. on any machine with runner installed: the plan `runner sample` runs for the job's epoch-1 LoRA
    python bench/gpu_sample.py render JOB.yaml --out PLAN [--prompt TEXT ...]
    # 2. on the GPU machine, musubi's source at its pin and its packages (PyAV, torch, ...):
    python bench/gpu_sample.py run --plan PLAN --src MUSUBI_ROOT --models MODELS --work DIR --name NAME \
        [--lora FILE] [--tokenizer DIR] --jsonl bench/data/gpu_samples.jsonl

What is real: runner's sample plan (every step's argv as `runner sample` renders it for the job's trainer: the key
conversion of a diffusion-pipe LoRA, then one wan_generate_video.py per prompt), run unchanged but for the container
paths, mapped to local folders as bench/gpu_smoke.py maps them. What is made up: the model weights (random, real
architecture, made beforehand in MODELS), the LoRA unless --lora gives one (random, rank 4, in the format the
job's trainer saves: musubi's `lora_unet_…lora_down/up` + alpha, or diffusion-pipe's `diffusion_model.…lora_A/B`),
and, where the hub is unreachable, the umT5 tokenizer (STAND-IN, from --tokenizer).

One JSON line per step: exit code, wall time, the allocator's peak (bench/probe/sitecustomize.py), the device peak
(NVML, idle baseline subtracted), the process's peak RSS, and for a video step the mp4 read back with PyAV (frames,
width, height, fps) against what the step asked for, and runner's estimate (runner.gpu.sampling) beside the peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gpu_smoke import DevicePoller, add_run_args, mapper, run_step, seed_tokenizer  # noqa: E402

RANK = 4
BLOCKS, DIM, FFN = 30, 1536, 8960  # Wan2.1 T2V-1.3B (runner.gpu.wan.ARCH)


def render(job_file: Path, out: Path, prompts: list[str]) -> None:
    """The plan `runner sample --epochs 1` runs for the job, for the epoch-1 LoRA where its trainer saves it."""
    from runner.job import render as job_render
    from runner.jobs import sample

    resolved = job_render.load_checked(job_file)
    trainer = resolved.job.trainer.value
    r = sample.as_musubi(resolved)
    rel = f"{r.job.name}-000001.safetensors" if trainer == "musubi" else "20260101_00-00-00/epoch1/adapter_model.safetensors"
    lora = sample._musubi_lora(r.job, rel) if trainer == "musubi" else sample._diffpipe_lora(rel)
    plan = sample.sample_plan(r, [lora], prompts or list(r.job.samples.prompts) or ["a red ball bouncing on green grass"], out)
    job_render.write(plan, out)
    print(f"[gpu_sample] {out}: {len(plan.steps)} steps for the {trainer} LoRA {rel}; GPU memory, runner's estimate: "
          f"{sample.memory_estimate(r).describe()}")


def lora_modules() -> list[tuple[str, int, int]]:
    """(module, in, out) of every LoRA target of the 1.3B DiT: both trainers' ten linear layers per block."""
    mods = []
    for i in range(BLOCKS):
        for attn in ("self_attn", "cross_attn"):
            mods += [(f"blocks.{i}.{attn}.{p}", DIM, DIM) for p in "qkvo"]
        mods += [(f"blocks.{i}.ffn.0", DIM, FFN), (f"blocks.{i}.ffn.2", FFN, DIM)]
    return mods


def make_lora(path: Path, diffpipe: bool) -> None:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    sd = {}
    for module, fan_in, fan_out in lora_modules():
        down = torch.randn(RANK, fan_in, generator=g) * 0.01
        up = torch.randn(fan_out, RANK, generator=g) * 0.01
        if diffpipe:
            sd[f"diffusion_model.{module}.lora_A.weight"], sd[f"diffusion_model.{module}.lora_B.weight"] = down, up
        else:
            name = "lora_unet_" + module.replace(".", "_")
            sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"], sd[f"{name}.alpha"] = down, up, torch.tensor(float(RANK))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, str(path))


def flag(argv: list[str], name: str, n: int = 1):
    i = argv.index(name)
    return argv[i + 1] if n == 1 else argv[i + 1: i + 1 + n]


def read_video(folder: Path) -> dict:
    import av

    videos = sorted(folder.glob("*.mp4"))
    if not videos:
        return {"video": None}
    with av.open(str(videos[-1])) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        return {"video": str(videos[-1]), "frames": frames, "width": s.width, "height": s.height, "fps": float(s.average_rate)}


def run(args: argparse.Namespace) -> int:
    from runner.gpu.sampling import estimate

    plan = json.loads((args.plan / "plan.json").read_text())
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    to_local, table = mapper(plan, work, args.models.resolve())
    for container, local in table.items():
        if container != "/models":
            local.mkdir(parents=True, exist_ok=True)
    steps = [(s["name"], [to_local(a) for a in s["argv"]], s.get("env", {})) for s in plan["steps"]]
    converts = [argv for name, argv, _ in steps if name.startswith("convert-")]
    lora_at = Path(flag(converts[0], "--input") if converts else flag(steps[0][1], "--lora_weight"))
    if args.lora:
        lora_at.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.lora, lora_at)
    else:
        make_lora(lora_at, diffpipe=bool(converts))
        print(f"[gpu_sample] random rank-{RANK} LoRA in {'diffusion-pipe' if converts else 'musubi'}'s format → {lora_at}")
    for argv in converts:  # as the plan's make-loras-folder step does: convert_lora.py makes no folder
        Path(flag(argv, "--output")).parent.mkdir(parents=True, exist_ok=True)
    hf_home = work / "hf-cache"
    if args.tokenizer:
        seed_tokenizer(hf_home, args.tokenizer)
        print(f"[gpu_sample] STAND-IN umT5 tokenizer ({args.tokenizer}) seeded into {hf_home}")
    probe_log, log = work / "probe.jsonl", work / "musubi.log"
    env = {**os.environ, **{k: to_local(v) for k, v in plan["env"].items()}, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(HERE / "probe"), str(args.src.resolve() / "src"), os.environ.get("PYTHONPATH", "")]),
           "BENCH_LOG": str(probe_log)}
    rows = []
    with DevicePoller() as poller:
        for name, argv, step_env in steps:
            t0 = time.time()
            rc, wall, oom = run_step(argv, args.src.resolve(), [{**env, **step_env, "BENCH_PHASE": "sample"}], log, args.timeout)
            events = [json.loads(x) for x in probe_log.read_text().splitlines()] if probe_log.exists() else []
            probe_log.unlink(missing_ok=True)
            closed = [e for e in events if e["event"] == "phase"]
            row = {"name": args.name, "step": name, "rc": rc, "oom": oom, "wall_s": round(wall, 1), "device_peak_gib": poller.peak(t0, time.time()),
                   "peak_alloc_gib": max((e.get("peak_alloc_gib", 0) for e in closed), default=None),
                   "peak_reserved_gib": max((e.get("peak_reserved_gib", 0) for e in closed), default=None),
                   "host_peak_rss_gib": max((e.get("host_peak_rss_gib", 0) for e in closed), default=None),
                   "gpu": next((e["gpu"] for e in events if e["event"] == "start"), None)}
            if name.startswith("sample-"):
                h, w = map(int, flag(argv, "--video_size", 2))
                want = {"frames": int(flag(argv, "--video_length")), "width": w, "height": h, "fps": float(flag(argv, "--fps"))}
                got = read_video(Path(flag(argv, "--save_path")))
                e = estimate("1.3B" if "1.3B" in flag(argv, "--task") else "14B", 1 if "--fp8" in argv else 2, "--fp8_t5" in argv, w, h, want["frames"])
                row.update(got, expected=want, video_ok=all(got.get(k) == v for k, v in want.items()), estimate_gib=round(e.peak_gib, 2),
                           infer_steps=int(flag(argv, "--infer_steps")), prompt=flag(argv, "--prompt"))
            rows.append(row)
            print(f"[gpu_sample] {json.dumps(row)}", flush=True)
            if rc != 0:
                break
    with open(args.jsonl, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return 0 if rows and all(r["rc"] == 0 and r.get("video_ok", True) for r in rows) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write the sample plan of a job (any machine with runner)")
    r.add_argument("job", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--prompt", action="append", default=[])
    g = sub.add_parser("run", help="run a sample plan with the real wan_generate_video.py (GPU machine)")
    add_run_args(g, "folder written by `gpu_sample.py render`", "musubi-tuner's source at its pin (holds src/musubi_tuner)", 600)
    g.add_argument("--lora", type=Path, help="the LoRA to sample (default: a random one in the job's trainer's format)")
    a = ap.parse_args()
    if a.command == "render":
        render(a.job, a.out, a.prompt)
        return 0
    return run(a)


if __name__ == "__main__":
    sys.exit(main())
