"""`runner sample`: videos of a job's saved LoRAs, made after training with musubi-tuner's own wan_generate_video.py in
the pinned musubi image (diffusion-pipe cannot sample at its pin), locally or on the job's host, and a contact sheet.

Each (LoRA, prompt) gets its own folder `<output>/<name>/samples/<lora>/<prompt id>/`, where musubi writes
`{time}_{seed}.mp4`: a later run adds a video beside the earlier ones and never replaces a file. diffusion-pipe's
LoRAs are first converted to musubi's key format (convert_lora.py) into `samples/loras/`.

A sample run is started as a training run is (runner.jobs.launch.start): it holds the job's lock, so it is refused
while the job trains (or samples) on the same output folder — the two would share the GPUs the training's memory
plan counts on, and write the same contact sheet and converted LoRAs — and it has a record (`runner ps` shows its
kind; `runner logs`, `runner stop` and `runner pull` work on it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.console import Console

from runner import config, mounts
from runner.errors import UserError
from runner.executors import Executor
from runner.gpu.sampling import SampleMemory, estimate
from runner.job import render
from runner.job.resolve import Target
from runner.models import modelfiles
from runner.jobs import contact_sheet, launch, logwatch, records
from runner.mounts import Mount
from runner.plan import Plan, Step
from runner.shell import Shell, missing_files
from runner.spec import Job, JobRead, Trainer
from runner.trainers import musubi
from runner.trainers.resolved import ResolvedJob

SAMPLES = "samples"
# musubi: [<run>/]<name>-000002.safetensors (epoch), …-step00000010.safetensors, <name>.safetensors (the last save),
# where a `runner train --fresh` run writes into a run folder beside the first run's files;
# diffusion-pipe: <run>/epoch2/adapter_model.safetensors, <run>/step10/…; a run folder is named %Y%m%d_%H-%M-%S (UTC)
RUN = r"(?:(?P<run>\d{8}_\d{2}-\d{2}-\d{2})/)"
MUSUBI_SAVE = r"(?:-(?P<epoch>\d{6})|-step(?P<step>\d{8}))?\.safetensors"
DIFFPIPE_SAVE = re.compile(RUN + r"(?:epoch(?P<epoch>\d+)|step(?P<step>\d+))/adapter_model\.safetensors")
# a loss as each trainer logs it (musubi's progress bar, diffusion-pipe's step lines) and the save that follows it
LOSS = re.compile(r"(?:avr_loss=|\bloss: )(?P<loss>[-+0-9.eE]+|nan|inf)")
SAVED = re.compile(r"saving checkpoint: (?P<musubi>\S+)|Saving model to directory (?P<diffpipe>\S+)")


@dataclass(frozen=True)
class Lora:
    """One saved LoRA on the job's target."""

    key: str  # folder name of its samples: epoch0002, step00000010, final
    label: str  # as the contact sheet shows it
    epoch: int | None
    step: int | None
    path: str  # relative to the job's output folder
    diffpipe: bool  # saved by diffusion-pipe: converted to musubi's keys before sampling
    saved_as: str  # the name its save has in the trainer's log

    @property
    def order(self) -> tuple:
        return (self.epoch if self.epoch is not None else float("inf"), self.step or 0)


def _musubi_lora(job: Job, rel: str) -> Lora | None:
    m = re.fullmatch(RUN + "?" + re.escape(job.name) + MUSUBI_SAVE, rel)
    if not m:
        return None
    name = PurePosixPath(rel).name  # as musubi's log names the save
    if m["epoch"]:
        e = int(m["epoch"])
        return Lora(f"epoch{e:04d}", f"epoch {e}", e, None, rel, False, name)
    if m["step"]:
        s = int(m["step"])
        return Lora(f"step{s:08d}", f"step {s}", None, s, rel, False, name)
    # the save after the last epoch; musubi names no epoch then
    epoch = None if job.schedule.max_steps else job.schedule.epochs
    return Lora("final", f"epoch {epoch} (final)" if epoch else "final", epoch, None, rel, False, name)


