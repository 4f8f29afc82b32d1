"""The job file: a typed schema, YAML loading with file:line errors, and defaults from the trainers' recipes.

The schema is trainer-neutral: one job renders for diffusion-pipe or musubi-tuner by changing `trainer:`.
Rules that need the trainer, the model files or the data live in `runner.job.checks`.
"""

from __future__ import annotations

import math
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, field_validator

from runner import inputs
from runner.errors import UserError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- value types shared by job fields and CLI options (runner.cli parses options through them) ---------------------


def _number(value: object) -> object:
    # YAML's true/false would pass as 1/0: a number field takes numbers only
    if isinstance(value, bool):
        raise ValueError(f"expects a number, not {str(value).lower()}")
    return value


def _not_number(value: object) -> object:
    # 1 and 0 would pass as true/false: a true/false field takes true or false
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"expects true or false, not the number {value}")
    return value


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}")
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("holds a control character (newline, tab, NUL, …)")
    return value


def _path(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("is empty; give a path")
    if isinstance(value, str):
        _text(value)
    return value


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number), AfterValidator(_finite)]
PositiveFloat = Annotated[float, BeforeValidator(_number), AfterValidator(_finite), Field(gt=0)]
Count = Annotated[int, BeforeValidator(_number), Field(ge=1)]
GiB = PositiveFloat  # memory sizes: --vram, --ram
HostPath = Annotated[Path, BeforeValidator(_path)]
Text = Annotated[str, AfterValidator(_text)]
Fraction = Annotated[float, BeforeValidator(_number), AfterValidator(_finite), Field(ge=0, lt=1)]


def _frame_count(n: int) -> int:
    if n < 1:
        raise ValueError(f"{n} frames: a frame count is 4k+1 and at least 1 (1, 5, 9, …, 33, …, 81)")
    return n


FrameCount = Annotated[int, BeforeValidator(_number), AfterValidator(_frame_count)]
CAPTION_EXTENSION = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._-]{0,31}")


def _caption_extension(value: str) -> str:
    if not CAPTION_EXTENSION.fullmatch(value):
        stem = re.sub(r"[^A-Za-z0-9._-]", "", value.rsplit("/", 1)[-1]).lstrip(".") or "txt"
        raise ValueError(f"is the suffix after each media file's stem, a dot then letters or digits, e.g. '.{stem}'")
    return value


CaptionExtension = Annotated[str, AfterValidator(_caption_extension)]
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_name(name: str) -> str:
    if not ENV_NAME.fullmatch(name):
        raise ValueError("an environment variable name is letters, digits and _, not starting with a digit")
    return name


