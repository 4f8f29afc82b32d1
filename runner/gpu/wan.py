"""Wan2.1 DiT shapes that memory depends on (from the official configs, as in musubi's wan/configs)."""

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


ARCH = {"1.3B": WanArch(layers=NUM_BLOCKS["1.3B"], dim=1536, ffn=8960), "14B": WanArch(layers=NUM_BLOCKS["14B"], dim=5120, ffn=13824)}


def latent_tokens(width: int, height: int, frames: int) -> int:
    """DiT sequence length: the VAE keeps the first frame and compresses 4x in time, 8x in space; patches are 2x2."""
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)