def _diffpipe_lora(rel: str) -> Lora | None:
    m = DIFFPIPE_SAVE.fullmatch(rel)
    if not m:
        return None
    if m["epoch"]:
        e = int(m["epoch"])
        return Lora(f"epoch{e:04d}", f"epoch {e}", e, None, rel, True, f"epoch{e}")
    s = int(m["step"])
    return Lora(f"step{s:08d}", f"step {s}", None, s, rel, True, f"step{s}")


def saved_loras(job: Job, shell: Shell, folder: str) -> list[Lora]:
    """Every LoRA saved under the job's output folder (`folder`, on the machine of `shell`), one per epoch or step (a
    later diffusion-pipe run's save replaces an earlier run's of the same epoch), in training order."""
    found = shell.run(["find", folder, "-maxdepth", "3", "-type", "f", "-name", "*.safetensors"], timeout=60)
    rels = [str(PurePosixPath(p).relative_to(folder)) for p in found.stdout.split("\n") if p.startswith(folder + "/")] if found.ok else []
    loras: dict[str, Lora] = {}
    # the first run's files (no run folder) first, then the run folders by time: the newest run's save of an epoch wins
    for rel in sorted(rels, key=lambda r: (bool(re.match(RUN, r)), r)):
        lora = _musubi_lora(job, rel) or _diffpipe_lora(rel)
        if lora:
            loras[lora.key] = lora
    return sorted(loras.values(), key=lambda lo: lo.order)


def choose(loras: list[Lora], epochs: list[int] | None, every: bool, job_file: Path, job: Job, where: str) -> list[Lora]:
    """The LoRAs to sample: the epochs asked for, all of them, or the last one saved."""
    if not loras:
        raise UserError(
            f"job {job.name}", f"has no saved LoRA in {where}: nothing to sample.",
            f"train it first (`runner train {job_file}`); a LoRA is saved every schedule.save_every_epochs epochs.")
    if every:
        return loras
    if not epochs:
        return loras[-1:]
    by_epoch = {lo.epoch: lo for lo in loras if lo.epoch is not None}
    unknown = [e for e in epochs if e not in by_epoch]
    if unknown:
        saved = ", ".join(str(e) for e in sorted(by_epoch)) or "none (only step saves)"
        raise UserError("--epochs", f"no LoRA of epoch {', '.join(map(str, unknown))} was saved in {where}; the saved epochs are {saved}.",
                        f"pick saved epochs (e.g. --epochs {','.join(str(e) for e in sorted(by_epoch)[-3:]) or '1'}) or use --all.")
    return [by_epoch[e] for e in dict.fromkeys(epochs)]


def prompt_id(prompt: str) -> str:
    """The folder of a prompt's videos: a few words and a hash, the same for the same text in every run."""
    words = "-".join(re.findall(r"[A-Za-z0-9]+", prompt.lower())[:5])[:40] or "prompt"
    return f"{words}-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"


def sample_dir(job: Job, lora: Lora, prompt: str) -> PurePosixPath:
    return mounts.job_output_dir(job.name) / SAMPLES / lora.key / prompt_id(prompt)


def converted_dir(job: Job) -> PurePosixPath:
    """Where diffusion-pipe's LoRAs go, converted to musubi's keys (container path)."""
    return mounts.job_output_dir(job.name) / SAMPLES / "loras"