EnvName = Annotated[str, AfterValidator(_env_name)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("holds a NUL character")
    return value


EnvValue = Annotated[str, AfterValidator(_no_nul)]


class Trainer(str, Enum):
    diffpipe = "diffpipe"
    musubi = "musubi"


class Task(str, Enum):
    t2v_1_3b = "t2v-1.3B"
    t2v_14b = "t2v-14B"
    i2v_14b_480p = "i2v-14B-480P"
    i2v_14b_720p = "i2v-14B-720P"
    t2v_a14b = "t2v-A14B"
    i2v_a14b = "i2v-A14B"
    ti2v_5b = "ti2v-5B"
    flf2v_14b = "flf2v-14B"

    @property
    def is_i2v(self) -> bool:
        """Conditioned on frames of each clip (the first; FLF2V the first and the last): trains on videos only."""
        return self.value.startswith(("i2v", "flf2v"))

    @property
    def is_flf2v(self) -> bool:
        return self is Task.flf2v_14b

    @property
    def is_wan22(self) -> bool:
        return self in (Task.t2v_a14b, Task.i2v_a14b, Task.ti2v_5b)

    @property
    def has_experts(self) -> bool:
        """Wan2.2 A14B: a high-noise and a low-noise DiT, switched at a timestep boundary."""
        return self in (Task.t2v_a14b, Task.i2v_a14b)

    @property
    def needs_clip(self) -> bool:
        """Wan2.1's I2V and FLF2V condition on CLIP image features too; Wan2.2 needs no CLIP."""
        return self.is_i2v and not self.is_wan22

    @property
    def num_blocks(self) -> int:
        return NUM_BLOCKS[self.size]

    @property
    def size(self) -> str:
        return {Task.t2v_1_3b: "1.3B", Task.ti2v_5b: "5B"}.get(self, "14B")

    @property
    def fps(self) -> int:
        """The frame rate the model is trained at: TI2V-5B 24 (both trainers' configs: sample_fps 24, diffusion-pipe's
        framerate 24), every other Wan model 16."""
        return 24 if self is Task.ti2v_5b else 16

    @property
    def boundary(self) -> float | None:
        """A14B: the timestep (0..1) where inference switches from the high-noise to the low-noise expert (the
        official configs, as both trainers' docs give it: T2V 0.875, I2V 0.9)."""
        return {Task.t2v_a14b: 0.875, Task.i2v_a14b: 0.9}.get(self)


# Transformer blocks of each Wan DiT size (the official configs' num_layers; Wan2.2 A14B experts are 14B-shaped)
NUM_BLOCKS = {"1.3B": 30, "14B": 40, "5B": 30}
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


def _preset(name: str) -> str:
    # `runner download` presets are named after the task they train (runner.models.presets), in any case
    if name.lower() not in {t.value.lower() for t in Task}:
        raise ValueError(f"is not a `runner download` preset; the presets are {', '.join(t.value for t in Task)}")
    return name


class Models(Strict):
    """Model files. Relative paths are under `root`, which is mounted read-only at /models."""

    root: HostPath = Field(Path("models"), description="host folder mounted read-only at /models; the model paths below are relative to it")
    preset: Annotated[Text, AfterValidator(_preset)] | None = Field(None, description="a `runner download` preset, named after its task (t2v-1.3B, t2v-14B, i2v-14B-480P, i2v-14B-720P, t2v-A14B, i2v-A14B, ti2v-5B, flf2v-14B): the files as `runner download` lays them out; fills the paths below")
    format: Literal["comfy", "official"] = Field("comfy", description="with preset: ComfyUI repackaged single files (comfy) or the official repo (official; its DiT is float32, which musubi keeps unless memory.transformer_dtype is float8: twice the GPU memory of bf16, and the memory planner counts it)")
    ckpt_dir: HostPath | None = Field(None, description="official Wan2.1 folder (config.json, VAE, tokenizers); the official file names inside it are the defaults of dit, t5, vae and clip")
    dit: HostPath | None = Field(None, description="single-file DiT (.safetensors), e.g. ComfyUI repackaged; for A14B the low-noise expert")
    dit_high_noise: HostPath | None = Field(None, description="A14B: the high-noise expert's DiT (.safetensors; for diffpipe also the official high_noise_model folder)")
    t5: HostPath | None = Field(None, description="T5 encoder: official models_t5_umt5-xxl-enc-bf16.pth")
    vae: HostPath | None = Field(None, description="VAE: Wan2.1_VAE.pth (TI2V-5B: Wan2.2_VAE.pth) or ComfyUI safetensors")
    clip: HostPath | None = Field(None, description="I2V CLIP: official models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")


def _resolution(value: object) -> int | tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (value[0], value[1])
    raise ValueError("a resolution is one side in pixels (512, for a square area) or [width, height] ([832, 480])")


Resolution = Annotated[Union[int, tuple[int, int]], PlainValidator(_resolution)]


def _gpus(value: object) -> int | str | list[int]:
    """A count, `all` (every GPU of the machine, resolved once against its inventory) or device ids."""
    if value == "all":
        return "all"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{value} GPUs: a job trains on at least 1")
        return value
    if not isinstance(value, list):
        raise ValueError("is a count of GPUs (2), `all` (every GPU of the machine) or a list of device ids ([0, 2])")
    if not value:
        raise ValueError("is an empty list of device ids; name at least one, e.g. [0]")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"holds {v!r}, which is not a device id: ids are nvidia-smi's GPU indexes 0, 1, 2, …")
    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise ValueError(f"names device {', '.join(map(str, twice))} more than once; each GPU runs one training process")
    return list(value)


Gpus = Annotated[Union[int, Literal["all"], list[int]], PlainValidator(_gpus)]


class Dataset(Strict):
    path: HostPath = Field(description="host directory of images or videos with `<stem><caption_extension>` captions")
    kind: Literal["auto", "video", "image", "mixed"] = Field("auto", description="auto: from the files in path")
    resolutions: list[Resolution] = Field(
        default_factory=lambda: [(832, 480)], min_length=1, description="training resolutions: [width, height], or one side such as 512 for a square area"
    )
    frames: list[FrameCount] | None = Field(
        None, description="frame buckets (diffpipe) / target frames (musubi); each 4k+1. Default: " + f"{DEFAULT_VIDEO_FRAMES} for videos; images always train as 1 frame"
    )
    repeats: Count = Field(1, description="times each file counts per epoch")
    source_fps: PositiveFloat | None = Field(None, description="fps of the source videos; musubi drops frames to 16 fps")
    caption_extension: CaptionExtension = Field(".txt", description="each media file's caption is `<stem><caption_extension>`")


