"""STAND-IN for musubi_tuner.networks.lora_wan (runner's CI test double, no GPU, no model math).

Knows which Linear layers of a Wan2.1 DiT a musubi LoRA targets and writes a LoRA file with upstream's key
names (`lora_unet_blocks_{i}_{self_attn|cross_attn}_{q|k|v|o}` and `_ffn_{0|2}`, plus `cross_attn_{k_img|v_img}`
for I2V; each with `.lora_down.weight`, `.lora_up.weight`, `.alpha`). Tensors are zeros and, unless
STANDIN_FULL_SHAPES=1, shrunk to [rank, rank] so a 14B LoRA stays a few MB; `ss_network_dim`/`ss_network_alpha`
and the dtypes are the real ones.
"""

from __future__ import annotations

import os

from musubi_tuner._standin import scalar, write_safetensors

# task -> (dim, ffn_dim, num_layers, has image cross-attention)
TASKS = {
    "t2v-14B": (5120, 13824, 40, False),
    "t2v-1.3B": (1536, 8960, 30, False),
    "i2v-14B": (5120, 13824, 40, True),
    "t2i-14B": (5120, 13824, 40, False),
    "flf2v-14B": (5120, 13824, 40, True),
    "t2v-1.3B-FC": (1536, 8960, 30, True),
    "t2v-14B-FC": (5120, 13824, 40, True),
    "i2v-14B-FC": (5120, 13824, 40, True),
    "i2v-A14B": (5120, 13824, 40, False),
    "t2v-A14B": (5120, 13824, 40, False),
}
WAN_TARGET_REPLACE_MODULES = ["WanAttentionBlock"]
SAVE_DTYPES = {None: "F32", "float": "F32", "fp32": "F32", "fp16": "F16", "bf16": "BF16"}


def target_modules(task: str) -> list[tuple[str, int, int]]:
    """(module name, in_features, out_features) of every Linear a Wan LoRA wraps."""
    dim, ffn, layers, img = TASKS[task]
    out = []
    for i in range(layers):
        for attn in ("self_attn", "cross_attn"):
            names = ["q", "k", "v", "o"] + (["k_img", "v_img"] if attn == "cross_attn" and img else [])
            out += [(f"blocks.{i}.{attn}.{n}", dim, dim) for n in names]
        out += [(f"blocks.{i}.ffn.0", dim, ffn), (f"blocks.{i}.ffn.2", ffn, dim)]
    return out


def save_weights(path: str, task: str, dim: int, alpha: float, save_precision: str | None, metadata: dict | None) -> None:
    full = os.environ.get("STANDIN_FULL_SHAPES") == "1"
    dtype = SAVE_DTYPES[save_precision]
    tensors = {}
    for name, fin, fout in target_modules(task):
        key = "lora_unet_" + name.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = (dtype, [dim, fin if full else dim])
        tensors[f"{key}.lora_up.weight"] = (dtype, [fout if full else dim, dim])
        tensors[f"{key}.alpha"] = (dtype, [], scalar(dtype, alpha))
    write_safetensors(path, tensors, metadata)


def create_arch_network(multiplier, network_dim, network_alpha, vae, text_encoders, unet, **kwargs):
    raise NotImplementedError("STAND-IN: lora_wan has no model math; wan_train_network.py uses save_weights only")
