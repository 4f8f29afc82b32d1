"""The job file: a typed schema, YAML loading with file:line errors, and defaults from the trainers' recipes.

The schema is trainer-neutral: one job renders for diffusion-pipe or musubi-tuner by changing `trainer:`.
Rules that need the trainer, the model files or the data live in `runner.job.checks`.
"""

from __future__ import annotations

import difflib
import os
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator

from runner.errors import JobInvalid, UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trainer(str, Enum):
    diffpipe = "diffpipe"
    musubi = "musubi"


class Task(str, Enum):
    t2v_1_3b = "t2v-1.3B"
    t2v_14b = "t2v-14B"
    i2v_14b_480p = "i2v-14B-480P"
    i2v_14b_720p = "i2v-14B-720P"

    @property
    def is_i2v(self) -> bool:
        return self.value.startswith("i2v")

    @property
    def num_blocks(self) -> int:
        return NUM_BLOCKS[self.size]

    @property
    def size(self) -> str:
        return "1.3B" if self is Task.t2v_1_3b else "14B"


# Transformer blocks of each Wan2.1 DiT size (the official configs' num_layers)
NUM_BLOCKS = {"1.3B": 30, "14B": 40}
# Blocks each trainer must keep on the GPU: diffusion-pipe asserts blocks_to_swap <= blocks - 2, musubi blocks - 1.
SWAP_MARGIN = {"diffpipe": 2, "musubi": 1}
# Frame counts of a video dataset that sets no `frames` (both trainers' recipe value)
DEFAULT_VIDEO_FRAMES = [33]


def max_blocks_to_swap(trainer: Trainer, task: Task) -> int:
    return task.num_blocks - SWAP_MARGIN[trainer.value]


def round_4k1(frames: int) -> int:
    """Round down to the next 4k+1: the Wan VAE encodes the first frame, then 4 frames per latent frame."""
    return (frames - 1) // 4 * 4 + 1


def is_4k_plus_1(n: int) -> bool:
    return n >= 1 and round_4k1(n) == n


class Models(Strict):
    """Model files. Relative paths are under `root`, which is mounted read-only at /models."""

    root: Path = Field(Path("models"), description="host folder mounted read-only at /models; the model paths below are relative to it")
    preset: str | None = Field(None, description="a `runner download` preset (t2v-1.3B, t2v-14B, i2v-14B-480P, i2v-14B-720P): the files as `runner download` lays them out; fills the paths below")
    format: Literal["comfy", "official"] = Field("comfy", description="with preset: ComfyUI repackaged single files (comfy) or the official repo (official; its DiT is float32, which musubi keeps unless memory.transformer_dtype is float8: twice the GPU memory of bf16, and the memory planner counts it)")
    ckpt_dir: Path | None = Field(None, description="official Wan2.1 folder (config.json, VAE, tokenizers); the official file names inside it are the defaults of dit, t5, vae and clip")
    dit: Path | None = Field(None, description="single-file DiT (.safetensors), e.g. ComfyUI repackaged")
    t5: Path | None = Field(None, description="T5 encoder: official models_t5_umt5-xxl-enc-bf16.pth")
    vae: Path | None = Field(None, description="VAE: Wan2.1_VAE.pth or ComfyUI safetensors")
    clip: Path | None = Field(None, description="I2V CLIP: official models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")


def _resolution(value: object) -> int | tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (value[0], value[1])
    raise ValueError("a resolution is one side in pixels (512, for a square area) or [width, height] ([832, 480])")


Resolution = Annotated[Union[int, tuple[int, int]], PlainValidator(_resolution)]


class Dataset(Strict):
    path: Path = Field(description="host directory of images or videos with `<stem><caption_extension>` captions")
    kind: Literal["auto", "video", "image", "mixed"] = Field("auto", description="auto: from the files in path")
    resolutions: list[Resolution] = Field(
        default_factory=lambda: [(832, 480)], min_length=1, description="training resolutions: [width, height], or one side such as 512 for a square area"
    )
    frames: list[int] | None = Field(
        None, description="frame buckets (diffpipe) / target frames (musubi); each 4k+1. Default: " + f"{DEFAULT_VIDEO_FRAMES} for videos; images always train as 1 frame"
    )
    repeats: int = Field(1, ge=1, description="times each file counts per epoch")
    source_fps: float | None = Field(None, gt=0, description="fps of the source videos; musubi drops frames to 16 fps")
    caption_extension: str = Field(".txt", description="each media file's caption is `<stem><caption_extension>`")

    @field_validator("caption_extension")
    @classmethod
    def _dot(cls, v: str) -> str:
        if not v.startswith("."):
            raise ValueError(f"must start with a dot, e.g. '.{v}'")
        return v


