"""Reading a trainer's log as it streams: the step running, progress, the loss, epochs and saves, a NaN loss, CUDA
out of memory (runner.jobs.watchdog adds them up into the run's standing and the watchdogs).

`classify` is the one place that says what a log line means. `Watch` adds the lines up: which step runs
(images/run_plan.py's `[runner] step i/n NAME …` markers) and, inside diffusion-pipe's single train step, whether
it was caching (its utils/dataset.py prints "caching latents: …" and "caching text embeddings: …" before the VAE
or T5 goes to the GPU; an error there has frames in utils/dataset.py) or training.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

STEP_MARK = "[runner] step "
CACHE_LATENTS, CACHE_TEXT, TRAIN, SAMPLING = "cache-latents", "cache-text-encoder", "train", "sampling"
SAMPLE_STEP = "sample-"  # the name of each wan_generate_video.py step of a `runner sample` run starts so (runner.jobs.sample)
DIFFPIPE_CACHING_CODE = ("utils/dataset.py", "utils/cache.py")

_PROGRESS = re.compile(r"(\d+)/(\d+) \[")  # tqdm: 'steps:  40%|####  | 4/10 [00:02<00:03, ...]'
_BAR_NAME = re.compile(r"^\s*(.*?):\s+\d+%\|")  # tqdm's desc: 'steps', 'Loading wan2.1_t2v_1.3B_bf16.safetensors'
MUSUBI_TRAIN_BAR = "steps"  # training/trainer_base.py: tqdm(range(args.max_train_steps), ..., desc="steps")
_NUMBER = r"([-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|nan|inf))"
# DeepSpeed's pipeline engine, once per optimizer step in diffusion-pipe: 'steps: 3 loss: 0.1167 iter time (s): 2.990 samples/sec: 0.334'
_DEEPSPEED_STEP = re.compile(rf"^steps: (\d+) loss: {_NUMBER} iter time \(s\): (\d+(?:\.\d+)?)", re.IGNORECASE)
_AVR_LOSS = re.compile(rf"avr_loss={_NUMBER}", re.IGNORECASE)  # musubi's tqdm postfix: the running average of the loss
_RATE = re.compile(r"(\d+(?:\.\d+)?)(s/it|it/s)")  # tqdm's rate
_EPOCH = re.compile(r"^epoch (\d+)/(\d+)$")  # musubi (training/trainer_base.py): 'epoch 3/16'
_NEW_EPOCH = re.compile(r"^Started new epoch: (\d+)")  # diffusion-pipe (utils/saver.py): the epoch that starts
_RESUMED = re.compile(r"Resuming at epoch: (\d+), step: (\d+)")  # diffusion-pipe's train.py on resume
_SAVED = re.compile(r"^(?:saving checkpoint: |Saving model to directory )(\S+)")  # musubi: the file; diffusion-pipe: epochN/stepN
_NAN = re.compile(r"loss\W{0,3}nan\b", re.IGNORECASE)
_DIFFPIPE_CACHING = {"caching latents: ": CACHE_LATENTS, "caching text embeddings: ": CACHE_TEXT}
_MUSUBI_SAMPLING = "generating sample images at step"  # training/trainer_base.py, before it samples inside training
_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in ')
_RANK = re.compile(r"^\[rank\d+\]:\s?")  # torchrun (accelerate on several GPUs) can prefix a rank's lines: "[rank0]: "
_OOM = re.compile("|".join([
    r"CUDA out of memory\. Tried to allocate ",  # torch's caching allocator (c10/cuda/CUDACachingAllocator.cpp), all versions
    r"CUDA (?:driver )?error: out of memory",  # a CUDA runtime/driver call outside the allocator (C10_CUDA_CHECK)
    r"CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED",  # cuBLAS/cuDNN handles and workspaces
    r"^Error out of memory at line \d+ in file ",  # bitsandbytes' CUDA_CHECK_RETURN (csrc/ops.cuh), then exit(1)
    r"cuda API failed with status 2: out of memory",  # bitsandbytes' checkCudaStatus
    r"^CUDA error 2 at \S+:\d+",  # DeepSpeed's CUDA_CHECK (csrc/includes/context.h); 2 = cudaErrorMemoryAllocation
    r"Cuda failure (?:2 )?'out of memory'",  # NCCL (DeepSpeed's and DDP's collectives)
]))
_SIZE = r"(\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB)"
# torch ≥ 2.1 ("capacty" in 2.1): "Tried to allocate 40.00 MiB. GPU 0 has a total capacity of 11.50 GiB of which 17.25 MiB is free."
_ALLOC_NEW = re.compile(rf"Tried to allocate {_SIZE}\. GPU (\d+) has a total capac(?:i)?ty of {_SIZE} of which {_SIZE} is free")
# torch < 2.1: "Tried to allocate 20.00 MiB (GPU 0; 7.79 GiB total capacity; 6.45 GiB already allocated; 3.31 MiB free; …"
_ALLOC_OLD = re.compile(rf"Tried to allocate {_SIZE} \(GPU (\d+); {_SIZE} total capacity; {_SIZE} already allocated; {_SIZE} free;")
_UNIT_GIB = {"bytes": 1 / 2**30, "KiB": 1 / 2**20, "MiB": 1 / 2**10, "GiB": 1.0}

def nan_hint(job_id: str, nan_steps: int | None) -> str:
    """Said at the first NaN or Inf loss of a run."""
    then = (f"runner stops the run if it stays so for {nan_steps} steps in a row (watchdog.nan_steps); stop it now with "
            f"`runner stop {job_id}`" if nan_steps else f"stop it with `runner stop {job_id}`")
    return ("the loss is NaN or Inf, so the run learns nothing from here on if it stays so. Usual causes: mixed precision that "
            "does not match the DiT file (memory.dtype), fp16 overflow, or a learning rate too high for the optimizer; "
            f"{then}, and check the job with `runner validate`.")


@dataclass(frozen=True)
class Line:
    """What one log line says; every field empty for an ordinary line."""

    step: str | None = None  # a step marker: the step's name
    marker: str | None = None  # a step marker: "1/3 cache-latents start", for the progress display
    progress: tuple[int, int] | None = None
    bar: str | None = None  # the progress bar's name (tqdm's desc)
    nan: bool = False
    oom: bool = False
    caching: str | None = None  # diffusion-pipe announces a caching phase
    sampling: bool = False  # musubi starts sampling inside its train step
    traceback: bool = False  # a Python traceback begins
    frame: str | None = None  # a traceback frame: its source file
    train_step: int | None = None  # an optimizer step done (diffusion-pipe's DeepSpeed line; musubi's tqdm count is `progress`)
    loss: float | None = None  # diffusion-pipe: the step's loss; musubi: its running average
    seconds_per_step: float | None = None  # as the trainer measures it
    epoch: int | None = None  # the epoch that starts
    epochs: int | None = None  # musubi names the number of epochs with it
    saved: str | None = None  # a LoRA save: musubi's file, diffusion-pipe's folder in its run folder


def classify(line: str) -> Line:
    line = _RANK.sub("", line, count=1)
    if line.startswith(STEP_MARK):
        marker = line[len(STEP_MARK):].split(":")[0]
        words = marker.split()
        return Line(step=words[1] if len(words) > 1 else None, marker=marker)
    if _OOM.search(line):
        return Line(oom=True)
    if line.startswith("Traceback (most recent call last):"):
        return Line(traceback=True)
    if m := _FRAME.match(line):
        return Line(frame=m.group(1))
    if m := _DEEPSPEED_STEP.match(line):
        loss = float(m.group(2))
        return Line(train_step=int(m.group(1)), loss=loss, seconds_per_step=float(m.group(3)), nan=not math.isfinite(loss))
    if m := _EPOCH.match(line.strip()) or _NEW_EPOCH.match(line):
        return Line(epoch=int(m.group(1)), epochs=int(m.group(2)) if m.re is _EPOCH else None)
    if m := _RESUMED.search(line):
        return Line(epoch=int(m.group(1)), train_step=int(m.group(2)) - 1)
    if m := _SAVED.match(line.strip()):
        return Line(saved=m.group(1))
    if _MUSUBI_SAMPLING in line:
        return Line(sampling=True)
    caching = next((phase for text, phase in _DIFFPIPE_CACHING.items() if line.startswith(text)), None)
    m = _PROGRESS.search(line)
    loss = float(a.group(1)) if (a := _AVR_LOSS.search(line)) else None
    nan = bool(_NAN.search(line)) or (loss is not None and not math.isfinite(loss))
    bar = b.group(1) if m and (b := _BAR_NAME.match(line)) else None
    return Line(progress=(int(m.group(1)), int(m.group(2))) if m else None, bar=bar, loss=loss,
                seconds_per_step=_rate(line) if m else None, nan=nan, caching=caching)


def _rate(line: str) -> float | None:
    """tqdm's rate as seconds per step; None before it has one (tqdm prints '?it/s')."""
    found = _RATE.findall(line)
    if not found:
        return None
    value, unit = float(found[-1][0]), found[-1][1]
    return value if unit == "s/it" else (1 / value if value else None)


