#!/usr/bin/env python3
"""GPU run of runner's real path: a plan rendered by `runner render`, run by the real trainer, every phase measured.

On a machine with an NVIDIA GPU, the trainer's source at its pin and its Python packages:

    runner render JOB.yaml --out PLAN [--vram N --ram M]        # on any machine
    python bench/gpu_smoke.py --plan PLAN --src TRAINER_ROOT --models MODELS --clips CLIPS --work DIR \
        --name NAME [--card-gib 12] --jsonl bench/data/gpu_h200.jsonl

What is real: runner's rendered files (dataset TOML, diffusion-pipe TOML) and every step's argv (musubi:
cache-latents, cache-text-encoder, train; diffusion-pipe: train.py, which caches in-process first), run unchanged
but for the container paths, which are mapped to local folders. What is made up: the model weights (random, real
architecture, in the preset's layout: made beforehand in MODELS) and, where the hub is unreachable, the umT5
tokenizer (STAND-IN, from --tokenizer, labelled in the output). The runs recorded in bench/data/gpu_h200.jsonl
predate runner's rendering of the caching settings (musubi `--fp8_t5` and its text-encoder batch, diffusion-pipe
`text_encoder_fp8`): this script added them to the rendered files then, as the plan's memory fields now render them.

Each phase (musubi: each step; diffusion-pipe: caching and training inside train.py) gets one JSON line: the
allocator's peak allocated/reserved (bench/probe/sitecustomize.py), the device peak of the process (NVML, idle
baseline subtracted), memory outside PyTorch's allocator, the process's peak RSS, step time. `--card-gib N`
emulates an N GiB card: PyTorch's allocator is capped at N minus the memory outside it measured on this trainer's
uncapped runs (--outside-gib). bench/fit_planner.py fits the planner to these lines. It also prints what runner's GPU
modules read from this machine (inventory, environment rules, image variants).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

GIB = float(2**30)
PHASE_OF_STEP = {"cache-latents": "cache-latents", "cache-text-encoder": "cache-text-encoder", "train": "train"}


def mapper(plan: dict, work: Path, models: Path):
    """Container path -> local path: /models -> MODELS, /job -> the staged plan, each other volume -> WORK/<volume>."""
    table = {"/job": work / "job", "/models": models}
    for m in plan["mounts"]:
        if m["container"] not in table:
            table[m["container"]] = work / m["volume"].replace("/", "-")

    def to_local(text: str) -> str:
        for container in sorted(table, key=len, reverse=True):
            text = re.sub(rf"(?<![\w/]){re.escape(container)}(?=/|\b|$)", str(table[container]), text)
        return text

    return to_local, table


def stage(plan_dir: Path, plan: dict, work: Path, models: Path, clips: Path):
    """Copy the plan's files with local paths into WORK/job, the clips into every dataset folder."""
    to_local, table = mapper(plan, work, models)
    shutil.rmtree(work / "job", ignore_errors=True)
    (work / "job").mkdir(parents=True)
    for f in plan_dir.iterdir():
        if f.name not in ("plan.json", "command.sh", ".runner-render"):  # the trainer's files; those are runner's own
            (work / "job" / f.name).write_text(to_local(f.read_text()))
    for container, local in table.items():
        if container.startswith("/data/"):
            local.mkdir(parents=True, exist_ok=True)
            for clip in clips.iterdir():
                shutil.copy(clip, local / clip.name)
        elif container != "/models":
            local.mkdir(parents=True, exist_ok=True)
    return to_local


def seed_tokenizer(hf_home: Path, tokenizer: Path) -> None:
    """STAND-IN umT5 tokenizer where musubi looks for it offline: Wan-AI/Wan2.1-T2V-14B, subfolder google/umt5-xxl."""
    repo = hf_home / "hub" / "models--Wan-AI--Wan2.1-T2V-14B"
    snap = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tokenizer, snap / "google" / "umt5-xxl", dirs_exist_ok=True)
    # transformers 5 reads the model config beside the tokenizer (4.57, musubi's lock, does without it)
    (snap / "google" / "umt5-xxl" / "config.json").write_text(json.dumps({"model_type": "umt5"}))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)


