"""STAND-IN for musubi_tuner.wan_generate_video (runner's CI test double, no GPU, no model math).

The argv contract of upstream's parse_args at 30c658c: every option with its type, nargs, choices and default;
--save_path required; one of --prompt, --from_file, --interactive, --latent_path; --from_file with --interactive
refused; task defaults for --video_length (81, t2i 1) and --infer_steps; height and width divisible by 8.
The model files (--dit, --vae, --t5, each --lora_weight) must exist; a LoRA's keys merge only where they are
musubi's own (`lora_unet_…lora_down/lora_up`, utils/lora_utils.py): others are skipped without an error, as upstream
does, and the count of merged modules is printed. Writes `{save_path}/{%Y%m%d-%H%M%S-%f[:-3]}_{seed}.mp4`:
a real video of --video_length frames at --video_size and --fps, encoded as upstream's save_videos_grid does
(hv_generate_video.py: PyAV, libx264, yuv420p, 4 Mbit/s), of mid-grey frames: not a sample.
Knob: STANDIN_STEP_SECONDS (as for training, _standin.py) is slept once per inference step (--infer_steps).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from datetime import datetime

from musubi_tuner._standin import banner, out_of_memory_in, read_safetensors_header, step_seconds

TASKS = ["t2v-14B", "t2v-1.3B", "i2v-14B", "t2i-14B", "flf2v-14B", "t2v-1.3B-FC", "t2v-14B-FC", "i2v-14B-FC", "i2v-A14B", "t2v-A14B"]
DEFAULT_STEPS = {"i2v-A14B": 40, "t2v-A14B": 40}  # wan/configs: sample_steps (50 for the Wan2.1 tasks)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Wan 2.1 inference script")
    p.add_argument("--ckpt_dir", type=str, default=None)
    p.add_argument("--task", type=str, default="t2v-14B", choices=TASKS)
    p.add_argument("--sample_solver", type=str, default="unipc", choices=["unipc", "dpm++", "vanilla"])
    for flag in ("--dit", "--dit_high_noise", "--vae", "--vae_dtype", "--t5", "--clip", "--save_merged_model", "--prompt",
                 "--negative_prompt", "--video_path", "--image_path", "--end_image_path", "--control_path",
                 "--one_frame_inference", "--slg_layers", "--device", "--from_file"):
        p.add_argument(flag, type=str, default=None)
    for flag in ("--force_v2_1_time_embedding", "--offload_inactive_dit", "--lazy_loading", "--disable_numpy_memmap",
                 "--vae_cache_cpu", "--cpu_noise", "--fp8", "--fp8_scaled", "--fp8_fast", "--fp8_t5",
                 "--use_pinned_memory_for_block_swap", "--no_metadata", "--lycoris", "--compile", "--compile_fullgraph", "--interactive"):
        p.add_argument(flag, action="store_true")
    for flag in ("--lora_weight", "--lora_weight_high_noise", "--include_patterns", "--exclude_patterns", "--control_image_path",
                 "--control_image_mask_path", "--latent_path"):
        p.add_argument(flag, type=str, nargs="*", default=None)
    p.add_argument("--lora_multiplier", type=float, nargs="*", default=None)
    p.add_argument("--lora_multiplier_high_noise", type=float, nargs="*", default=None)
    p.add_argument("--video_size", type=int, nargs=2, default=[256, 256])
    p.add_argument("--video_length", type=int, default=None)
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--infer_steps", type=int, default=None)
    p.add_argument("--save_path", type=str, required=True)
    p.add_argument("--seed", type=int, default=None)
    for flag in ("--timestep_boundary", "--guidance_scale", "--guidance_scale_high_noise", "--cfg_apply_ratio", "--flow_shift"):
        p.add_argument(flag, type=float, default=None)
    p.add_argument("--trim_tail_frames", type=int, default=0)
    p.add_argument("--cfg_skip_mode", type=str, default="none", choices=["early", "late", "middle", "early_late", "alternate", "none"])
    p.add_argument("--slg_scale", type=float, default=3.0)
    p.add_argument("--slg_start", type=float, default=0.0)
    p.add_argument("--slg_end", type=float, default=0.3)
    p.add_argument("--slg_mode", type=str, default=None, choices=["original", "uncond"])
    p.add_argument("--attn_mode", type=str, default="torch", choices=["flash", "flash2", "flash3", "torch", "sageattn", "xformers", "sdpa"])
    p.add_argument("--blocks_to_swap", type=int, default=0)
    p.add_argument("--output_type", type=str, default="video", choices=["video", "images", "latent", "both", "latent_images"])
    p.add_argument("--compile_args", nargs=4, metavar=("BACKEND", "MODE", "DYNAMIC", "FULLGRAPH"), default=None)
    p.add_argument("--compile_backend", type=str, default="inductor")
    p.add_argument("--compile_mode", type=str, default="default", choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    p.add_argument("--compile_dynamic", type=str, default=None, choices=["true", "false", "auto"])
    p.add_argument("--compile_cache_size_limit", type=int, default=None)
    args = p.parse_args()
    if args.from_file and args.interactive:
        raise ValueError("Cannot use both --from_file and --interactive at the same time")
    if args.prompt is None and not args.from_file and not args.interactive and args.latent_path is None:
        raise ValueError("Either --prompt, --from_file, --interactive, or --latent_path must be specified")
    return args


def merged_modules(lora: str) -> int:
    """LoRA modules upstream's weight hook would merge: pairs of musubi-format down/up keys."""
    tensors, _ = read_safetensors_header(lora)
    return sum(1 for k in tensors if k.startswith("lora_unet_") and k.endswith(".lora_down.weight")
               and k.replace(".lora_down.", ".lora_up.") in tensors)


def write_video(path: str, frames: int, width: int, height: int, fps: int) -> None:
    import av
    import numpy as np

    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 4000000
        grey = np.full((height, width, 3), 128, dtype=np.uint8)
        for _ in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        out.mux(stream.encode())


def main() -> None:
    args = parse_args()
    banner("musubi-tuner wan_generate_video")
    if args.video_length is None:
        args.video_length = 1 if "t2i" in args.task else 81
    if args.infer_steps is None:
        args.infer_steps = DEFAULT_STEPS.get(args.task, 50)
    height, width = args.video_size
    if height % 8 != 0 or width % 8 != 0:
        raise ValueError(f"`height` and `width` have to be divisible by 8 but are {height} and {width}.")
    for flag, path in (("--dit", args.dit), ("--vae", args.vae), ("--t5", args.t5), *(("--lora_weight", w) for w in args.lora_weight or [])):
        if path is None or not os.path.exists(path):
            raise FileNotFoundError(f"{flag}: {path} not found")
    out_of_memory_in("sample")
    for lora in args.lora_weight or []:
        print(f"Loading LoRA weight from: {lora}; merged {merged_modules(lora)} LoRA modules", flush=True)
    seed = args.seed if args.seed is not None else random.randint(0, 2**32 - 1)
    print(f"prompt: {args.prompt}; {width}x{height}, {args.video_length} frames, {args.infer_steps} steps, seed {seed}", flush=True)
    for _ in range(args.infer_steps):
        time.sleep(step_seconds())
    os.makedirs(args.save_path, exist_ok=True)
    time_flag = datetime.fromtimestamp(time.time()).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    path = f"{args.save_path}/{time_flag}_{seed}.mp4"
    write_video(path, args.video_length, width, height, args.fps)
    print(f"Video saved to: {path}", flush=True)


if __name__ == "__main__":
    main()
