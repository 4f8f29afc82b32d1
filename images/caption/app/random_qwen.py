"""A Qwen2.5-VL with random weights, built from its config with transformers' own classes (no hub): for CI (a tiny one,
on the CPU) and the GPU benchmark (the real 7B architecture). Its tokenizer is a small byte-level BPE trained here with
Qwen's special tokens, and its chat template is Qwen2.5-VL's, so the processor, the vision tokens and generate() run
exactly as with the real model; only the words are gibberish.

    python random_qwen.py --size tiny --out DIR       # save_pretrained: a model folder runner can mount
"""

from __future__ import annotations

import argparse

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2TokenizerFast, Qwen2VLImageProcessor
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# Qwen2.5-VL's chat template, reduced to what a caption request uses (one user turn of pictures, videos and text)
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen/Qwen2.5-VL-7B-Instruct's config.json (and 3B's); tiny: the same architecture, a few thousand times smaller
SIZES = {
    "7b": dict(vocab=152064, text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                                       num_key_value_heads=4, mrope_section=[16, 24, 24]),
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584)),
    "3b": dict(vocab=151936, text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                                       num_key_value_heads=2, mrope_section=[16, 24, 24]),
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048)),
    "tiny": dict(vocab=None, text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=2, mrope_section=[2, 3, 3]),
                 vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)),
}


def tokenizer() -> Qwen2TokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    words = "a red ball bouncing on green grass the camera pans slowly across a city street at night with people walking"
    bpe.train_from_iterator([words] * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL,
                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
                              additional_special_tokens=SPECIAL[1:])


def processor() -> Qwen2_5_VLProcessor:
    return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer(),
                               video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)


def config(size: str, tok: Qwen2TokenizerFast) -> Qwen2_5_VLConfig:
    s = SIZES[size]
    text = dict(s["text"])
    mrope = text.pop("mrope_section")
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    vocab = s["vocab"] or len(tok)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab, rope_theta=1000000.0, max_position_embeddings=128000, rms_norm_eps=1e-6,
                         rope_scaling={"type": "mrope", "mrope_section": mrope}, eos_token_id=eos, **text),
        vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31] if size != "tiny" else [1], tokens_per_second=2, **s["vision"]),
        vocab_size=vocab, eos_token_id=eos, pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **ids,
    )


def build(size: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """(model with random weights on `device`, its processor)."""
    proc = processor()
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config(size, proc.tokenizer), dtype=dtype)
    model.generation_config.eos_token_id = proc.tokenizer.eos_token_id
    model.generation_config.pad_token_id = proc.tokenizer.pad_token_id
    return model.eval(), proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--out", required=True, help="folder to save_pretrained the model and its processor into")
    args = ap.parse_args()
    model, proc = build(args.size)
    model.save_pretrained(args.out)
    proc.save_pretrained(args.out)
    print(f"random_qwen: a random-weight Qwen2.5-VL ({args.size}, {sum(p.numel() for p in model.parameters()):,} parameters) in {args.out}")


if __name__ == "__main__":
    main()