def settings(plan: dict, job_dir: Path, steps: dict[str, list[str]]) -> dict:
    """Training settings as the planner names them, read from what runner rendered."""
    from runner.gpu.planner import model_size

    if plan["trainer"] == "diffpipe":
        doc = tomllib.loads((job_dir / "diffpipe.toml").read_text())
        ds = tomllib.loads((job_dir / "dataset.toml").read_text())
        ckpt = doc.get("activation_checkpointing", False)
        res, frames = ds["resolutions"][0], ds["frame_buckets"][-1]
        return {"task": model_size(plan["settings"]["task"]),
                "weights": "fp8" if doc["model"].get("transformer_dtype") == "float8" else "bf16",
                "checkpointing": "gcoff" if ckpt == "unsloth" else "gc" if ckpt else "none",
                "swap": doc.get("blocks_to_swap", 0), "optimizer": doc["optimizer"]["type"],
                "te_dtype": "fp8" if doc["model"].get("text_encoder_fp8") else "bf16", "te_batch": doc.get("caching_batch_size", 1),
                "width": res[0], "height": res[1], "frames": frames, "batch": doc.get("micro_batch_size_per_gpu", 1),
                "accumulation": doc.get("gradient_accumulation_steps", 1), "pipeline_stages": doc.get("pipeline_stages", 1),
                "dit_file_dtype": file_dtype(doc["model"].get("transformer_path", ""))}
    train, text = steps["train"], steps["cache-text-encoder"]
    ds = tomllib.loads((job_dir / "musubi_dataset.toml").read_text())
    entry = ds["datasets"][0]
    res = entry.get("resolution", ds["general"].get("resolution"))
    flag = lambda name, default=0: train[train.index(name) + 1] if name in train else default  # noqa: E731
    return {"task": model_size(plan["settings"]["task"]), "weights": "fp8" if "--fp8_base" in train else "bf16",
            "checkpointing": "gc" if "--gradient_checkpointing" in train else "none",
            "swap": int(flag("--blocks_to_swap")), "optimizer": flag("--optimizer_type", "adamw"),
            "te_dtype": "fp8" if "--fp8_t5" in text else "bf16", "te_batch": int(text[text.index("--batch_size") + 1]),
            "width": res[0], "height": res[1], "frames": max(entry.get("target_frames", [1])),
            "batch": entry.get("batch_size", ds["general"].get("batch_size", 1)), "accumulation": int(flag("--gradient_accumulation_steps", 1)),
            "dit_file_dtype": file_dtype(flag("--dit", ""))}


def file_dtype(dit: str) -> str:
    """As the planner reads it (runner.gpu.planner._dit_file_is_bf16): a name without "bf16" is a file to cast."""
    return "bf16" if "bf16" in Path(dit).name.lower() else "fp16"


class DevicePoller:
    """Device memory in use (NVML) of every GPU, sampled every 0.2 s with wall-clock times."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self.samples: list[tuple[float, list[float]]] = []
        self._stop = threading.Event()
        self.baseline = self.used()

    def used(self) -> list[float]:
        return [self._nvml.nvmlDeviceGetMemoryInfo(h).used / GIB for h in self._handles]

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.used()))
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, t0: float, t1: float, gpu: int = 0) -> float | None:
        inside = [u[gpu] for t, u in self.samples if t0 <= t <= t1]
        return round(max(inside) - self.baseline[gpu], 3) if inside else None


def tensorboard_runs(out: Path) -> list[dict]:
    """The event files the trainer wrote under its output folder, read back with TensorBoard's own reader."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as e:
        return [{"error": repr(e)}]
    runs = []
    for f in sorted(out.rglob("events.out.tfevents.*")) if out.is_dir() else []:
        acc = EventAccumulator(str(f))
        acc.Reload()
        runs.append({"file": str(f.relative_to(out)), "scalars": {t: len(acc.Scalars(t)) for t in acc.Tags()["scalars"]}})
    return runs


def gpu_facts() -> dict:
    from runner.gpu import envrules, variant
    from runner.gpu.inventory import gather
    from runner.shell import LocalShell

    inv = gather(LocalShell())
    ctx = envrules.Context(inv, "musubi", 1, False)
    return {
        "gpus": [g.model_dump() for g in inv.gpus],
        "driver": inv.driver_version,
        "env": {v.name: v.value for v in envrules.environment(ctx)},
        "musubi_variant": variant.choose("musubi", inv).cuda,
        "diffpipe_variant": variant.choose("diffpipe", inv).cuda,
    }


