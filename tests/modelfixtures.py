"""Model folders for tests: real file names and safetensors headers that describe Wan2.1 models.

Only headers are written (runner reads nothing else), so a "14B" DiT costs a few hundred bytes.
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

# patch_embedding.weight shape by model: [dim, in_channels, 1, 2, 2]; I2V has 36 input channels, TI2V-5B 48
DIT_SHAPES = {("1.3B", False): [1536, 16, 1, 2, 2], ("14B", False): [5120, 16, 1, 2, 2], ("14B", True): [5120, 36, 1, 2, 2],
              ("5B", False): [3072, 48, 1, 2, 2]}
OFFICIAL_DIRS = {
    "Wan2.1-T2V-1.3B": False,
    "Wan2.1-T2V-14B": False,
    "Wan2.1-I2V-14B-480P": True,
    "Wan2.1-I2V-14B-720P": True,
}


def write_safetensors_header(path: Path, tensors: dict[str, dict]) -> Path:
    header = json.dumps(tensors).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def dit(path: Path, size: str = "1.3B", i2v: bool = False, dtype: str = "BF16", prefix: str = "", fp8_scaled: bool = False,
        clip: bool = True, flf2v: bool = False) -> Path:
    """clip: an I2V DiT with Wan2.1's CLIP image layers (Wan2.2 I2V has none); flf2v: FLF2V's image position embedding."""
    shape = DIT_SHAPES[(size, i2v)]
    tensors = {
        f"{prefix}patch_embedding.weight": {"dtype": dtype, "shape": shape, "data_offsets": [0, 0]},
        f"{prefix}blocks.0.self_attn.q.weight": {"dtype": dtype, "shape": [shape[0], shape[0]], "data_offsets": [0, 0]},
        # musubi reads the DiT dtype from this key (wan/modules/model.py detect_wan_sd_dtype)
        f"{prefix}blocks.0.cross_attn.k.weight": {"dtype": dtype, "shape": [shape[0], shape[0]], "data_offsets": [0, 0]},
    }
    if i2v and clip:
        tensors[f"{prefix}img_emb.proj.1.weight"] = {"dtype": dtype, "shape": [1280, 1280], "data_offsets": [0, 0]}
        # Wan2.1 I2V's image cross-attention (diffusion-pipe tells Wan2.1 I2V from Wan2.2 I2V by it)
        tensors[f"{prefix}blocks.0.cross_attn.k_img.weight"] = {"dtype": dtype, "shape": [shape[0], shape[0]], "data_offsets": [0, 0]}
    if flf2v:
        tensors[f"{prefix}img_emb.emb_pos"] = {"dtype": dtype, "shape": [1, 514, 1280], "data_offsets": [0, 0]}
    if fp8_scaled:
        tensors["scaled_fp8"] = {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 0]}
        tensors[f"{prefix}blocks.0.self_attn.q.scale_weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [0, 0]}
    return write_safetensors_header(path, tensors)


def pth(path: Path) -> Path:
    """A .pth in torch.save's zip layout, holding an empty state dict (runner reads only its shape)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({}, protocol=2))
    return path


def official_dir(root: Path, name: str, i2v: bool) -> Path:
    d = root / name
    (d / "google" / "umt5-xxl").mkdir(parents=True, exist_ok=True)
    dim, layers = (1536, 30) if "1.3B" in name else (5120, 40)
    config = {"_class_name": "WanModel", "model_type": "i2v" if i2v else "t2v", "dim": dim, "num_layers": layers, "in_dim": 36 if i2v else 16}
    (d / "config.json").write_text(json.dumps(config))
    for f in ["Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth"]:
        pth(d / f)
    if i2v:
        (d / "xlm-roberta-large").mkdir(exist_ok=True)
        pth(d / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    return d


COMFY = Path("Wan_2.1_ComfyUI_repackaged/split_files")
DITS = {
    "wan2.1_t2v_1.3B_bf16.safetensors": ("1.3B", False),
    "wan2.1_t2v_14B_bf16.safetensors": ("14B", False),
    "wan2.1_i2v_480p_14B_bf16.safetensors": ("14B", True),
    "wan2.1_i2v_720p_14B_bf16.safetensors": ("14B", True),
}


COMFY_22 = Path("Wan_2.2_ComfyUI_Repackaged/split_files")
# Wan2.2 and FLF2V: ComfyUI file → (folder, size, i2v, CLIP layers, FLF2V); Comfy-Org stores them in fp16
DITS_22 = {
    "wan2.2_t2v_low_noise_14B_fp16.safetensors": (COMFY_22, "14B", False, False, False),
    "wan2.2_t2v_high_noise_14B_fp16.safetensors": (COMFY_22, "14B", False, False, False),
    "wan2.2_i2v_low_noise_14B_fp16.safetensors": (COMFY_22, "14B", True, False, False),
    "wan2.2_i2v_high_noise_14B_fp16.safetensors": (COMFY_22, "14B", True, False, False),
    "wan2.2_ti2v_5B_fp16.safetensors": (COMFY_22, "5B", False, False, False),
    "wan2.1_flf2v_720p_14B_fp16.safetensors": (COMFY, "14B", True, True, True),
}


def official_22(root: Path) -> None:
    """The official Wan2.2 and FLF2V folders as `runner download --format comfy` leaves them: the A14B repositories keep
    config.json in each expert folder, TI2V-5B has its own VAE, FLF2V the CLIP files of I2V."""
    for name, i2v in (("Wan2.2-T2V-A14B", False), ("Wan2.2-I2V-A14B", True)):
        d = official_dir(root, name, False)
        (d / "config.json").unlink()
        for expert in ("low_noise_model", "high_noise_model"):
            (d / expert).mkdir(exist_ok=True)
            (d / expert / "config.json").write_text(json.dumps({"model_type": "i2v" if i2v else "t2v", "dim": 5120, "in_dim": 36 if i2v else 16}))
    d = official_dir(root, "Wan2.2-TI2V-5B", False)
    (d / "Wan2.1_VAE.pth").unlink()
    pth(d / "Wan2.2_VAE.pth")
    (d / "config.json").write_text(json.dumps({"model_type": "ti2v", "dim": 3072, "num_layers": 30, "in_dim": 48}))
    d = official_dir(root, "Wan2.1-FLF2V-14B-720P", True)
    (d / "config.json").write_text(json.dumps({"model_type": "flf2v", "dim": 5120, "num_layers": 40, "in_dim": 36}))


def models_root(root: Path) -> Path:
    """The layout `runner download` leaves (official folders, ComfyUI repackaged files), plus the DiTs
    at the root that hand-written test jobs name."""
    for name, i2v in OFFICIAL_DIRS.items():
        official_dir(root, name, i2v)
    official_22(root)
    for name, (size, i2v) in DITS.items():
        dit(root / name, size, i2v=i2v)
        dit(root / COMFY / "diffusion_models" / name, size, i2v=i2v)
    for name, (folder, size, i2v, clip, flf2v) in DITS_22.items():
        dit(root / folder / "diffusion_models" / name, size, i2v=i2v, dtype="F16", clip=clip, flf2v=flf2v)
    write_safetensors_header(root / COMFY / "text_encoders" / "umt5_xxl_fp16.safetensors",
                             {"encoder.block.0.layer.0.SelfAttention.q.weight": {"dtype": "F16", "shape": [4096, 4096], "data_offsets": [0, 0]}})
    return root