def _gib(value: str, unit: str) -> float:
    return float(value) * _UNIT_GIB[unit]


@dataclass(frozen=True)
class OutOfMemory:
    phase: str  # cache-latents | cache-text-encoder | train, or another step's name
    message: str
    gpu: int | None = None
    total_gib: float | None = None  # the card, as CUDA reports it
    free_gib: float | None = None
    tried_gib: float | None = None

    @classmethod
    def parse(cls, line: str, phase: str) -> "OutOfMemory":
        if m := _ALLOC_NEW.search(line):
            tried, gpu, total, free = _gib(*m.group(1, 2)), int(m.group(3)), _gib(*m.group(4, 5)), _gib(*m.group(6, 7))
        elif m := _ALLOC_OLD.search(line):
            tried, gpu, total, free = _gib(*m.group(1, 2)), int(m.group(3)), _gib(*m.group(4, 5)), _gib(*m.group(8, 9))
        else:
            return cls(phase, line.strip())
        return cls(phase, line.strip(), gpu, total, free, tried)

    @property
    def memory(self) -> str:
        """What the message reports about the card, or that it reports nothing."""
        if self.total_gib is None:
            return "the message reports no GPU memory figures"
        return (f"GPU {self.gpu} has {self.total_gib:.2f} GiB in all, {self.free_gib:.2f} GiB was free and "
                f"{self.tried_gib:.2f} GiB more was asked for")

    def summary(self) -> str:
        """One line for the job record (`runner ps`)."""
        card = f" (GPU {self.gpu}: {self.total_gib:.1f} GiB)" if self.total_gib is not None else ""
        return f"CUDA out of memory in {self.phase}{card}"