def run_step(argv: list[str], cwd: Path, envs: list[dict], log: Path, timeout: float) -> tuple[int, float, bool]:
    """One process per environment (several: emulated nodes of one multi-node step), all at once; the first failure's
    exit status, else 0."""
    if argv[0] == "accelerate" and shutil.which("accelerate") is None:
        argv = [sys.executable, "-m", "accelerate.commands.launch", *argv[1:]]
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    print(f"[gpu_smoke] $ {' '.join(argv)}" + (f"  (x{len(envs)} emulated nodes)" if len(envs) > 1 else ""), flush=True)
    t0 = time.time()
    with open(log, "a") as out:
        procs = [subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True) for env in envs]
        oom_seen = None
        while any(p.poll() is None for p in procs):
            time.sleep(2)
            if oom_seen is None and "CUDA out of memory" in log.read_text(errors="replace"):
                oom_seen = time.time()
            # diffusion-pipe does not exit after a CUDA OOM (issue 9, item 7); nor may a step outlive its time
            if (oom_seen and time.time() - oom_seen > 15) or time.time() - t0 > timeout:
                for p in procs:
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
        rc = next((p.wait() for p in procs if p.wait() != 0), 0)
    kill_leftovers()
    text = log.read_text(errors="replace")
    return rc, time.time() - t0, "CUDA out of memory" in text or "OutOfMemoryError" in text


def kill_leftovers() -> None:
    """diffusion-pipe does not exit after a CUDA OOM (issue 9, item 7): end GPU processes the step left."""
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True, text=True)
    for pid in out.stdout.split():
        if pid.isdigit() and int(pid) != os.getpid():
            print(f"[gpu_smoke] killing GPU process {pid} left by the step", flush=True)
            subprocess.run(["kill", "-9", pid])


def phase_rows(events: list[dict], poller: DevicePoller, base: dict, t_start: float) -> list[dict]:
    """One row per phase and process (rank) the step closed; a phase's device window runs from the previous phase's
    end. With several GPUs, rank r runs on GPU r (accelerate and the deepspeed launcher both place them so), and
    samples/s counts the whole step's batch: batch × gradient accumulation × ranks."""
    rows = []
    ranks = sorted({e.get("rank", 0) for e in events})
    starts = dict.fromkeys(ranks, t_start)
    for e in (e for e in events if e["event"] == "phase"):
        rank = e.get("rank", 0)
        mine = [x for x in events if x["phase"] == e["phase"] and x.get("rank", 0) == rank and x["event"] in ("step", "phase")]
        steps = [x for x in mine if x["event"] == "step"]
        dts = [s["dt"] for s in steps]
        step_s = round(statistics.median(dts[1:]), 3) if len(dts) > 1 else None
        reserved = max((x.get("peak_reserved_gib", 0) for x in mine), default=None)
        device = poller.peak(starts[rank], e["t"] + 0.3, rank)
        rows.append({**base, "phase": e["phase"], "rank": rank, "world": len(ranks),
                     "peak_alloc_gib": max((x.get("peak_alloc_gib", 0) for x in mine), default=None),
                     "peak_reserved_gib": reserved,
                     "outside_allocator_gib": round(device - reserved, 3) if device is not None and reserved else None,
                     "device_peak_gib": device,
                     "host_peak_rss_gib": e["host_peak_rss_gib"], "steps": len(steps), "step_s": step_s,
                     "samples_per_s": round(base["batch"] * base.get("accumulation", 1) * len(ranks) / step_s, 3) if step_s else None})
        starts[rank] = e["t"]
    return rows


