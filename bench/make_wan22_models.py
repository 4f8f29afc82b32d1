#!/usr/bin/env python3
"""Random-weight Wan2.2 model files, full size and of the real architectures, for the GPU machine (issue 16).

Run it there, like ../shared/tools/gpu-probe-diffpipe/make_models.py (which makes the Wan2.1 T2V-1.3B files, the
umT5-XXL encoder and places the stand-in tokenizer), with the diffusion-pipe tree at its pin as --dp: the DiTs and
VAEs are built from diffusion-pipe's OWN classes (models/wan/model.py WanModel, vae2_1/vae2_2 WanVAE_), so key names
and shapes are theirs, in the layout runner's presets point at (runner/models/presets.py):

ROOT/Wan2.2-TI2V-5B/config.json, Wan2.2_VAE.pth, google/umt5-xxl/ (--tokenizer), models_t5_umt5-xxl-enc-bf16.pth (--t5)
ROOT/Wan2.2-T2V-A14B/{low,high}_noise_model/config.json, Wan2.1_VAE.pth, google/umt5-xxl/, models_t5_umt5-xxl-enc-bf16.pth
ROOT/Wan_2.2_ComfyUI_Repackaged/split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors       5.0 B params, 10 GB
ROOT/Wan_2.2_ComfyUI_Repackaged/split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors   14.3 B, 28.6 GB
  (and _high_noise_ with --experts low high: 28.6 GB more; the machine's disk is 64 GiB)

The DiTs are fp16, as Comfy-Org ships Wan2.2 (musubi then trains with memory.dtype: float16; diffusion-pipe casts to
its dtype). ComfyUI's umT5 for diffusion-pipe stays where make_models.py writes it (Wan_2.1_ComfyUI_repackaged/
split_files/text_encoders/umt5_xxl_fp16.safetensors), where the presets look for it. --t5 (musubi's official .pth, e.g.
the one make_models.py --official-t5 wrote) is hard-linked into each official folder.

Weights are random (seeded): WanModel's own init plus a small random head (Wan zero-inits it, and the LoRA would get
no gradient), VAE with PyTorch's default init. Usage, on the GPU machine from the repository root:

    python bench/make_wan22_models.py --root models --dp .gpu/diffpipe --tokenizer .gpu/tokenizer/umt5-xxl \\
        --t5 models/Wan2.1-T2V-1.3B/models_t5_umt5-xxl-enc-bf16.pth [--models ti2v-5B t2v-A14B] [--experts low]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import torch

# the official configs (diffusion-pipe models/wan/configs.py and musubi wan/configs at the pins), as config.json
DIT_CONFIGS = {
    "ti2v-5B": {"model_type": "ti2v", "dim": 3072, "ffn_dim": 14336, "num_heads": 24, "num_layers": 30, "in_dim": 48, "out_dim": 48},
    "t2v-A14B": {"model_type": "t2v", "dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40, "in_dim": 16, "out_dim": 16},
}
COMMON = {"_class_name": "WanModel", "_diffusers_version": "0.35.0", "eps": 1e-06, "freq_dim": 256, "text_len": 512}
OFFICIAL = {"ti2v-5B": "Wan2.2-TI2V-5B", "t2v-A14B": "Wan2.2-T2V-A14B"}
COMFY = os.path.join("Wan_2.2_ComfyUI_Repackaged", "split_files", "diffusion_models")
COMFY_NAMES = {"ti2v-5B": "wan2.2_ti2v_5B_fp16.safetensors", "low": "wan2.2_t2v_low_noise_14B_fp16.safetensors",
               "high": "wan2.2_t2v_high_noise_14B_fp16.safetensors"}
# VAE constructor arguments: vae2_1._video_vae / vae2_2.Wan2_2_VAE (z_dim 48, c_dim 160, temperal_downsample
# [False, True, True]: 4x in time; 2x2 patchify + 3 downsamples: 16x in space)
VAES = {
    "Wan2.1_VAE.pth": ("vae2_1", dict(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                      temperal_downsample=[False, True, True], dropout=0.0)),
    "Wan2.2_VAE.pth": ("vae2_2", dict(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                      temperal_downsample=[False, True, True], dropout=0.0)),
}
T0 = time.time()


def log(msg: str) -> None:
    print(f"[make_wan22_models {time.time() - T0:6.1f}s] {msg}", flush=True)


def write_dit(cfg: dict, path: str, device: str, seed: int) -> None:
    """A DiT of the config's architecture, fp16, official key names (what ComfyUI's repackaged files hold)."""
    from models.wan.model import WanModel
    from safetensors.torch import save_file

    if os.path.exists(path):
        return
    torch.manual_seed(seed)
    with torch.device(device):
        model = WanModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")}).half()
        torch.nn.init.normal_(model.head.head.weight, std=0.02)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    save_file(sd, path + ".part", metadata={"format": "pt"})
    os.replace(path + ".part", path)
    log(f"DiT {cfg['model_type']} {len(sd)} tensors {sum(v.numel() for v in sd.values()) / 1e9:.2f} B params -> {path}")


def write_vae(name: str, folder: str, device: str) -> None:
    import importlib

    path = os.path.join(folder, name)
    if os.path.exists(path):
        return
    module, kwargs = VAES[name]
    with torch.device(device):
        vae = importlib.import_module(f"models.wan.{module}").WanVAE_(**kwargs)
    sd = {k: v.detach().float().cpu() for k, v in vae.state_dict().items()}
    torch.save(sd, path)
    log(f"VAE {name} {len(sd)} tensors {sum(v.numel() for v in sd.values()) / 1e6:.1f} M params -> {path}")


def official_folder(root: str, folder: str, tokenizer: str, t5: str | None) -> str:
    d = os.path.join(root, folder)
    os.makedirs(d, exist_ok=True)
    tok = os.path.join(d, "google", "umt5-xxl")
    if not os.path.exists(tok):
        shutil.copytree(tokenizer, tok)
    target = os.path.join(d, "models_t5_umt5-xxl-enc-bf16.pth")
    if t5 and not os.path.exists(target):
        os.link(t5, target)
    return d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="the models root (the bench jobs' models.root)")
    p.add_argument("--dp", required=True, help="diffusion-pipe exported at 8f83dbf")
    p.add_argument("--tokenizer", required=True, help="the umT5 tokenizer folder to place as google/umt5-xxl (a stand-in on the GPU machine)")
    p.add_argument("--t5", help="models_t5_umt5-xxl-enc-bf16.pth to hard-link into each official folder (musubi loads only that)")
    p.add_argument("--models", nargs="+", choices=sorted(DIT_CONFIGS), default=sorted(DIT_CONFIGS))
    p.add_argument("--experts", nargs="+", choices=["low", "high"], default=["low"], help="A14B experts to write (28.6 GB each)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, help="local smoke tests only: fewer DiT blocks than the real model")
    a = p.parse_args()
    sys.path.insert(0, a.dp)
    if not torch.cuda.is_available():
        torch.cuda.current_device = lambda: 0  # models/wan/t5.py evaluates it at import time
    comfy = os.path.join(a.root, COMFY)
    os.makedirs(comfy, exist_ok=True)
    for task in a.models:
        cfg = {**COMMON, **DIT_CONFIGS[task], **({"num_layers": a.layers} if a.layers else {})}
        folder = official_folder(a.root, OFFICIAL[task], a.tokenizer, a.t5)
        if task == "ti2v-5B":
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
            write_vae("Wan2.2_VAE.pth", folder, a.device)
            write_dit(cfg, os.path.join(comfy, COMFY_NAMES[task]), a.device, seed=5)
            continue
        # A14B: config.json only in the expert folders (diffusion-pipe falls back to low_noise_model/config.json)
        for expert in ("low", "high"):
            os.makedirs(os.path.join(folder, f"{expert}_noise_model"), exist_ok=True)
            with open(os.path.join(folder, f"{expert}_noise_model", "config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
        write_vae("Wan2.1_VAE.pth", folder, a.device)
        for expert in a.experts:
            write_dit(cfg, os.path.join(comfy, COMFY_NAMES[expert]), a.device, seed=14 if expert == "low" else 15)
    log("done")


if __name__ == "__main__":
    main()
