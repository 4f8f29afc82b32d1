"""Wan2.1 T2V-1.3B (and Wan2.2 TI2V-5B, a T2V-A14B expert) as tensors: key names, shapes, dtypes and a sensible
random init, for each file that `runner download TASK` fetches (runner.models.presets), in each trainer's format.
The Wan2.2 tables (CONFIGS, vae22) were compared, key for key and shape for shape, with the state dicts of
diffusion-pipe's own WanModel and vae2_2.WanVAE_ at its pin (bench/make_wan22_models.py builds those).

Read from the upstream model code at the pins (musubi-tuner 30c658c src/musubi_tuner/wan/modules/{model,t5,vae}.py,
which diffusion-pipe 8f83dbf's models/wan shares): WanModel(dim 1536, ffn 8960, 12 heads, 30 layers), the
umT5-XXL encoder (vocab 256384, dim 4096, ffn 10240, 64 heads, 24 layers, one relative position table per block),
WanVAE_(dim 96, z 16, mult [1, 2, 4, 4], 2 res blocks, temporal down [False, True, True]). Each trainer loads
these strictly, so every name and shape must be exact. Full size everywhere: musubi builds the DiT from its own
task config, and the memory figures are compared with the planner's, which models the real 1.3B.
"""

from __future__ import annotations

from math import prod

from runner.models import presets
from runner.models.presets import Format
from runner.spec import Trainer

Tensor = tuple[str, str, list[int], list]  # key, safetensors dtype, shape, init: ["normal", std] | ["const", value]

CONFIG = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 1536, "eps": 1e-06, "ffn_dim": 8960,
          "freq_dim": 256, "in_dim": 16, "model_type": "t2v", "num_heads": 12, "num_layers": 30, "out_dim": 16,
          "text_len": 512}
TEXT_DIM, PATCH = 4096, (1, 2, 2)
T5 = {"vocab": 256384, "dim": 4096, "ffn": 10240, "heads": 64, "layers": 24, "buckets": 32}


def _normal(std: float) -> list:
    return ["normal", std]


ONES, ZEROS = ["const", 1.0], ["const", 0.0]


def _linear(prefix: str, fan_in: int, fan_out: int, dtype: str, bias: bool = True, std: float | None = None) -> list[Tensor]:
    out: list[Tensor] = [(f"{prefix}.weight", dtype, [fan_out, fan_in], _normal(std or (2 / (fan_in + fan_out)) ** 0.5))]
    return out + ([(f"{prefix}.bias", dtype, [fan_out], ZEROS)] if bias else [])


