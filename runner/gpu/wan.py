"""Wan DiT shapes that memory depends on (from the official configs, as in musubi's wan/configs and diffusion-pipe's
models/wan/configs.py at the pins). Wan2.2 A14B experts have the 14B shapes (t2v_A14B/i2v_A14B: dim 5120, ffn 13824,
40 layers, 40 heads); TI2V-5B is dim 3072, ffn 14336, 30 layers, 24 heads, with the Wan2.2 VAE (vae_stride (4, 16, 16),
z_dim 48: 16x16 spatial, 4x temporal compression, 48 latent channels)."""

from __future__ import annotations

from dataclasses import dataclass

from runner.spec import NUM_BLOCKS

GIB = float(2**30)


@dataclass(frozen=True)
class WanArch:
    layers: int
    dim: int
    ffn: int

    @property
    def block_params(self) -> int:
        # self-attention q,k,v,o + cross-attention q,k,v,o (dim x dim each) and the two FFN matrices
        return 8 * self.dim * self.dim + 2 * self.dim * self.ffn

    def block_gib(self, bytes_per_param: float) -> float:
        return self.block_params * bytes_per_param / GIB

    def lora_params(self, rank: int) -> int:
        """Trainable parameters of a LoRA on the ten linear layers of every block (both trainers' default targets)."""
        per_block = 8 * rank * (self.dim + self.dim) + 2 * rank * (self.dim + self.ffn)
        return per_block * self.layers

    def checkpoint_gib_per_token(self) -> float:
        """Bytes activation checkpointing keeps per token: each block's bf16 input, for every block."""
        return self.layers * self.dim * 2 / GIB


ARCH = {
    "1.3B": WanArch(layers=NUM_BLOCKS["1.3B"], dim=1536, ffn=8960),
    "14B": WanArch(layers=NUM_BLOCKS["14B"], dim=5120, ffn=13824),
    "5B": WanArch(layers=NUM_BLOCKS["5B"], dim=3072, ffn=14336),
}
# the VAE's spatial compression per model size: Wan2.1_VAE 8x, Wan2.2_VAE (TI2V-5B) 16x
VAE_SPATIAL = {"1.3B": 8, "14B": 8, "5B": 16}
# the VAE's parameters, Wan2.1_VAE and Wan2.2_VAE (TI2V-5B), as diffusion-pipe's classes at the pin build them
# (bench/data/gpu_h200_logs/driver_i16_wan22.log)
VAE_PARAMS = {"1.3B": 126.9e6, "14B": 126.9e6, "5B": 704.7e6}


def vae_bf16_gib(size: str) -> float:
    return VAE_PARAMS[size] * 2 / GIB


def latent_tokens(width: int, height: int, frames: int, size: str = "14B") -> int:
    """DiT sequence length: the VAE keeps the first frame and compresses 4x in time, 8x (TI2V-5B 16x) in space;
    patches are 2x2."""
    side = 2 * VAE_SPATIAL[size]
    return ((frames - 1) // 4 + 1) * (height // side) * (width // side)