@dataclass
class Watch:
    """The state a trainer's log adds up to, line by line."""

    trainer: str  # "musubi" | "diffpipe"
    step: str | None = None
    caching: str | None = None
    sampling: bool = False  # between musubi's "generating sample images" and its next training step
    frames: list[str] = field(default_factory=list)  # of the traceback being printed
    oom: OutOfMemory | None = None

    def feed(self, text: str) -> Line:
        line = classify(text)
        if line.step:
            self.step, self.caching, self.frames = line.step, None, []
        if line.caching:
            self.caching = line.caching
        if line.sampling or line.loss is not None:  # sampling's own bars carry no loss; training's next step does
            self.sampling = line.sampling
        if line.traceback:
            self.frames = []
        if line.frame:
            self.frames.append(line.frame)
        if line.oom and self.oom is None:
            self.oom = OutOfMemory.parse(text, self.phase())
        return line

    def phase(self) -> str:
        """The step running; for diffusion-pipe, which caches inside its train step, the caching phase when the
        traceback being printed runs through its caching code."""
        if self.trainer == "diffpipe" and any(f.endswith(DIFFPIPE_CACHING_CODE) for f in self.frames):
            return self.caching or CACHE_LATENTS
        if self.sampling or (self.step or "").startswith(SAMPLE_STEP):
            return SAMPLING
        return self.step or TRAIN


def scan(lines: Iterable[str], trainer: str) -> Watch:
    watch = Watch(trainer)
    for line in lines:
        watch.feed(line)
    return watch


# --- what to change after an out-of-memory ----------------------------------------------------------