def sample_plan(r: ResolvedJob, loras: list[Lora], prompts: list[str], job_dir: Path) -> Plan:
    """Convert diffusion-pipe's LoRAs (into a folder made first: convert_lora.py's save_file makes none), then one
    wan_generate_video.py step per (LoRA, prompt)."""
    job = r.job
    out = mounts.job_output_dir(job.name)
    steps, weights = [], {}
    for lora in loras:
        weights[lora.key] = str(out / lora.path)
        if lora.diffpipe:
            weights[lora.key] = str(converted_dir(job) / f"{lora.key}.safetensors")
            steps.append(Step(f"convert-{lora.key}", musubi.convert_lora_argv(str(out / lora.path), weights[lora.key])))
    if steps:
        steps.insert(0, Step("make-loras-folder", ["mkdir", "-p", str(converted_dir(job))]))
    offline = {k: v for k, v in musubi.CACHE_STEP_ENV.items() if k not in job.env}  # umT5's tokenizer from the image's cache
    for lora in loras:
        for prompt in prompts:
            argv = musubi.generate_argv(r, weights[lora.key], prompt, str(sample_dir(job, lora, prompt)))
            steps.append(Step(f"{logwatch.SAMPLE_STEP}{lora.key}-{prompt_id(prompt)}", argv, env=offline))
    folders = [m for m in mounts.folder_mounts(job) if m.volume == "models" or m.volume == "outputs" or m.volume.startswith("hf-cache")]
    return Plan(job=job.name, trainer=Trainer.musubi.value, workdir=musubi.WORKDIR, files={}, steps=steps, env=render.job_env(job),
                mounts=folders + [Mount("job", str(job_dir.resolve()), str(mounts.JOB), True)], output_dir=str(out / SAMPLES))


def losses(job_name: str) -> dict[str, float]:
    """The loss logged before each save of the job's runs (their logs, kept beside the records): save name → loss."""
    found: dict[str, float] = {}
    for record in sorted((r for r in records.all_records() if r.name == job_name and r.kind == records.TRAIN), key=lambda r: r.started or ""):
        if not record.log_file.is_file():
            continue
        last = None
        for line in record.log_file.read_text(errors="replace").splitlines():
            if m := LOSS.search(line):
                last = float(m["loss"])
            if (m := SAVED.search(line)) and last is not None:
                found[PurePosixPath(m["musubi"]).name if m["musubi"] else m["diffpipe"]] = last
    return found


class Sampling(launch.Run):
    """`runner sample` as a kind of run (runner.jobs.launch.start): the job's saved LoRAs and the prompts, picked while
    the job is resolved, so that a bad choice is refused before anything is written."""

    kind = records.SAMPLE

    def __init__(self, epochs: list[int] | None, every: bool, prompts: list[str] | None, console: Console):
        self.epochs, self.every, self.prompts, self.console = epochs, every, prompts, console
        self.chosen: list[Lora] = []
        self.folder = PurePosixPath()  # the job's output folder on its target
        self.memory: SampleMemory | None = None

    def resolve(self, job_file: Path, there: Target, read: JobRead | None) -> ResolvedJob:
        # sampling's GPU memory is its own estimate (memory_estimate), not the training's plan
        resolved = dataclasses.replace(as_musubi(render.load_checked(job_file, there, read=read)), memory_plan=None)
        job = resolved.job
        if job.task.is_i2v:
            raise UserError("task", f"{job.task.value}: sampling an I2V LoRA needs a start image per prompt, which runner does not pass yet.",
                            "sample a T2V job, or run wan_generate_video.py with --image_path by hand (`runner shell musubi`).")
        if job.task.is_wan22:
            raise UserError("task", f"{job.task.value}: runner's samples run musubi's wan_generate_video.py with one DiT, and Wan2.2 needs "
                            "both experts (A14B) or a model musubi has no task for (TI2V-5B).",
                            "run wan_generate_video.py --dit LOW --dit_high_noise HIGH --lora_weight … by hand (`runner shell musubi`).")
        self.prompts = self.prompts or list(job.samples.prompts)
        if not self.prompts:
            raise UserError("samples.prompts", f"{job_file} sets no sample prompts and none was given.",
                            f"add `samples: {{prompts: [\"a red ball bouncing\"]}}` to the job, or give --prompt \"…\".")
        self.folder = PurePosixPath(there.output_dir(job))
        loras = saved_loras(job, there.shell, str(self.folder))
        self.chosen = choose(loras, self.epochs, self.every, job_file, job, f"{self.folder} on {there.name}")
        self.memory = memory_estimate(resolved)
        self.console.print(f"sampling {len(self.chosen)} LoRA(s) × {len(self.prompts)} prompt(s) of {job.name}; "
                           f"GPU memory, an estimate: {self.memory.describe()}")
        card = min((g.memory_gib for g in resolved.inventory.gpus), default=None) if resolved.inventory else None
        if card is not None and self.memory.peak_gib > card:
            self.console.print(f"runner: that is more than the {card:.0f} GiB of the GPU; memory.text_encoder_dtype: float8 halves umT5, "
                               "memory.transformer_dtype: float8 and memory.blocks_to_swap shrink the DiT, smaller samples.width/height/frames "
                               "shrink the VAE decode", style="bold yellow", highlight=False)
        return resolved

    def missing_models(self, resolved: ResolvedJob, there: Target) -> dict[str, Path]:
        root = resolved.job.models.root
        return missing_model_files(resolved, there.models(root) if there.models else str(root), there.shell)

    def plan(self, resolved: ResolvedJob, job_dir: Path, master_port: int, nodes: int = 1) -> Plan:
        return sample_plan(resolved, self.chosen, self.prompts, job_dir)

    def facts(self, resolved: ResolvedJob) -> dict:
        return {"gpu_memory_estimate": self.memory.describe()}

    def fingerprints(self, resolved: ResolvedJob) -> dict[str, str]:
        return {}  # sampling reads no cache: it says nothing of their freshness


