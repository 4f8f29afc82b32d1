"""Peak GPU memory of sampling a video with musubi's wan_generate_video.py: a rough estimate, not a fit.

The script runs its models one after another: umT5 encodes the prompt and is freed, the DiT denoises (weights plus
one block's activations at a time, no gradients), the VAE decodes. The peak is the largest phase, plus the memory
outside PyTorch's allocator. umT5 and the VAE come from musubi's measured caching phases (runner.gpu.memory_fit:
the VAE's encode stands in for its decode, which was not measured); the DiT term is its weights and an analytic
guess at one block's transient tensors. bench/gpu_sample.py measures the real peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.gpu.memmodel import dit_bf16_gib
from runner.gpu.memory_fit import FIT
from runner.gpu.wan import ARCH, GIB, latent_tokens


@dataclass(frozen=True)
class SampleMemory:
    t5_gib: float
    dit_gib: float
    vae_gib: float
    outside_gib: float

    @property
    def peak_gib(self) -> float:
        return max(self.t5_gib, self.dit_gib, self.vae_gib) + self.outside_gib

    def describe(self) -> str:
        return (f"~{self.peak_gib:.1f} GiB peak (umT5 {self.t5_gib:.1f}, DiT {self.dit_gib:.1f}, VAE decode {self.vae_gib:.1f}, "
                f"+{self.outside_gib:.1f} outside PyTorch; a rough estimate, not measured)")


def estimate(size: str, dit_bytes_per_param: float, t5_fp8: bool, width: int, height: int, frames: int) -> SampleMemory:
    caching = FIT.caching["musubi"]
    arch = ARCH[size]
    tokens = latent_tokens(width, height, frames)
    # q, k, v, o and the FFN's hidden layer of one block, bf16, for the conditional and unconditional passes in turn
    activations = tokens * (4 * arch.dim + 2 * arch.ffn) * 2 / GIB
    dit = dit_bf16_gib(size) * dit_bytes_per_param / 2 + activations
    vae = caching.latents_gib(width * height)
    return SampleMemory(caching.t5_gib["fp8" if t5_fp8 else "bf16"], dit, vae, caching.outside_gib)
