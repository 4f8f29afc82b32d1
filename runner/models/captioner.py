"""The captioner's model presets: which weights `runner download` fetches, how the captioner loads them, and what they
weigh on the GPU (runner.gpu.captioning).

The 8-bit and 4-bit presets load the same bf16 repository through bitsandbytes at load time (the image has it), so one
download serves all three 7B presets. Pre-quantised AWQ repositories (Qwen/Qwen2.5-VL-7B-Instruct-AWQ) would need
autoawq in the image, which it does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner.errors import UserError
from runner.models.presets import Want

# what a run of the captioner reads from a model repository
FILES = ("*.json", "*.safetensors", "merges.txt")  # config, tokenizer, processor, chat template, weights


@dataclass(frozen=True)
class CaptionModel:
    name: str
    repo: str
    language_params: float  # billions, the language model with its embeddings and LM head
    vision_params: float  # billions, the vision tower and its merger
    quant: str | None  # None (bf16), "8bit" or "4bit" (bitsandbytes at load time)
    card_gib: int  # the smallest card it is meant for
    text_layers: int
    hidden: int
    ffn: int
    kv_dim: int  # key/value heads × head size of the language model
    embedding_params: float  # billions in the token embeddings and the LM head (tied in the 3B), kept bf16 when quantised

    @property
    def folder(self) -> Path:
        """Its folder under the models root, as `runner download` lays it out."""
        return Path(self.repo.split("/")[1])


# Qwen/Qwen2.5-VL-{7B,3B}-Instruct's config.json: vocabulary 152064 (7B) / 151936 (3B), the 7B's LM head untied
_7B = dict(repo="Qwen/Qwen2.5-VL-7B-Instruct", language_params=7.62, vision_params=0.67, text_layers=28, hidden=3584, ffn=18944,
           kv_dim=4 * 128, embedding_params=2 * 152064 * 3584 / 1e9)
PRESETS: dict[str, CaptionModel] = {
    m.name: m
    for m in (
        CaptionModel("qwen2.5-vl-7b", quant=None, card_gib=24, **_7B),
        CaptionModel("qwen2.5-vl-7b-8bit", quant="8bit", card_gib=16, **_7B),
        CaptionModel("qwen2.5-vl-7b-4bit", quant="4bit", card_gib=12, **_7B),
        CaptionModel("qwen2.5-vl-3b", repo="Qwen/Qwen2.5-VL-3B-Instruct", language_params=3.09, vision_params=0.67, quant=None,
                     card_gib=12, text_layers=36, hidden=2048, ffn=11008, kv_dim=2 * 128, embedding_params=151936 * 2048 / 1e9),
    )
}
DEFAULT = "qwen2.5-vl-7b"


def get(name: str, option: str = "--model") -> CaptionModel:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise UserError(option, f"{name!r} is not a captioner preset.",
                        f"use one of {', '.join(PRESETS)}, or the path of a folder holding a Qwen2.5-VL model (config.json and weights).") from None


def wants(name: str) -> list[Want]:
    """What `runner download PRESET` fetches for a captioner preset: the repository's model files, into its folder."""
    m = get(name)
    return [Want(m.repo, FILES, m.folder)]
