"""Peak GPU memory of captioning one video with Qwen2.5-VL (runner caption): the architecture's terms, with the share
PyTorch's allocator reserves beyond them fitted to the real-size 7B measured on an H200 (bench/gpu_caption.py,
bench/data/gpu_caption.jsonl: bf16, 8-bit and 4-bit at 33 and 81 frames).

The captioner holds the weights, encodes the frames with the vision tower (no gradients: one layer's activations at a
time), then the language model reads the prompt with the vision tokens (prefill: one layer's activations at a time,
plus the key/value cache of every layer) and writes the caption token by token (the cache grows by a few hundred tokens).
Frames go in as pairs (temporal patch 2) of 14×14 patches; every 2×2 patches merge into one token for the language model.
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.gpu.wan import GIB
from runner.models.captioner import CaptionModel

PATCH = 14
VISION_HIDDEN, VISION_FFN = 1280, 3420
# bytes per parameter of the quantised linear layers: bf16, int8 (LLM.int8 keeps a few outlier columns in bf16, not
# counted), nf4 with one fp32 absmax per 64 weights; embeddings and the LM head stay bf16 (bitsandbytes skips lm_head)
BYTES = {None: 2.0, "8bit": 1.0, "4bit": 0.5 + 4 / 64}
# what the allocator reserved for the activations and cache, as a multiple of the terms below: the largest ratio of the
# measured runs per quantisation (bitsandbytes' dequantising kernels leave more fragments behind at 8-bit)
RESERVED_FACTOR = {None: 2.65, "8bit": 2.78, "4bit": 2.02}
OUTSIDE_GIB = 0.6  # CUDA context (not measured by gpu_caption.py; the trainers' measured figure is of that order)
PROMPT_TOKENS = 120  # the system prompt, the instruction and the chat template's tokens


@dataclass(frozen=True)
class CaptionMemory:
    frames: int
    vision_tokens: int  # what the language model reads for the frames
    weights_gib: float
    reserved_factor: float
    vision_gib: float  # the vision tower's transient activations and the pixel input
    prefill_gib: float  # one decoder layer's transient activations over the whole prompt
    cache_gib: float  # key/value cache of the whole prompt and caption

    @property
    def peak_gib(self) -> float:
        return self.weights_gib + self.reserved_factor * max(self.vision_gib, self.prefill_gib + self.cache_gib) + OUTSIDE_GIB

    def describe(self) -> str:
        return (f"~{self.peak_gib:.1f} GiB peak at {self.frames} frames ({self.vision_tokens} vision tokens): weights {self.weights_gib:.1f}, "
                f"vision encoder {self.vision_gib:.1f}, prefill {self.prefill_gib:.1f} + cache {self.cache_gib:.1f} (x{self.reserved_factor} "
                f"as the allocator reserves it), +{OUTSIDE_GIB:.1f} outside PyTorch; fitted to the 7B measured on an H200 at 33 and 81 frames")


def estimate(m: CaptionModel, frames: int, pixels_per_frame: int, new_tokens: int) -> CaptionMemory:
    embed = m.embedding_params
    weights = ((m.language_params + m.vision_params - embed) * BYTES[m.quant] + embed * 2) * 1e9 / GIB
    pairs = (frames + 1) // 2
    patches = pairs * pixels_per_frame // PATCH**2
    tokens = patches // 4
    # vision: the hidden state, q/k/v and the output, and the gated MLP's three wide tensors, bf16; the fp32 pixel patches
    vision = patches * ((5 * VISION_HIDDEN + 3 * VISION_FFN) * 2 + 3 * 2 * PATCH**2 * 4) / GIB
    seq = tokens + PROMPT_TOKENS
    prefill = seq * (4 * m.hidden + 3 * m.ffn) * 2 / GIB
    cache = (seq + new_tokens) * m.text_layers * 2 * m.kv_dim * 2 / GIB
    return CaptionMemory(frames, tokens, weights, RESERVED_FACTOR[m.quant], vision, prefill, cache)


def job_frames(frame_lists: list[list[int] | None], default: int) -> int:
    """The most frames the captioner sees of a job's clips: its largest frame bucket, sampled at its training fps."""
    return max((max(f) for f in frame_lists if f), default=default)