# the other models selftest can make (`runner selftest --task`): Wan2.2 configs of diffusion-pipe models/wan/configs.py
# and musubi wan/configs at the pins; an A14B expert is the 14B T2V architecture, TI2V-5B adds the Wan2.2 VAE
CONFIGS = {
    "t2v-1.3B": CONFIG,
    "ti2v-5B": {**CONFIG, "_diffusers_version": "0.35.0", "dim": 3072, "ffn_dim": 14336, "in_dim": 48, "model_type": "ti2v",
                "num_heads": 24, "num_layers": 30, "out_dim": 48},
    "t2v-A14B": {**CONFIG, "_diffusers_version": "0.35.0", "dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40},
}


def dit(dtype: str, config: dict = CONFIG) -> list[Tensor]:
    """WanModel (t2v, ti2v): official key names, as in the official and the ComfyUI repackaged files."""
    CONFIG = config  # noqa: N806 - the table below reads the model's config
    dim, ffn, freq, in_dim = CONFIG["dim"], CONFIG["ffn_dim"], CONFIG["freq_dim"], CONFIG["in_dim"]
    t: list[Tensor] = [("patch_embedding.weight", dtype, [dim, in_dim, *PATCH], _normal((2 / (in_dim * prod(PATCH) + dim)) ** 0.5)),
                       ("patch_embedding.bias", dtype, [dim], ZEROS)]
    t += _linear("text_embedding.0", TEXT_DIM, dim, dtype, std=0.02) + _linear("text_embedding.2", dim, dim, dtype, std=0.02)
    t += _linear("time_embedding.0", freq, dim, dtype, std=0.02) + _linear("time_embedding.2", dim, dim, dtype, std=0.02)
    t += _linear("time_projection.1", dim, 6 * dim, dtype)
    for i in range(CONFIG["num_layers"]):
        b = f"blocks.{i}"
        for attn in ("self_attn", "cross_attn"):
            for n in "qkvo":
                t += _linear(f"{b}.{attn}.{n}", dim, dim, dtype)
            t += [(f"{b}.{attn}.norm_q.weight", dtype, [dim], ONES), (f"{b}.{attn}.norm_k.weight", dtype, [dim], ONES)]
        t += [(f"{b}.norm3.weight", dtype, [dim], ONES), (f"{b}.norm3.bias", dtype, [dim], ZEROS)]
        t += _linear(f"{b}.ffn.0", dim, ffn, dtype) + _linear(f"{b}.ffn.2", ffn, dim, dtype)
        t += [(f"{b}.modulation", dtype, [1, 6, dim], _normal(dim ** -0.5))]
    t += _linear("head.head", dim, CONFIG["out_dim"] * prod(PATCH), dtype, std=0.02)
    return t + [("head.modulation", dtype, [1, 2, dim], _normal(dim ** -0.5))]


def umt5_official(dtype: str) -> list[Tensor]:
    """The umT5-XXL encoder with Wan's key names (models_t5_umt5-xxl-enc-bf16.pth); stds are t5.py's init."""
    d, f, h, nb = T5["dim"], T5["ffn"], T5["heads"], T5["buckets"]
    t: list[Tensor] = [("token_embedding.weight", dtype, [T5["vocab"], d], _normal(1.0))]
    for i in range(T5["layers"]):
        b = f"blocks.{i}"
        t += [(f"{b}.norm1.weight", dtype, [d], ONES),
              (f"{b}.attn.q.weight", dtype, [d, d], _normal((d * d) ** -0.5)),
              (f"{b}.attn.k.weight", dtype, [d, d], _normal(d ** -0.5)),
              (f"{b}.attn.v.weight", dtype, [d, d], _normal(d ** -0.5)),
              (f"{b}.attn.o.weight", dtype, [d, d], _normal((h * d) ** -0.5)),
              (f"{b}.norm2.weight", dtype, [d], ONES),
              (f"{b}.ffn.gate.0.weight", dtype, [f, d], _normal(d ** -0.5)),
              (f"{b}.ffn.fc1.weight", dtype, [f, d], _normal(d ** -0.5)),
              (f"{b}.ffn.fc2.weight", dtype, [d, f], _normal(f ** -0.5)),
              (f"{b}.pos_embedding.embedding.weight", dtype, [nb, h], _normal((2 * nb * h) ** -0.5))]
    return t + [("norm.weight", dtype, [d], ONES)]


_COMFY_T5 = {"attn.q.weight": "0.SelfAttention.q.weight", "attn.k.weight": "0.SelfAttention.k.weight",
             "attn.v.weight": "0.SelfAttention.v.weight", "attn.o.weight": "0.SelfAttention.o.weight",
             "pos_embedding.embedding.weight": "0.SelfAttention.relative_attention_bias.weight",
             "norm1.weight": "0.layer_norm.weight", "ffn.gate.0.weight": "1.DenseReluDense.wi_0.weight",
             "ffn.fc1.weight": "1.DenseReluDense.wi_1.weight", "ffn.fc2.weight": "1.DenseReluDense.wo.weight",
             "norm2.weight": "1.layer_norm.weight"}


def comfy_t5_key(key: str) -> str:
    """Wan's T5 key → the Hugging Face name ComfyUI's umt5_xxl file uses (what diffusion-pipe's
    models/wan/t5.py umt5_keys_mapping_comfy maps back)."""
    if key == "token_embedding.weight":
        return "shared.weight"
    if key == "norm.weight":
        return "encoder.final_layer_norm.weight"
    _, n, rest = key.split(".", 2)
    return f"encoder.block.{n}.layer.{_COMFY_T5[rest]}"


def umt5_comfy(dtype: str) -> list[Tensor]:
    return [(comfy_t5_key(k), dt, shape, init) for k, dt, shape, init in umt5_official(dtype)]


def _conv(prefix: str, cin: int, cout: int, kernel: tuple[int, ...]) -> list[Tensor]:
    fan_in = cin * prod(kernel)
    return [(f"{prefix}.weight", "F32", [cout, cin, *kernel], _normal((3 * fan_in) ** -0.5)), (f"{prefix}.bias", "F32", [cout], ZEROS)]


def _rms(prefix: str, dim: int, images: bool = False) -> list[Tensor]:
    return [(f"{prefix}.gamma", "F32", [dim, 1, 1] if images else [dim, 1, 1, 1], ONES)]


def _res(prefix: str, cin: int, cout: int) -> list[Tensor]:
    t = _rms(f"{prefix}.residual.0", cin) + _conv(f"{prefix}.residual.2", cin, cout, (3, 3, 3))
    t += _rms(f"{prefix}.residual.3", cout) + _conv(f"{prefix}.residual.6", cout, cout, (3, 3, 3))
    return t + (_conv(f"{prefix}.shortcut", cin, cout, (1, 1, 1)) if cin != cout else [])


def _attn(prefix: str, dim: int) -> list[Tensor]:
    return _rms(f"{prefix}.norm", dim, images=True) + _conv(f"{prefix}.to_qkv", dim, 3 * dim, (1, 1)) + _conv(f"{prefix}.proj", dim, dim, (1, 1))


def _resample(prefix: str, dim: int, mode: str) -> list[Tensor]:
    up = mode.startswith("up")
    t = _conv(f"{prefix}.resample.1", dim, dim // 2 if up else dim, (3, 3))
    if mode == "upsample3d":
        t += _conv(f"{prefix}.time_conv", dim, 2 * dim, (3, 1, 1))
    elif mode == "downsample3d":
        t += _conv(f"{prefix}.time_conv", dim, dim, (3, 1, 1))
    return t


def _bottleneck(top: int, z: int, dec: int) -> list[Tensor]:
    """Both Wan VAEs between their down and up paths: the encoder's middle and head (top channels), the latent 1x1
    convs (z channels), the decoder's input conv and middle (dec channels)."""
    t = _res("encoder.middle.0", top, top) + _attn("encoder.middle.1", top) + _res("encoder.middle.2", top, top)
    t += _rms("encoder.head.0", top) + _conv("encoder.head.2", top, 2 * z, (3, 3, 3))
    t += _conv("conv1", 2 * z, 2 * z, (1, 1, 1)) + _conv("conv2", z, z, (1, 1, 1))
    t += _conv("decoder.conv1", z, dec, (3, 3, 3))
    return t + _res("decoder.middle.0", dec, dec) + _attn("decoder.middle.1", dec) + _res("decoder.middle.2", dec, dec)


def vae() -> list[Tensor]:
    """WanVAE_ as Wan2.1_VAE.pth holds it (fp32)."""
    base, z, mult, nres, down = 96, 16, [1, 2, 4, 4], 2, [False, True, True]
    dims = [base * u for u in [1] + mult]
    t = _conv("encoder.conv1", 3, dims[0], (3, 3, 3))
    i = 0
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(nres):
            t += _res(f"encoder.downsamples.{i}", cin, cout)
            cin, i = cout, i + 1
        if level != len(mult) - 1:
            t += _resample(f"encoder.downsamples.{i}", cout, "downsample3d" if down[level] else "downsample2d")
            i += 1
    dims, t = [base * u for u in [mult[-1]] + mult[::-1]], t + _bottleneck(dims[-1], z, base * mult[-1])
    i = 0
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        cin = cin // 2 if level in (1, 2, 3) else cin
        for _ in range(nres + 1):
            t += _res(f"decoder.upsamples.{i}", cin, cout)
            cin, i = cout, i + 1
        if level != len(mult) - 1:
            t += _resample(f"decoder.upsamples.{i}", cout, "upsample3d" if down[::-1][level] else "upsample2d")
            i += 1
    return t + _rms("decoder.head.0", dims[-1]) + _conv("decoder.head.2", dims[-1], 3, (3, 3, 3))


def vae22() -> list[Tensor]:
    """Wan2.2_VAE.pth (TI2V-5B): diffusion-pipe models/wan/vae2_2.py WanVAE_(dim 160, dec_dim 256, z 48, mult
    [1, 2, 4, 4], 2 res blocks, temporal down [False, True, True]) behind a 2x2 patchify (12 input channels): each level
    its own module list, parameter-free average/duplicate shortcuts, upsampling convs that keep their width."""
    base, dec, z, mult, nres, down = 160, 256, 48, [1, 2, 4, 4], 2, [False, True, True]
    dims = [base * u for u in [1] + mult]
    t = _conv("encoder.conv1", 12, dims[0], (3, 3, 3))
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for i in range(nres):
            t += _res(f"encoder.downsamples.{level}.downsamples.{i}", cin if i == 0 else cout, cout)
        if level != len(mult) - 1:
            t += _resample(f"encoder.downsamples.{level}.downsamples.{nres}", cout, "downsample3d" if down[level] else "downsample2d")
    dims, t = [dec * u for u in [mult[-1]] + mult[::-1]], t + _bottleneck(dims[-1], z, dec * mult[-1])
    for level, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
        for i in range(nres + 1):
            t += _res(f"decoder.upsamples.{level}.upsamples.{i}", cin if i == 0 else cout, cout)
        if level != len(mult) - 1:
            prefix, up3d = f"decoder.upsamples.{level}.upsamples.{nres + 1}", down[::-1][level]
            t += _conv(f"{prefix}.resample.1", cout, cout, (3, 3))
            t += _conv(f"{prefix}.time_conv", cout, 2 * cout, (3, 1, 1)) if up3d else []
    return t + _rms("decoder.head.0", dims[-1]) + _conv("decoder.head.2", dims[-1], 12, (3, 3, 3))


def _table(task: str) -> dict[str, dict]:
    """Every file of `runner download TASK`, both formats: an A14B's experts and configs in their folders."""
    preset, config = presets.get_preset(task), CONFIGS[task]
    official, comfy = preset.official_dir.as_posix(), preset.comfy_dir.as_posix()
    wan21 = presets.COMFY_REPO.split("/")[1]
    table = {
        f"{official}/{preset.vae}": {"kind": "pth", "tensors": vae22() if preset.vae == presets.OFFICIAL_VAE_22 else vae()},
        f"{official}/{presets.T5_TOKENIZER[1]}": {"kind": "tokenizer", "repo": presets.T5_TOKENIZER[0]},
        f"{official}/{presets.OFFICIAL_T5}": {"kind": "pth", "tensors": umt5_official("BF16")},
        # Comfy-Org ships Wan2.1 DiTs in bf16, Wan2.2 in fp16
        f"{comfy}/{preset.comfy_dit}": {"kind": "safetensors", "tensors": dit("BF16" if comfy == wan21 else "F16", config)},
        f"{wan21}/{presets.COMFY_T5}": {"kind": "safetensors", "tensors": umt5_comfy("F16")},
    }
    if preset.task.has_experts:  # the low-noise expert only: selftest trains expert: low
        for folder in presets.EXPERT_FOLDERS.values():
            table[f"{official}/{folder}/config.json"] = {"kind": "json", "content": config}
        table[f"{official}/low_noise_model/diffusion_pytorch_model-00001-of-00001.safetensors"] = {"kind": "safetensors", "tensors": dit("BF16", config)}
    else:
        table[f"{official}/config.json"] = {"kind": "json", "content": config}
        # the official Wan2.1 1.3B DiT is float32 (UPSTREAM.md); the 5B's dtype is not named in the trainers' docs
        table[f"{official}/diffusion_pytorch_model.safetensors"] = {"kind": "safetensors", "tensors": dit("F32" if task == "t2v-1.3B" else "BF16", config)}
    return table


def files(fmt: Format, trainers: list[Trainer], task: str = "t2v-1.3B") -> list[dict]:
    """What `runner download TASK --format FMT` puts under the models root for these trainers (of an A14B, the
    low-noise expert), as entries for the writer (runner/selftest/make_files.py). The tokenizers musubi reads from
    the HF cache are the image's."""
    wants = [w for w in presets.wanted(presets.get_preset(task), fmt, trainers) if w.folder is not None]
    return [{"path": path, **entry} for path, entry in sorted(_table(task).items()) if any(_wanted(w, path, entry["kind"]) for w in wants)]


def _wanted(want: presets.Want, path: str, kind: str) -> bool:
    folder = want.folder.as_posix() + "/"
    if not path.startswith(folder):
        return False
    name = path[len(folder):]
    return want.matches(f"{name}/tokenizer.json" if kind == "tokenizer" else name)  # a tokenizer is a folder's files


def all_files(task: str = "t2v-1.3B") -> list[dict]:
    """Every file of both formats (the content hash covers them all, so one folder serves every selection)."""
    seen: dict[str, dict] = {}
    for fmt in Format:
        for f in files(fmt, list(Trainer), task):
            seen[f["path"]] = f
    return [seen[p] for p in sorted(seen)]