class Lora(Strict):
    rank: int = Field(32, ge=1, description="LoRA rank")
    alpha: float | None = Field(None, gt=0, description="musubi only; default = rank, which is what diffusion-pipe always uses")
    dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="dtype of the saved LoRA (both trainers)")


class Optimizer(Strict):
    type: str | None = Field(
        None, description="default: adamw_optimi (diffpipe), adamw8bit (musubi); adamw, adamw8bit and sgd mean the same on both, a name only one trainer loads is refused with the other's equivalent"
    )
    lr: float | None = Field(None, gt=0, description="default: 2e-5 (diffpipe), 2e-4 (musubi)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.99), description="Adam betas")
    eps: float = Field(1e-8, description="Adam epsilon")


class Schedule(Strict):
    epochs: int = Field(16, ge=1, description="passes over the datasets")
    max_steps: int | None = Field(
        None, ge=1, description="alone: train that many optimizer steps; with epochs set too, diffpipe stops at whichever comes first and musubi refuses"
    )
    batch_size: int = Field(1, ge=1, description="clips per GPU per micro-batch")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps of linear warmup, on any number of GPUs")
    save_every_epochs: int | None = Field(1, ge=1, description="save the LoRA every N epochs")
    save_every_steps: int | None = Field(None, ge=1, description="save the LoRA every N optimizer steps")
    checkpoint_every_epochs: int | None = Field(
        None, ge=1, description="resumable state (DeepSpeed / accelerate) every N epochs (`runner resume`). Default: diffpipe with each epoch LoRA (every epoch when it saves by steps) unless checkpoint_every_minutes is set; musubi always saves state with each LoRA, so only equal to save_every_epochs"
    )
    checkpoint_every_minutes: int | None = Field(None, ge=1, description="diffpipe only: resumable state every N minutes")


class Memory(Strict):
    auto: bool = Field(False, description="`memory: auto` lets the planner pick the settings below for the GPU")
    dtype: Literal["bfloat16", "float16"] = Field("bfloat16", description="mixed precision and base dtype")
    transformer_dtype: Literal["bfloat16", "float16", "float8"] = Field("bfloat16", description="float8: fp8 base weights")
    activation_checkpointing: Literal[True, False, "unsloth"] = Field(
        True, description="recompute activations in the backward pass; unsloth also offloads them to host RAM"
    )
    blocks_to_swap: int = Field(0, ge=0, description="transformer blocks kept in host RAM and swapped onto the GPU when needed")
    text_encoder_dtype: Literal["bfloat16", "float8"] = Field(
        "bfloat16", description="umT5 while caching text: float8 caches in fp8, about 4 GiB less (musubi --fp8_t5, diffpipe text_encoder_fp8)"
    )
    text_encoder_batch: int = Field(16, ge=1, description="musubi only: captions per umT5 batch while caching (its recipe: 16)")


class Job(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="names the outputs and the runs; letters, digits, . _ -")
    trainer: Trainer = Field(description="the trainer that renders and runs the job")
    task: Task = Field(description="the Wan2.1 model and task")
    models: Models = Field(description="the model files: a preset, or paths")
    datasets: list[Dataset] = Field(min_length=1, description="folders of videos or images with captions")
    lora: Lora = Field(Lora(), description="the LoRA that is trained")
    optimizer: Optimizer = Field(Optimizer(), description="the optimizer")
    schedule: Schedule = Field(Schedule(), description="how long to train and when to save")
    memory: Memory = Field(Memory(), description="`auto`, or the settings below by hand", json_schema_extra={"doc_type": "`auto` or mapping"})
    gpus: int = Field(1, ge=1, description="number of GPUs to train on")
    output: Path = Field(Path("outputs"), description="host directory; the job writes to `<output>/<name>`")
    cache: Path = Field(Path("cache"), description="host directory for latent and text-encoder caches")
    hf_cache: Path | None = Field(None, description="host Hugging Face cache; default $HF_HOME or ~/.cache/huggingface")
    seed: int = Field(42, description="random seed")
    env: dict[str, str] = Field(default_factory=dict, description="extra container environment; wins over runner's rules")

    @field_validator("memory", mode="before")
    @classmethod
    def _auto(cls, v: object) -> object:
        return {"auto": True} if v == "auto" else v


def _key_lines(node: yaml.Node, path: tuple = ()) -> dict[tuple, int]:
    """Map every key path in a YAML document to its 1-based line, so schema errors point at the file."""
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            lines.update(_key_lines(value, sub))
            lines[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_key_lines(item, path + (i,)))
    return lines


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


FIELDS_DOC = "the job fields are listed in README.md#the-job-file and by `runner fields`"
_FIXES = {
    "extra_forbidden": f"remove it or check its spelling; {FIELDS_DOC}",
    "missing": "add it",
    "literal_error": "use one of the values listed",
    "enum": "use one of the values listed",
}
_GENERIC_FIX = "set it as the message asks; the files in examples/ show valid jobs"


def _siblings(loc: tuple) -> list[str]:
    """The field names allowed beside the last key of loc (for "did you mean")."""
    model: type[BaseModel] = Job
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def _unknown_key_fix(loc: tuple) -> str:
    close = difflib.get_close_matches(str(loc[-1]), _siblings(loc), n=1)
    return f"rename it to `{close[0]}` if you meant that, or remove it; {FIELDS_DOC}" if close else _FIXES["extra_forbidden"]


def _schema_errors(err: ValidationError, file: Path, lines: dict[tuple, int]) -> list[UserError]:
    out = []
    for e in err.errors():
        loc = e["loc"]
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
        given = f" (given: {e['input']!r})" if e["type"] not in ("missing",) and not isinstance(e["input"], dict) else ""
        problem = f"{e['msg'].removeprefix('Value error, ')}{given}."
        if e["type"] == "extra_forbidden":
            problem = f"unknown key{given}; trainers reject unknown keys, so runner does too."
        fix = _unknown_key_fix(loc) if e["type"] == "extra_forbidden" else _FIXES.get(e["type"], _GENERIC_FIX)
        out.append(UserError(f"{file}:{line}: {_dotted(loc) or 'job'}", problem, fix))
    return out


def load_job(file: Path) -> Job:
    """Parse and validate a job file against the schema."""
    return read_job(file)[0]


def read_job(file: Path) -> tuple[Job, dict[str, int]]:
    """The job, with relative host paths resolved against the job file's folder, and the line of each field."""
    try:
        text = file.read_text()
    except OSError as e:
        raise UserError(str(file), f"cannot read the job file ({e.strerror}).", "check the path") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise UserError(where, f"is not valid YAML ({getattr(e, 'problem', e)}).", "fix the syntax at that line") from e
    if not isinstance(data, dict):
        raise UserError(str(file), "is not a YAML mapping of job fields.", "start from a file in examples/")
    lines = _key_lines(node)
    try:
        job = Job.model_validate(data)
    except ValidationError as e:
        raise JobInvalid(_schema_errors(e, file, lines)) from e
    return resolve_paths(job, file.parent.resolve()), {_dotted(k): v for k, v in lines.items()}


def locate(errors: list[UserError], file: Path, lines: dict[str, int]) -> list[UserError]:
    """Prefix each error's field with file:line, using the nearest enclosing field the file spells out."""
    out = []
    for e in errors:
        field = e.where
        while field and field not in lines:
            field = field.rsplit(".", 1)[0] if "." in field else (field.rsplit("[", 1)[0] if "[" in field else "")
        out.append(UserError(f"{file}:{lines.get(field, 1)}: {e.where}", e.problem, e.fix))
    return out


def resolve_paths(job: Job, base: Path) -> Job:
    def host(p: Path) -> Path:
        # normpath, not resolve: keep the user's symlinks, drop the "..", so mounts read as written
        return Path(os.path.normpath(base / p.expanduser()))

    models = job.models.model_copy(update={"root": host(job.models.root)})
    datasets = [d.model_copy(update={"path": host(d.path)}) for d in job.datasets]
    return job.model_copy(
        update={
            "models": models,
            "datasets": datasets,
            "output": host(job.output),
            "cache": host(job.cache),
            "hf_cache": host(job.hf_cache) if job.hf_cache else None,
        }
    )
