"""`runner selftest`: each trainer, end to end, on a random-weight Wan2.1 T2V-1.3B, on a GPU host.

Per trainer: the model files of the real architecture in `runner download`'s layout (made once per host, in
the trainer image: runner/selftest/modelfiles.py), two synthetic captioned clips, a job file, then the
ordinary `runner train` path (launch.start + follow: cache latents, cache text, train, save). The LoRA it
saved is checked (runner/selftest/lora.py) and the run measured: s/step from the trainer's progress, peak
GPU memory from nvidia-smi on the host, against the memory planner's estimate for the same job.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from rich.console import Console

from runner import config
from runner.errors import UserError
from runner.images import builder
from runner.jobs import launch, records
from runner.models import presets
from runner.models.presets import Format
from runner.selftest import lora, modelfiles, watch
from runner.spec import Task, Trainer, load_job
from runner.trainers.resolved import Earlier

CLIPS = 2
FRAMES = 17  # 4k+1 at 16 fps: about one second
SIZE = 256
STANDIN = "STAND-IN"


@dataclass
class Result:
    trainer: str
    passed: bool
    steps: int | None = None
    s_per_step: float | None = None
    peak_gib: float | None = None  # nvidia-smi on the host during the training step, beyond what was in use before
    step_peaks_gib: dict[str, float] = field(default_factory=dict)  # the same for each step of the plan (caching too)
    plan_gib: float | None = None  # the memory planner's estimate for this job on this GPU
    lora: lora.LoraCheck | None = None
    standin: bool = False  # the image holds CI's stand-in trainer (tests/standin/): no model math
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    log: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def work_dir() -> Path:
    return config.state_dir() / "selftest"


def write_clips(folder: Path) -> Path:
    """Synthetic captioned clips (runner owns the folder: it is made anew each run, so each run re-caches)."""
    from runner.data.synth import write_caption, write_video

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(1, CLIPS + 1):
        write_caption(write_video(folder / f"clip{i}.mp4", FRAMES, 16, SIZE, SIZE), f"a moving test pattern, clip {i}")
    return folder


def write_job(folder: Path, trainer: Trainer, fmt: Format, model_set: modelfiles.ModelSet, settings: config.Settings,
              steps: int, gpu: bool) -> Path:
    """A job training `steps` steps (whole epochs over the clips, one save at the end) on the selftest models."""
    epochs = -(-steps // CLIPS)
    paths = presets.preset_files(Task.t2v_1_3b.value, fmt, trainer, Task.t2v_1_3b)
    model_paths = {k: str(model_set.relative / v.as_posix()) for k, v in paths.items() if v is not None}
    job = {
        "name": f"selftest-{trainer.value}", "trainer": trainer.value, "task": Task.t2v_1_3b.value,
        "models": {"root": str(settings.models), **model_paths},
        "datasets": [{"path": str(folder / "data"), "resolutions": [[SIZE, SIZE]], "frames": [FRAMES]}],
        "schedule": {"epochs": epochs, "save_every_epochs": epochs},
        "output": str(folder / "outputs"), "cache": str(folder / "cache"),
    }
    if gpu:
        job["memory"] = {"auto": True}
    path = folder / "jobs" / f"{trainer.value}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by `runner selftest`\n" + yaml.safe_dump(job, sort_keys=False))
    return path


def image_for(executor, trainer: Trainer, settings: config.Settings, inventory) -> tuple[str, builder.Pins]:
    """The trainer image `runner train` would use on this host and its pins; the image is checked there (and
    sent to a remote host that lacks it)."""
    from runner.gpu import variant

    table = variant.choose(trainer.value, inventory).pins_table if inventory is not None else "default"
    pins = builder.load_pins(trainer.value, table, pins_file=settings.pins)
    ref = builder.image_ref(pins, settings.ca_bundle)
    executor.check_image(ref, trainer.value if table == "default" else f"{trainer.value} --variant {table}")
    return ref, pins


def tokenizer_note(trainer: Trainer, pins: builder.Pins, model_set: modelfiles.ModelSet) -> str:
    """Where the trainer's umT5 tokenizer comes from: diffusion-pipe reads the models folder's, musubi the HF
    cache, which the image seeds from the hub at build (pins: tokenizers)."""
    if trainer is Trainer.diffpipe:
        return f"tokenizer: {next(iter(model_set.labels.values()), 'none written')}"
    seeded = [f"{t['repo']}/{t['subfolder']}@{t.get('revision', 'main')[:12]}" for t in pins.values.get("tokenizers", [])]
    return f"tokenizer: the image's, seeded into the HF cache ({', '.join(seeded)})" if seeded else \
        "tokenizer: the image seeds none (pins: tokenizers = []); a real musubi would need it in the HF cache"


def run(trainers: list[Trainer], host: str, steps: int, fmt: Format, console: Console) -> list[Result]:
    from runner.executors import executor_for

    settings = config.load()
    executor = executor_for(host)
    inventory = None
    if records.gpus_wanted():
        from runner.gpu.inventory import gather

        executor.check_gpus()
        inventory = gather(executor.shell)
    images_ = {t: image_for(executor, t, settings, inventory) for t in trainers}
    folder = work_dir()
    write_clips(folder / "data")
    model_set = modelfiles.ensure(executor, images_[trainers[0]][0], settings, fmt, trainers, console)
    results = []
    for t in trainers:
        job_file = write_job(folder, t, fmt, model_set, settings, steps, inventory is not None)
        result = Result(t.value, passed=False, notes=[tokenizer_note(t, images_[t][1], model_set)])
        try:
            results.append(train_one(executor, t, job_file, settings, model_set, result, console))
        except UserError as e:  # this trainer's job could not start (e.g. it does not fit the GPU): the next one still runs
            result.problems.append(str(e))
            results.append(result)
    return results


def train_one(executor, trainer: Trainer, job_file: Path, settings: config.Settings, model_set: modelfiles.ModelSet,
              result: Result, console: Console) -> Result:
    console.rule(f"selftest: {trainer.value}")
    gpu = records.gpus_wanted()
    if model_set.fill == "holes":
        result.notes.append("model values are zeros: the image has no torch, so its trainer does no math")
    if gpu:
        from runner.job import render

        result.plan_gib = render.memory_plan(job_file, launch.target_of(executor, True)).gpu_gib
    peak = watch.GpuPeak(executor.shell) if gpu else None  # the memory in use before the job starts
    record = launch.start(job_file, executor, settings, console, launch.Run(Earlier.fresh))  # earlier selftests' outputs stay
    if peak:
        with peak:
            watched = watch.Watched(executor, peak.set_step)
            code = launch.follow(record, watched, console)
        result.step_peaks_gib = peak.peaks_gib()
        result.peak_gib = result.step_peaks_gib.get("train")
        if trainer is Trainer.diffpipe:
            result.notes.append("diffusion-pipe caches inside its train step, so its peak includes the text encoder on the GPU")
    else:
        watched = watch.Watched(executor)
        code = launch.follow(record, watched, console)
    result.log = str(record.log_file)
    result.s_per_step, result.steps = watch.seconds_per_step(watched.lines)
    result.standin = standin = any(line.startswith(STANDIN) for line in watched.lines)
    if standin:
        result.notes.append("stand-in trainer: no model math, so the LoRA is zeros and s/step says nothing of the real one")
    if code != 0:
        result.problems.append(f"the job exited with {code}; its log: {record.log_file}")
        return result
    out = Path(record.output_dir)
    executor.pull_outputs(record.name, out)
    saved = lora.newest(out, trainer)
    if saved is None:
        result.problems.append(f"no LoRA under {out}")
        return result
    job = load_job(job_file)
    result.lora = lora.check(saved, trainer, job.lora.rank)
    result.problems += result.lora.problems
    if not result.lora.b_nonzero and not standin:
        result.problems.append("LoRA B matrices are still zero: training did not update the LoRA")
    result.passed = not result.problems
    return result