def add_run_args(ap: argparse.ArgumentParser, plan_help: str, src_help: str, timeout: float) -> None:
    """The options of a harness that runs a rendered plan on this GPU machine (gpu_smoke.py, gpu_sample.py)."""
    ap.add_argument("--plan", type=Path, required=True, help=plan_help)
    ap.add_argument("--src", type=Path, required=True, help=src_help)
    ap.add_argument("--models", type=Path, required=True, help="random-weight model files in the preset's layout")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--tokenizer", type=Path, help="STAND-IN umT5 tokenizer folder, seeded into the HF cache for musubi")
    ap.add_argument("--timeout", type=float, default=timeout, help="seconds per step")
    ap.add_argument("--jsonl", type=Path, required=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_args(ap, "folder written by `runner render`", "the trainer's source at its pin (the image's workdir)", 300)
    ap.add_argument("--clips", type=Path, required=True, help="clips with captions, copied into every dataset folder")
    ap.add_argument("--card-gib", type=float, help="emulate a card of this size (allocator cap = this - outside)")
    ap.add_argument("--outside-gib", type=float, default=0.0, help="memory outside the allocator while training")
    ap.add_argument("--outside-cache-gib", type=float, default=0.0, help="memory outside the allocator while caching")
    ap.add_argument("--keep-work", action="store_true", help="keep WORK's outputs: a resumed plan reads the earlier run's")
    ap.add_argument("--nodes", type=int, default=1, help="a multi-node plan (rendered for N nodes of one GPU each): its train step "
                    "started N times on this machine as Slurm would on N nodes (SLURM_NODEID, SLURM_JOB_NUM_NODES, "
                    "SLURM_JOB_NODELIST=localhost, SLURM_JOB_ID), node i on GPU i")
    args = ap.parse_args()

    try:
        print("[gpu_smoke] runner's view of this GPU:", json.dumps(gpu_facts()), flush=True)
    except Exception as e:  # report and go on: the trainer run is the main check
        print(f"[gpu_smoke] runner.gpu failed here: {e!r}", flush=True)
    plan = json.loads((args.plan / "plan.json").read_text())
    work = args.work.resolve()
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    to_local = stage(args.plan, plan, work, args.models.resolve(), args.clips.resolve())
    steps = {s["name"]: [to_local(a) for a in s["argv"]] for s in plan["steps"]}
    hf_home = work / "hf-cache"
    if args.tokenizer:
        seed_tokenizer(hf_home, args.tokenizer)
        print(f"[gpu_smoke] STAND-IN umT5 tokenizer ({args.tokenizer}) seeded into {hf_home}")
    probe_log, log = work / "probe.jsonl", work / "trainer.log"
    env = {**os.environ, **{k: to_local(v) for k, v in plan["env"].items()}, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE / "probe"), os.environ.get("PYTHONPATH", "")]), "BENCH_LOG": str(probe_log)}
    cap = cache_cap = None
    if args.card_gib:
        cap, cache_cap = round(args.card_gib - args.outside_gib, 2), round(args.card_gib - args.outside_cache_gib, 2)
    base = {"trainer": plan["trainer"], "name": args.name, "card_gib": args.card_gib, "cap_gib": cap, "cache_cap_gib": cache_cap, "nodes": args.nodes,
            **settings(plan, work / "job", steps)}
    from runner.gpu.wan import latent_tokens

    base["tokens"] = latent_tokens(base["width"], base["height"], base["frames"], base["task"])
    rows = []
    with DevicePoller() as poller:
        for i, (name, argv) in enumerate(steps.items(), 1):
            with open(log, "a") as out:  # images/run_plan.py's marker: runner's log reader knows the step by it
                out.write(f"[runner] step {i}/{len(steps)} {name} start: {' '.join(argv)}\n")
            phase = "caching" if plan["trainer"] == "diffpipe" else PHASE_OF_STEP[name]
            caps = {}
            if cap is not None:  # diffusion-pipe caches, then trains, in one process: the probe re-caps in between
                caps = {"BENCH_CAP_GIB": str(cap if phase == "train" else cache_cap), "BENCH_CAP_NEXT_GIB": str(cap)}
            t0 = time.time()
            envs = [{**env, **caps, "BENCH_PHASE": phase}]
            if name == "train" and args.nodes > 1:
                job_id = str(os.getpid())
                envs = [{**envs[0], "SLURM_NODEID": str(i), "SLURM_JOB_NUM_NODES": str(args.nodes), "SLURM_JOB_NODELIST": "localhost",
                         "SLURM_JOB_ID": job_id, "CUDA_VISIBLE_DEVICES": str(i)} for i in range(args.nodes)]
            rc, wall, oom = run_step(argv, args.src.resolve(), envs, log, args.timeout)
            events = [json.loads(x) for x in probe_log.read_text().splitlines()] if probe_log.exists() else []
            gpu = next((e["gpu"] for e in events if e["event"] == "start"), None)
            mine = [e for e in events if e["phase"] in ({phase, "train"} if plan["trainer"] == "diffpipe" else {phase})]
            got = phase_rows(mine, poller, {**base, "step": name, "rc": rc, "oom": oom, "wall_s": round(wall, 1), "gpu": gpu}, t0)
            if not got:  # the process died before closing its phase
                got = [{**base, "step": name, "phase": phase, "rc": rc, "oom": oom, "wall_s": round(wall, 1), "gpu": gpu}]
            rows += got
            probe_log.unlink(missing_ok=True)
            if rc != 0:
                break
    with open(args.jsonl, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for r in rows:
        print(f"[gpu_smoke] {args.name} {r['phase']:18s} rank={r.get('rank', 0)}/{r.get('world', 1)} rc={r['rc']} oom={r['oom']} cap={cap} "
              f"alloc={r.get('peak_alloc_gib')} reserved={r.get('peak_reserved_gib')} device={r.get('device_peak_gib')} "
              f"outside={r.get('outside_allocator_gib')} rss={r.get('host_peak_rss_gib')} step_s={r.get('step_s')} samples/s={r.get('samples_per_s')} wall={r['wall_s']}",
              flush=True)
    out = Path(to_local(plan["output_dir"]))
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.safetensors")) if out.is_dir() else []
    print(f"[gpu_smoke] {args.name}: LoRA files {files}", flush=True)
    print(f"[gpu_smoke] {args.name}: TensorBoard {json.dumps(tensorboard_runs(out))}", flush=True)
    return 0 if rows and all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