class Lora(Strict):
    rank: Count = Field(32, description="LoRA rank")
    alpha: PositiveFloat | None = Field(None, description="musubi only; default = rank, which is what diffusion-pipe always uses")
    dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="dtype of the saved LoRA (both trainers)")


class Optimizer(Strict):
    type: Text | None = Field(
        None, description="default: adamw_optimi (diffpipe), adamw8bit (musubi); adamw, adamw8bit and sgd mean the same on both, a name only one trainer loads is refused with the other's equivalent"
    )
    lr: PositiveFloat | None = Field(None, description="default: 2e-5 (diffpipe), 2e-4 (musubi)")
    weight_decay: Float = Field(0.01, ge=0, description="AdamW weight decay")
    betas: tuple[Fraction, Fraction] = Field((0.9, 0.99), description="Adam betas")
    eps: PositiveFloat = Field(1e-8, description="Adam epsilon")


class Schedule(Strict):
    epochs: Count = Field(16, description="passes over the datasets")
    max_steps: Count | None = Field(
        None, description="alone: train that many optimizer steps; with epochs set too, diffpipe stops at whichever comes first and musubi refuses"
    )
    batch_size: Count = Field(1, description="clips per data-parallel replica per micro-batch (per GPU; per pipeline of pipeline_stages GPUs): an optimizer step sees batch_size × replicas × gradient_accumulation_steps clips on both trainers")
    gradient_accumulation_steps: Count = Field(1, description="micro-batches per optimizer step")
    warmup_steps: Int = Field(0, ge=0, description="optimizer steps of linear warmup to the learning rate, the same on any number of GPUs and on both trainers (the lr is not scaled with the GPU count)")
    save_every_epochs: Count | None = Field(1, description="save the LoRA every N epochs")
    save_every_steps: Count | None = Field(None, description="save the LoRA every N optimizer steps")
    checkpoint_every_epochs: Count | None = Field(
        None, description="resumable state (DeepSpeed / accelerate) every N epochs (`runner resume`). Default: diffpipe with each epoch LoRA (every epoch when it saves by steps) unless checkpoint_every_minutes is set; musubi always saves state with each LoRA, so only equal to save_every_epochs"
    )
    checkpoint_every_minutes: Count | None = Field(None, description="diffpipe only: resumable state every N minutes")


class Memory(Strict):
    auto: bool = Field(False, strict=True, description="`memory: auto` lets the planner pick the settings below for the GPU")
    dtype: Literal["bfloat16", "float16"] = Field("bfloat16", description="mixed precision and base dtype")
    transformer_dtype: Literal["bfloat16", "float16", "float8"] = Field("bfloat16", description="float8: fp8 base weights")
    activation_checkpointing: Annotated[Literal[True, False, "unsloth"], BeforeValidator(_not_number)] = Field(
        True, description="recompute activations in the backward pass; unsloth also offloads them to host RAM"
    )
    blocks_to_swap: Int = Field(0, ge=0, description="transformer blocks kept in host RAM and swapped onto the GPU when needed")
    text_encoder_dtype: Literal["bfloat16", "float8"] = Field(
        "bfloat16", description="umT5 while caching text: float8 caches in fp8, about 4 GiB less (musubi --fp8_t5, diffpipe text_encoder_fp8)"
    )
    text_encoder_batch: Count = Field(16, description="musubi only: captions per umT5 batch while caching (its recipe: 16)")


def _sample_side(n: int) -> int:
    if n % 16:
        raise ValueError(f"{n} px: each side of a Wan video is a multiple of 16 (8× VAE, 2×2 patches), e.g. {max(n // 16 * 16, 16)}")
    return n


def _sample_frames(n: int) -> int:
    if not is_4k_plus_1(n):
        raise ValueError(f"{n} frames: a video is 4k+1 frames (1, 5, 9, …, 33, …, 81); e.g. {round_4k1(max(n, 1))}")
    return n


