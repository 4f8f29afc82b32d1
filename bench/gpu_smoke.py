#!/usr/bin/env python3
"""GPU smoke test of runner's real path: a job rendered by `runner render`, run by the real musubi-tuner.

On a machine with an NVIDIA GPU and musubi-tuner's src/ (at the pinned commit) on PYTHONPATH:

    runner render JOB.yaml --out PLAN            # on any machine
    python bench/gpu_smoke.py --plan PLAN --musubi MUSUBI_ROOT --work DIR

What is real: runner's rendered dataset TOML (checked by musubi's own schema) and its `accelerate launch`
argv for wan_train_network.py, run unchanged but for the container paths, which are mapped to DIR. What is
made up: the DiT (and, with --real-latents, VAE) weights — random, real architecture — and the T5 caches
(random, written by musubi's own cache writer under the stems of the job's clips), because no model or
tokenizer download is possible there. With --real-latents the rendered cache-latents step runs on the
job's real clips; without it the latents are random too. Prints the steps, the LoRA files written, their key format, and the wall time.
Also prints what runner's GPU modules read from this machine's nvidia-smi (inventory, env rules, variant).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def mapper(plan: dict, plan_dir: Path, work: Path, data_root: Path):
    """Container path → a path on this machine: /job is the plan folder, data comes from the checkout."""
    table = {"/job": plan_dir}
    for m in plan["mounts"]:
        if m["volume"].startswith("data/"):
            table[m["container"]] = data_root / Path(m["host"]).name
        elif m["volume"] != "job":
            table[m["container"]] = work / m["volume"]

    def to_local(text: str) -> str:
        for container in sorted(table, key=len, reverse=True):
            text = re.sub(rf"(?<![\w/]){re.escape(container)}(?=/|\b|$)", str(table[container]), text)
        return text

    return to_local


def synthetic_caches(toml: dict, frames: int, width: int, height: int, latents: bool) -> int:
    """Random T5 outputs (and, unless the real cache-latents step made them, latents) per clip, written by
    musubi's own cache writers under the names its cache steps use."""
    import torch

    from musubi_tuner.dataset.cache_io import save_latent_cache_wan, save_text_encoder_output_cache_wan
    from musubi_tuner.dataset.image_video_dataset import ItemInfo

    gen, n = torch.Generator().manual_seed(1), 0
    for entry in toml["datasets"]:
        cache = Path(entry["cache_directory"])
        cache.mkdir(parents=True, exist_ok=True)
        for video in sorted(Path(entry["video_directory"]).glob("*.mp4")):
            key = f"{video.stem}_00000-{frames:03d}"
            item = ItemInfo(key, "caption", (width, height), (width, height, frames), frame_count=frames)
            item.latent_cache_path = str(cache / f"{key}_{width:04d}x{height:04d}_wan.safetensors")
            item.text_encoder_output_cache_path = str(cache / f"{video.stem}_wan_te.safetensors")
            if latents:
                latent = torch.randn(16, (frames - 1) // 4 + 1, height // 8, width // 8, generator=gen).to(torch.bfloat16)
                save_latent_cache_wan(item, latent, None, None, None)
            save_text_encoder_output_cache_wan(item, (torch.randn(64, 4096, generator=gen) * 0.1).to(torch.bfloat16))
            n += 1
    return n


def random_vae(path: Path) -> None:
    """Wan2.1's VAE architecture (musubi's WanVAE_, the official config) with random weights, as a .pth."""
    import torch

    from musubi_tuner.wan.modules.vae import WanVAE_

    torch.manual_seed(0)
    model = WanVAE_(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                    temperal_downsample=[False, True, True], dropout=0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)


def run_step(name: str, argv: list[str], cwd: Path, env: dict) -> tuple[int, float]:
    if shutil.which(argv[0]) is None and argv[0] == "accelerate":  # the launcher's module, where no script is on PATH
        argv[:1] = [sys.executable, "-m", "accelerate.commands.launch"]
    if argv[0] == "python":
        argv[0] = sys.executable
    print(f"[smoke] {name}:", " ".join(argv), flush=True)
    t0 = time.perf_counter()
    rc = subprocess.run(argv, cwd=cwd, env=env).returncode
    print(f"[smoke] {name} exit {rc} in {time.perf_counter() - t0:.1f} s", flush=True)
    return rc, time.perf_counter() - t0


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", type=Path, required=True, help="folder written by `runner render`")
    ap.add_argument("--musubi", type=Path, required=True, help="musubi-tuner checkout (has src/musubi_tuner)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=HERE.parent / "examples" / "data", help="where the job's dataset folders are")
    ap.add_argument("--real-latents", action="store_true", help="run the rendered cache-latents step on the clips (random VAE; needs PyAV)")
    args = ap.parse_args()
    try:
        print("[smoke] runner's view of this GPU:", json.dumps(gpu_facts(), indent=1), flush=True)
    except Exception as e:  # report and go on: the trainer run is the main check
        print(f"[smoke] runner.gpu failed here: {e!r}", flush=True)

    plan = json.loads((args.plan / "plan.json").read_text())
    to_local = mapper(plan, args.plan.resolve(), args.work.resolve(), args.data.resolve())
    local_toml = args.work / "musubi_dataset.toml"
    args.work.mkdir(parents=True, exist_ok=True)
    local_toml.write_text(to_local((args.plan / "musubi_dataset.toml").read_text()))
    toml = tomllib.loads(local_toml.read_text())
    width, height = toml["datasets"][0]["resolution"]
    frames = toml["datasets"][0]["target_frames"][0]

    steps = {st["name"]: [to_local(a) for a in st["argv"]] for st in plan["steps"]}
    for argv in steps.values():
        argv[argv.index("--dataset_config") + 1] = str(local_toml)
    argv = steps["train"]
    dit = Path(argv[argv.index("--dit") + 1])
    dit.parent.mkdir(parents=True, exist_ok=True)
    from memory_grid import make_dit

    task = argv[argv.index("--task") + 1]
    make_dit(task.split("-", 1)[1], "bfloat16", dit)
    env = {**os.environ, **plan["env"], "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HOME", None)
    if args.real_latents:
        latents = steps["cache-latents"]
        random_vae(Path(latents[latents.index("--vae") + 1]))
        if run_step("cache-latents", latents, args.musubi, env)[0] != 0:
            return 1
        made = sorted(p.name for e in toml["datasets"] for p in Path(e["cache_directory"]).glob("*_wan.safetensors"))
        print(f"[smoke] latent caches written by musubi from the clips: {made}", flush=True)
    print(f"[smoke] {synthetic_caches(toml, frames, width, height, latents=not args.real_latents)} synthetic cache items", flush=True)
    rc, wall = run_step("train", argv, args.musubi, env)
    out = Path(to_local(plan["output_dir"]))
    files = sorted(p.name for p in out.glob("*.safetensors")) if out.is_dir() else []
    print(f"[smoke] exit {rc} in {wall:.1f} s; LoRA files: {files}", flush=True)
    if files:
        from safetensors import safe_open

        with safe_open(str(out / files[-1]), "pt") as f:
            keys = list(f.keys())
            meta = f.metadata() or {}
        print(f"[smoke] {len(keys)} tensors, e.g. {keys[:3]}; ss_network_dim={meta.get('ss_network_dim')} "
              f"ss_network_alpha={meta.get('ss_network_alpha')}", flush=True)
    return 0 if rc == 0 and files else 1


if __name__ == "__main__":
    sys.exit(main())
