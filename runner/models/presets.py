"""Model presets: which Wan2.1 files each trainer needs, where they come from, and where they land.

Layout under the models root (`runner download --to DIR`, the job's `models.root`):
    Wan2.1-T2V-14B/                          the official repository, only the files a trainer reads
    Wan_2.1_ComfyUI_repackaged/split_files/  the ComfyUI single files (format comfy)
Tokenizers musubi would fetch from the hub at run time go to the Hugging Face cache (the job's `hf_cache`).

Formats:
- official: DiT and T5 from the official repository.
- comfy: the ComfyUI repackaged bf16 DiT (fp8_scaled DiTs are rejected by both trainers) instead of the official
  DiT shards; the official folder is still needed for config.json, the VAE and the tokenizers (diffusion-pipe's
  ckpt_path). T5: diffusion-pipe loads ComfyUI's umt5_xxl_fp16; musubi only loads the official .pth.
  The ComfyUI VAE is never fetched: diffusion-pipe needs Wan2.1_VAE.pth in ckpt_path anyway and musubi reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

from runner.errors import UserError
from runner.spec import Task, Trainer

COMFY_REPO = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
COMFY_T5 = "split_files/text_encoders/umt5_xxl_fp16.safetensors"
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_VAE = "Wan2.1_VAE.pth"
OFFICIAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
OFFICIAL_DIT = "diffusion_pytorch_model*"
T5_TOKENIZER = ("Wan-AI/Wan2.1-T2V-14B", "google/umt5-xxl")
CLIP_TOKENIZER = ("Wan-AI/Wan2.1-I2V-14B-720P", "xlm-roberta-large")


class Format(str, Enum):
    official = "official"
    comfy = "comfy"


@dataclass(frozen=True)
class Preset:
    task: Task
    official_repo: str
    comfy_dit: str

    @property
    def name(self) -> str:
        return self.task.value

    @property
    def official_dir(self) -> Path:
        return Path(self.official_repo.split("/")[1])


PRESETS: dict[str, Preset] = {
    p.name.lower(): p
    for p in (
        Preset(Task.t2v_1_3b, "Wan-AI/Wan2.1-T2V-1.3B", "split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"),
        Preset(Task.t2v_14b, "Wan-AI/Wan2.1-T2V-14B", "split_files/diffusion_models/wan2.1_t2v_14B_bf16.safetensors"),
        Preset(Task.i2v_14b_480p, "Wan-AI/Wan2.1-I2V-14B-480P", "split_files/diffusion_models/wan2.1_i2v_480p_14B_bf16.safetensors"),
        Preset(Task.i2v_14b_720p, "Wan-AI/Wan2.1-I2V-14B-720P", "split_files/diffusion_models/wan2.1_i2v_720p_14B_bf16.safetensors"),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise UserError(f"preset '{name}'", "is not a known preset.", f"use one of {', '.join(p.name for p in PRESETS.values())}") from None


@dataclass(frozen=True)
class Want:
    """Files of one repository to fetch: into a plain folder under the models root, or into the HF cache."""

    repo: str
    patterns: tuple[str, ...]
    folder: Path | None  # relative to the models root; None = the Hugging Face cache

    def matches(self, filename: str) -> bool:
        return any(fnmatch(filename, p) for p in self.patterns)


def wanted(preset: Preset, fmt: Format, trainers: list[Trainer]) -> list[Want]:
    """Everything `trainers` need to train `preset` in `fmt`."""
    i2v = preset.task.is_i2v
    official = ["config.json", OFFICIAL_VAE, "google/umt5-xxl/*"] + ([OFFICIAL_CLIP, "xlm-roberta-large/*"] if i2v else [])
    comfy: list[str] = []
    if fmt is Format.official:
        official += [OFFICIAL_DIT, OFFICIAL_T5]
    else:
        comfy.append(preset.comfy_dit)
        if Trainer.diffpipe in trainers:
            comfy.append(COMFY_T5)
        if Trainer.musubi in trainers:
            official.append(OFFICIAL_T5)
    wants = [Want(preset.official_repo, tuple(official), preset.official_dir)]
    if comfy:
        wants.append(Want(COMFY_REPO, tuple(comfy), Path(COMFY_REPO.split("/")[1])))
    if Trainer.musubi in trainers:
        tokenizers = [T5_TOKENIZER] + ([CLIP_TOKENIZER] if i2v else [])
        wants += [Want(repo, (f"{sub}/*",), None) for repo, sub in tokenizers]
    return wants


def download_args(preset: str | None, fmt: Format | str, trainer: Trainer) -> str | None:
    """The `runner download` arguments that fetch a job's preset files for its trainer (None: the job names no preset)."""
    if preset is None:
        return None
    return f"{get_preset(preset).name}{' --format official' if Format(fmt) is Format.official else ''} --trainer {trainer.value}"


def preset_files(preset: str, fmt: Format | str, trainer: Trainer, task: Task, root: Path | None = None,
                 listdir: Callable[[Path], list[str]] | None = None) -> dict[str, Path | None]:
    """Paths, relative to the models root, for `Models(root=..., **preset_files(...))`.

    Keys are the `runner.spec.Models` fields ckpt_dir, dit, t5, vae, clip. None means "not set": for diffpipe,
    dit/t5 None means ckpt_dir's own transformer / T5 are used; clip is None for T2V. For musubi with the official
    14B DiT (sharded), the first shard is named, which musubi expands to all shards; its name is read from `root`
    when given (listdir: the names in a folder under it, on the machine that holds the files; default this one),
    else a UserError asks to download first. Tokenizers live in the HF cache (see `wanted`).
    """
    p = get_preset(preset)
    fmt = Format(fmt)
    if p.task is not task:
        raise UserError("models.preset", f"'{p.name}' is for task {p.task.value}, but the job's task is {task.value}.", f"use preset {task.value}")
    official = p.official_dir
    comfy = Path(COMFY_REPO.split("/")[1])
    files: dict[str, Path | None] = {
        "ckpt_dir": official,
        "dit": None,
        "t5": None,
        "vae": official / OFFICIAL_VAE,
        "clip": official / OFFICIAL_CLIP if task.is_i2v else None,
    }
    if fmt is Format.comfy:
        files["dit"] = comfy / p.comfy_dit
        files["t5"] = comfy / COMFY_T5 if trainer is Trainer.diffpipe else official / OFFICIAL_T5
    elif trainer is Trainer.musubi:
        files["t5"] = official / OFFICIAL_T5
        files["dit"] = _official_dit(official, task, root, listdir)
    return files


def _official_dit(official: Path, task: Task, root: Path | None, listdir: Callable[[Path], list[str]] | None) -> Path:
    if task is Task.t2v_1_3b:
        return official / "diffusion_pytorch_model.safetensors"
    names = listdir(official) if listdir else [p.name for p in (root / official).glob("*")] if root else []
    shards = sorted(n for n in names if fnmatch(n, "diffusion_pytorch_model-00001-of-*.safetensors"))
    if not shards:
        raise UserError(
            "models.preset",
            f"the official {task.size} DiT is sharded and its first shard is not under {root / official if root else 'the models root'}.",
            f"run `runner download {task.value} --format official` first, or use --format comfy",
        )
    return official / shards[0]