def _prompt(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty; write what the video should show")
    if " --" in f" {value}":
        raise ValueError("holds ' --', which musubi reads as the start of a prompt option (--w, --h, …); rephrase without it")
    return value


SampleSide = Annotated[int, BeforeValidator(_number), Field(ge=16, le=2048), AfterValidator(_sample_side)]
SampleFrames = Annotated[int, BeforeValidator(_number), Field(ge=1, le=201), AfterValidator(_sample_frames)]
Prompt = Annotated[str, AfterValidator(_text), AfterValidator(_prompt), Field(max_length=2000)]


def _comma_list(value: object) -> object:
    return [v.strip() for v in value.split(",")] if isinstance(value, str) else value


EpochList = Annotated[list[Count], BeforeValidator(_comma_list), Field(min_length=1)]  # `runner sample --epochs 2,4,6`


class Samples(Strict):
    """Sample videos of the LoRA: musubi renders them while it trains; `runner sample` renders them for any saved LoRA."""

    prompts: list[Prompt] = Field(default_factory=list, max_length=32, description="what each sample video shows, one text per video; none: no samples while training (`runner sample --prompt` still works)")
    every_epochs: Count | None = Field(None, description="musubi: sample while training every N epochs; default: schedule.save_every_epochs, so each saved epoch has its videos")
    every_steps: Count | None = Field(None, description="musubi: sample while training every N optimizer steps (default: schedule.save_every_steps)")
    at_first: bool = Field(False, strict=True, description="musubi: also sample before the first step (the base model, to compare against)")
    during_training: bool = Field(True, strict=True, description="musubi: sample while training (it costs the sampling time at each cadence); false: only `runner sample` renders them")
    width: SampleSide = Field(832, description="video width in pixels, a multiple of 16")
    height: SampleSide = Field(480, description="video height in pixels, a multiple of 16")
    frames: SampleFrames = Field(33, description="frames per video, 4k+1 (33 at 16 fps: about 2 s)")
    steps: Annotated[Count, Field(le=200)] = Field(20, description="inference (denoising) steps per video; musubi samples with 20 while training, Wan's own default is 50")
    guidance: Annotated[PositiveFloat, Field(le=30)] = Field(5.0, description="classifier-free guidance scale (Wan2.1 T2V: 5.0)")
    seed: Int = Field(42, ge=0, lt=2**32, description="noise seed: the same seed for every epoch, so the videos differ only by the LoRA")


class Watchdog(Strict):
    """What stops a run that learns nothing, is out of GPU memory or hangs (runner.jobs.watchdog); null turns one off."""

    nan_steps: Count | None = Field(
        3, description="stop the run after this many optimizer steps in a row with a NaN or Inf loss (musubi shows its running average, which stays NaN after one); the saves made before are kept"
    )
    hang_minutes: PositiveFloat | None = Field(
        30, description="stop the run as hung when the trainer prints nothing for this many minutes (model loading and a 14B step print nothing for a few)"
    )
    oom: bool = Field(
        True, strict=True, description="after CUDA out of memory, stop the container if the trainer has not exited 15 s later (a trainer can hang holding the GPU)"
    )


class Job(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="names the outputs and the runs; letters, digits, . _ -")
    trainer: Trainer = Field(description="the trainer that renders and runs the job")
    task: Task = Field(description="the Wan model and task (Wan2.1: t2v-1.3B, t2v-14B, i2v-14B-480P, i2v-14B-720P, flf2v-14B; Wan2.2: t2v-A14B, i2v-A14B, ti2v-5B)")
    expert: Literal["low", "high", "both"] | None = Field(
        None, description="A14B only: the expert(s) the LoRA trains, each on its own timestep range (default low, which diffusion-pipe's docs say can be used alone); both: musubi trains one LoRA across both experts in one run, diffpipe trains one LoRA per expert, two runs of the job"
    )
    models: Models = Field(description="the model files: a preset, or paths")
    datasets: list[Dataset] = Field(min_length=1, description="folders of videos or images with captions")
    lora: Lora = Field(Lora(), description="the LoRA that is trained")
    optimizer: Optimizer = Field(Optimizer(), description="the optimizer")
    schedule: Schedule = Field(Schedule(), description="how long to train and when to save")
    memory: Memory = Field(Memory(), description="`auto`, or the settings below by hand", json_schema_extra={"doc_type": "`auto` or mapping"})
    gpus: Gpus = Field(1, description="GPUs of the host to train on: a count (the first N in nvidia-smi's order), `all` (every GPU, resolved once against the machine's inventory and recorded in plan.json) or device ids such as [0, 2] (nvidia-smi's indexes); one training process per GPU", json_schema_extra={"doc_type": "count, `all` or list of device ids"})
    pipeline_stages: Count = Field(1, description="diffpipe only: pipeline-parallel stages, each GPU holding 1/N of the DiT's blocks (for a model too large for one card); must divide the GPU count, whose quotient is the data-parallel replicas; no block swap with N > 1")
    output: HostPath = Field(Path("outputs"), description="host directory; the job writes to `<output>/<name>`")
    cache: HostPath = Field(Path("cache"), description="host directory for latent and text-encoder caches")
    hf_cache: HostPath | None = Field(None, description="host Hugging Face cache; default $HF_HOME or ~/.cache/huggingface")
    seed: Int = Field(42, ge=0, lt=2**32, description="random seed (numpy takes 0 to 2^32 - 1)")
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, description="extra container environment; wins over runner's rules")
    samples: Samples = Field(Samples(), description="sample videos per saved epoch: prompts, cadence, size, frames, steps, guidance, seed")
    watchdog: Watchdog = Field(Watchdog(), description="when runner stops a run by itself: a NaN loss, CUDA out of memory, no output (README: Progress and watchdogs)")

    @property
    def gpu_count(self) -> int | None:
        """GPUs the job trains on; None while `gpus: all` is not resolved against a machine (runner.job.resolve)."""
        return None if self.gpus == "all" else len(self.gpus) if isinstance(self.gpus, list) else self.gpus

    @property
    def gpu_ids(self) -> list[int] | None:
        """The device ids the job names (or `all` resolved to), None for a count: the first N devices."""
        return self.gpus if isinstance(self.gpus, list) else None

    @property
    def replicas(self) -> int:
        """Data-parallel replicas, each a whole copy of the model taking its own share of each batch: one per GPU,
        or one per pipeline of `pipeline_stages` GPUs (diffusion-pipe). 1 while `gpus: all` is unresolved."""
        return max(1, (self.gpu_count or 1) // self.pipeline_stages)

    @field_validator("memory", mode="before")
    @classmethod
    def _auto(cls, v: object) -> object:
        if v == "auto":
            return {"auto": True}
        if isinstance(v, str):
            raise ValueError("is `auto` or a mapping of the settings below (dtype, blocks_to_swap, …); "
                             "write `memory: auto` to let the planner pick them")
        return v


def experts(job: Job) -> tuple[str, ...]:
    """The A14B experts a job trains, high first ("high", "low"); () for a model without experts."""
    if not job.task.has_experts:
        return ()
    expert = job.expert or "low"
    return ("high", "low") if expert == "both" else (expert,)


def timestep_range(task: Task, expert: str) -> tuple[float, float]:
    """The share of the timesteps (0 = clean, 1 = noise) an A14B expert handles at inference, its training range."""
    assert task.boundary is not None
    return (task.boundary, 1.0) if expert == "high" else (0.0, task.boundary)


FIELDS_DOC = "the job fields are listed in README.md#the-job-file and by `runner fields`"
EXAMPLE = "the files in examples/ show valid jobs"


def load_job(file: Path) -> Job:
    """Parse and validate a job file against the schema."""
    return read_job(file)[0]


JobRead = tuple[Job, dict[str, int]]  # a job file read: the job and the line of each field (read_job)


SWEEP = "sweep"  # the block of fields to vary that makes a job file a sweep of several jobs (runner.sweep)


def read_job(file: Path) -> JobRead:
    """The job, with relative host paths resolved against the job file's folder, and the line of each field.
    A sweep (runner.sweep) is refused: the commands that take one its jobs expand it first."""
    data, lines = inputs.read_yaml(file, "job file")
    if isinstance(data, dict) and SWEEP in data:
        raise UserError(f"{file}:{lines.get((SWEEP,), 1)}: {SWEEP}", "makes this file a sweep of several jobs, and this command takes one job.",
                        "`runner train`, `runner validate` and `runner render` expand a sweep; for this command give a job file without "
                        "a sweep: block (`runner render FILE --out DIR` shows each job of the sweep).")
    return parsed_job(file, data, lines)


def parsed_job(file: Path, data: object, lines: inputs.Lines) -> JobRead:
    """The job of a parsed job file (read_job), or of one job of a sweep (runner.sweep: the lines are the sweep file's)."""
    job = inputs.validate(Job, data, file, lines, "job file", FIELDS_DOC, EXAMPLE)
    return resolve_paths(job, file.parent.resolve()), {inputs.dotted(k): v for k, v in lines.items()}


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