def sample(job_file: Path, executor: Executor, settings: config.Settings, run: Sampling, console: Console,
           read: JobRead | None = None) -> int:
    """Start the sample run like a training run (its lock, its record: `runner ps/logs/stop`), follow it, then write
    the contact sheet on the job's target. Returns the run's exit code (0 for one stopped with `runner stop`).
    Interrupted, the run is stopped: it ends with the command that started it."""
    record = launch.start(job_file, executor, settings, console, run, read)
    try:
        code = launch.follow(record, executor, console)
    except BaseException:
        with contextlib.suppress(Exception):
            launch.stop(record, executor)
        raise
    logged = losses(record.name)
    sheet = contact_sheet.update(executor, run.folder, [(lo.key, lo.label, logged.get(lo.saved_as)) for lo in run.chosen],
                                 {prompt_id(p): p for p in run.prompts})
    console.print(f"samples → {run.folder / SAMPLES}; contact sheet: {sheet}" + ("" if executor.here else f" (on {executor.host}; `runner pull {record.name}` brings it here)"))
    if code != 0:
        console.print(f"runner: sampling exited with {code}; its whole log: `runner logs {record.id}`", style="bold red", highlight=False)
    return code


def as_musubi(r: ResolvedJob) -> ResolvedJob:
    """The job as musubi's generate script loads it: musubi's model files (its umT5 is the official .pth, where
    diffusion-pipe may load ComfyUI's), whichever trainer saved the LoRAs."""
    if r.job.trainer is Trainer.musubi:
        return r
    job = r.job.model_copy(update={"trainer": Trainer.musubi})
    return dataclasses.replace(r, job=job, files=modelfiles.resolve(job))


def missing_model_files(r: ResolvedJob, root_there: str, shell: Shell) -> dict[str, Path]:
    """The DiT, VAE and umT5 sampling loads that are missing on the target (job field → path under models.root)."""
    needed = {"models.dit": r.files.dit, "models.vae": r.files.vae, "models.t5": r.files.t5}
    for field, path in needed.items():
        if path is None:
            raise UserError(field, "is not set, but musubi's wan_generate_video.py, which makes the samples, needs that file.",
                            f"set {field} (a `runner download` preset sets them all).")
    rel = {field: str(p.relative_to(r.files.root)) for field, p in needed.items()}
    missing = set(missing_files(shell, root_there, list(rel.values())))
    return {field: needed[field] for field, p in rel.items() if p in missing}


def memory_estimate(r: ResolvedJob) -> SampleMemory:
    """Peak GPU memory of sampling, a rough estimate (runner.gpu.sampling)."""
    s = r.job.samples
    return estimate(r.job.task.size, musubi.dit_bytes_per_param(r), r.job.memory.text_encoder_dtype == "float8", s.width, s.height, s.frames)
