"""Model presets: which Wan files each trainer needs, where they come from, and where they land.

Layout under the models root (`runner download --to DIR`, the job's `models.root`):
    Wan2.1-T2V-14B/                          the official repository, only the files a trainer reads
    Wan_2.1_ComfyUI_repackaged/split_files/  the ComfyUI single files (format comfy)
    Wan_2.2_ComfyUI_Repackaged/split_files/  the Wan2.2 ComfyUI single files (A14B experts, TI2V-5B)
Tokenizers musubi would fetch from the hub at run time go to the Hugging Face cache (the job's `hf_cache`).

Formats:
- official: DiT and T5 from the official repository.
- comfy: the ComfyUI repackaged DiT (bf16 for Wan2.1, fp16 for Wan2.2: fp8_scaled DiTs are rejected by both trainers)
  instead of the official DiT shards; the official folder is still needed for config.json, the VAE and the tokenizers
  (diffusion-pipe's ckpt_path). T5: diffusion-pipe loads ComfyUI's umt5_xxl_fp16; musubi only loads the official .pth.
  The ComfyUI VAE is never fetched: diffusion-pipe needs the official VAE in ckpt_path anyway and musubi reads it.

Checked against the trainers' docs at the pins (the hub is not reachable where this was written):
- Wan2.2 A14B: diffusion-pipe docs/supported_models.md ("Wan2.2": ckpt_path Wan2.2-T2V-A14B, transformer_path
  <ckpt>/low_noise_model, the ComfyUI file wan2.2_t2v_low_noise_14B_fp16.safetensors, and the exclude patterns
  "models_t5*" "*/diffusion_pytorch_model*"); musubi docs/wan.md (DiTs from Comfy-Org/Wan_2.2_ComfyUI_Repackaged
  split_files/diffusion_models, fp16; the VAE is Wan2.1_VAE.pth; no CLIP); both trainers' wan configs
  (low_noise_checkpoint "low_noise_model", high_noise_checkpoint "high_noise_model", vae Wan2.1_VAE.pth).
  diffusion-pipe reads <ckpt>/low_noise_model/config.json when transformer_path is a file (models/wan/wan.py):
  the A14B repositories have no top-level config.json.
- Wan2.2 TI2V-5B: diffusion-pipe models/wan/configs.py (vae Wan2.2_VAE.pth, t5 models_t5_umt5-xxl-enc-bf16.pth,
  google/umt5-xxl); musubi docs/wan.md ("Wan2.2_VAE.pth is for 5B model"). Repository Wan-AI/Wan2.2-TI2V-5B and
  the ComfyUI names wan2.2_ti2v_5B_fp16.safetensors / the I2V expert names follow the T2V ones above by Comfy-Org's
  naming; they are not named in either doc: UNVERIFIED until `runner download --dry-run` runs against the hub.
- Wan2.1 FLF2V-14B: diffusion-pipe models/wan/wan.py (model_type 'flf2v' from config.json, the CLIP files of
  I2V); the repository Wan-AI/Wan2.1-FLF2V-14B-720P and wan2.1_flf2v_720p_14B_fp16.safetensors are not named in
  either doc: UNVERIFIED.
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
COMFY_REPO_22 = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
COMFY_T5 = "split_files/text_encoders/umt5_xxl_fp16.safetensors"
OFFICIAL_T5 = "models_t5_umt5-xxl-enc-bf16.pth"
OFFICIAL_VAE = "Wan2.1_VAE.pth"
OFFICIAL_VAE_22 = "Wan2.2_VAE.pth"
EXPERT_FOLDERS = {"low": "low_noise_model", "high": "high_noise_model"}  # the A14B repositories' expert folders
OFFICIAL_CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
OFFICIAL_DIT = "diffusion_pytorch_model*"
OFFICIAL_EXPERT_DIT = "*/diffusion_pytorch_model*"  # A14B: <expert folder>/diffusion_pytorch_model-*.safetensors
T5_TOKENIZER = ("Wan-AI/Wan2.1-T2V-14B", "google/umt5-xxl")
CLIP_TOKENIZER = ("Wan-AI/Wan2.1-I2V-14B-720P", "xlm-roberta-large")


class Format(str, Enum):
    official = "official"
    comfy = "comfy"


@dataclass(frozen=True)
class Preset:
    task: Task
    official_repo: str
    comfy_dit: str  # A14B: the low-noise expert
    comfy_repo: str = COMFY_REPO
    comfy_dit_high: str | None = None  # A14B: the high-noise expert

    @property
    def comfy_dir(self) -> Path:
        return Path(self.comfy_repo.split("/")[1])

    @property
    def vae(self) -> str:
        return OFFICIAL_VAE_22 if self.task is Task.ti2v_5b else OFFICIAL_VAE

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
        Preset(Task.flf2v_14b, "Wan-AI/Wan2.1-FLF2V-14B-720P", "split_files/diffusion_models/wan2.1_flf2v_720p_14B_fp16.safetensors"),
        Preset(Task.t2v_a14b, "Wan-AI/Wan2.2-T2V-A14B", "split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors",
               COMFY_REPO_22, "split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors"),
        Preset(Task.i2v_a14b, "Wan-AI/Wan2.2-I2V-A14B", "split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors",
               COMFY_REPO_22, "split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors"),
        Preset(Task.ti2v_5b, "Wan-AI/Wan2.2-TI2V-5B", "split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors", COMFY_REPO_22),
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
    """Everything `trainers` need to train `preset` in `fmt`: both experts of an A14B preset, which `expert:` picks from."""
    task = preset.task
    clip = [OFFICIAL_CLIP, "xlm-roberta-large/*"] if task.needs_clip else []
    # diffusion-pipe reads config.json from ckpt_path, or for A14B from its low-noise folder (models/wan/wan.py)
    config = [f"{folder}/config.json" for folder in EXPERT_FOLDERS.values()] if task.has_experts else ["config.json"]
    official = config + [preset.vae, "google/umt5-xxl/*"] + clip
    comfy: list[str] = []
    if fmt is Format.official:
        official += [OFFICIAL_EXPERT_DIT if task.has_experts else OFFICIAL_DIT, OFFICIAL_T5]
    else:
        comfy += [preset.comfy_dit] + ([preset.comfy_dit_high] if preset.comfy_dit_high else [])
        if Trainer.musubi in trainers:
            official.append(OFFICIAL_T5)
    wants = [Want(preset.official_repo, tuple(official), preset.official_dir)]
    if comfy and preset.comfy_repo != COMFY_REPO:
        wants.append(Want(preset.comfy_repo, tuple(comfy), preset.comfy_dir))
        comfy = []
    if fmt is Format.comfy and Trainer.diffpipe in trainers:
        comfy.append(COMFY_T5)
    if comfy:
        wants.append(Want(COMFY_REPO, tuple(comfy), Path(COMFY_REPO.split("/")[1])))
    if Trainer.musubi in trainers:
        tokenizers = [T5_TOKENIZER] + ([CLIP_TOKENIZER] if task.needs_clip else [])
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
        "vae": official / p.vae,
        "clip": official / OFFICIAL_CLIP if task.needs_clip else None,
        "dit_high_noise": None,
    }
    if fmt is Format.comfy:
        files["dit"] = p.comfy_dir / p.comfy_dit
        files["dit_high_noise"] = p.comfy_dir / p.comfy_dit_high if p.comfy_dit_high else None
        files["t5"] = comfy / COMFY_T5 if trainer is Trainer.diffpipe else official / OFFICIAL_T5
    elif task.has_experts:
        # diffusion-pipe takes an expert's folder as transformer_path; musubi its first shard (a high-noise expert
        # without shards stays unset: checks ask for it when the job trains it)
        for key, expert in (("dit", "low"), ("dit_high_noise", "high")):
            folder = official / EXPERT_FOLDERS[expert]
            try:
                files[key] = folder if trainer is Trainer.diffpipe else _official_dit(folder, task, root, listdir)
            except UserError:
                if expert == "low":
                    raise
        if trainer is Trainer.musubi:
            files["t5"] = official / OFFICIAL_T5
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