def oom_report(oom: OutOfMemory, job_file: str, vram_gib: float | None, ram_gib: float | None, stopped: bool, trainer: str = "") -> str:
    """One paragraph: the phase, the memory the message reports, the settings `runner plan` picks for the card, and
    what fills the GPU in that phase with the settings that shrink it."""
    ended = " The trainer did not exit after the error, so runner stopped its container." if stopped else ""
    plan = _what_to_change(oom.phase, job_file, vram_gib, ram_gib)
    return f"CUDA ran out of GPU memory in {oom.phase}: {oom.memory}.{ended} {plan} {phase_fix(oom.phase, trainer)}".rstrip()


# What fills the GPU in each phase, and the job settings that shrink it (UPSTREAM.md's measurements on an H200)
_PHASE_FIX = {
    CACHE_TEXT: ("caching text embeddings moves the whole umT5-XXL encoder to the GPU (about 12.6 GiB in bf16, any "
                 "resolution): set memory.text_encoder_dtype: float8 (about 4 GiB less)"),
    CACHE_LATENTS: ("caching latents runs the VAE over each clip, whose memory grows with width × height × frames "
                    "(6 GiB at 832×480×81, 13.4 GiB at 1280×720×81): lower datasets[].resolutions or datasets[].frames"),
    TRAIN: ("a training step holds the DiT, the LoRA, the optimizer and the activations of one micro-batch: raise "
            "memory.blocks_to_swap, set memory.activation_checkpointing: unsloth or memory.transformer_dtype: float8, lower "
            "schedule.batch_size, datasets[].resolutions or datasets[].frames"),
    SAMPLING: ("sampling runs the DiT on the sample's full latent with the text encoder and VAE beside it: make the "
               "samples smaller (size, frames) or raise memory.blocks_to_swap"),
}
_TRAINER_FIX = {
    ("musubi", CACHE_TEXT): "; musubi also takes fewer captions per umT5 batch: memory.text_encoder_batch: 4",
}


def phase_fix(phase: str, trainer: str) -> str:
    """What to change for an out-of-memory in this phase, concretely, for this trainer."""
    fix = _PHASE_FIX.get(phase)
    return f"In {phase}, {fix}{_TRAINER_FIX.get((trainer, phase), '')}." if fix else ""


def _what_to_change(phase: str, job_file: str, vram_gib: float | None, ram_gib: float | None) -> str:
    from pathlib import Path

    from runner.errors import UserError
    from runner.gpu.planner import plan_for_job
    from runner.spec import load_job

    generic = f"Run `runner plan {job_file} --vram N` with the card's memory in GiB and set what it picks under `memory:`."
    if vram_gib is None:
        return generic
    try:
        job = load_job(Path(job_file))
    except (UserError, OSError, ValueError):
        return generic
    vram_gib = round(vram_gib, 2)
    p = plan_for_job(job, vram_gib, ram_gib)
    command = f"`runner plan {job_file} --vram {vram_gib:g}`"
    if not p.fits:
        return f"Nothing fits this job in {vram_gib:g} GiB ({command}: at least {p.gpu_gib:.1f} GiB); it would fit with: {'; '.join(p.suggestions)}."
    settings = ", ".join(f"memory.{k}: {v}" for k, v in p.memory_update().items()) + (f", optimizer.type: {p.optimizer_type}" if p.optimizer_type else "")
    current = job.memory.model_dump(include=set(p.memory_update())) == p.memory_update() and p.optimizer_type in (None, job.optimizer.type)
    if job.memory.auto or current:
        change = ("In this phase the whole text encoder (umT5-XXL) goes to the GPU whatever the resolution: use a GPU with more memory."
                  if phase == CACHE_TEXT else "Lower the resolution or the frame count, or use a GPU with more memory.")
        return (f"The job already runs with what {command} picks ({settings}; estimated peak {p.gpu_gib:.1f} GiB), so runner's "
                f"estimate for this phase is too low on this card. {change}")
    return (f"{command} picks {settings} (estimated peak {p.gpu_gib:.1f} GiB + {p.margin_gib:.1f} GiB margin): set these in the job "
            f"(or write `memory: auto`) and run `runner train {job_file}` again.")
