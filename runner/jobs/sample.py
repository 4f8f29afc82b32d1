"""`runner sample`: videos of a job's saved LoRAs, made after training with musubi-tuner's own wan_generate_video.py in
the pinned musubi image (diffusion-pipe cannot sample at its pin), locally or on the job's host, and a contact sheet.

Each (LoRA, prompt) gets its own folder `<output>/<name>/samples/<lora>/<prompt id>/`, where musubi writes
`{time}_{seed}.mp4`: a later run adds a video beside the earlier ones and never replaces a file. diffusion-pipe's
LoRAs are first converted to musubi's key format (convert_lora.py) into `samples/loras/`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.console import Console

from runner import config, mounts, preflight, shell
from runner.errors import UserError
from runner.executors import Executor
from runner.executors.container import LABEL_JOB, RUN_PLAN, ContainerSpec
from runner.gpu.sampling import SampleMemory, estimate
from runner.images import builder
from runner.job import render
from runner.models import modelfiles
from runner.jobs import contact_sheet, launch, records
from runner.mounts import Mount
from runner.plan import Plan, Step
from runner.spec import Job, Trainer
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


def output_folder(job: Job, executor: Executor) -> PurePosixPath:
    """The job's output folder as the target sees it."""
    root = executor.host_mounts([Mount("outputs", str(job.output), str(mounts.OUTPUTS), False)], job.name, "")[0].host
    return PurePosixPath(root) / job.name


def saved_loras(job: Job, executor: Executor) -> list[Lora]:
    """Every LoRA saved under the job's output folder on its target, one per epoch or step (a later diffusion-pipe
    run's save replaces an earlier run's of the same epoch), in training order."""
    folder = output_folder(job, executor)
    found = executor.shell.run(["find", str(folder), "-maxdepth", "3", "-type", "f", "-name", "*.safetensors"], timeout=60)
    rels = [str(PurePosixPath(p).relative_to(folder)) for p in found.stdout.split("\n") if p.startswith(str(folder) + "/")] if found.ok else []
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
    """Convert diffusion-pipe's LoRAs, then one wan_generate_video.py step per (LoRA, prompt)."""
    job = r.job
    out = mounts.job_output_dir(job.name)
    steps, weights = [], {}
    for lora in loras:
        weights[lora.key] = str(out / lora.path)
        if lora.diffpipe:
            weights[lora.key] = str(converted_dir(job) / f"{lora.key}.safetensors")
            steps.append(Step(f"convert-{lora.key}", musubi.convert_lora_argv(str(out / lora.path), weights[lora.key])))
    offline = {k: v for k, v in musubi.CACHE_STEP_ENV.items() if k not in job.env}  # umT5's tokenizer from the image's cache
    for lora in loras:
        for prompt in prompts:
            argv = musubi.generate_argv(r, weights[lora.key], prompt, str(sample_dir(job, lora, prompt)))
            steps.append(Step(f"sample-{lora.key}-{prompt_id(prompt)}", argv, env=offline))
    folders = [m for m in mounts.folder_mounts(job) if m.volume == "models" or m.volume == "outputs" or m.volume.startswith("hf-cache")]
    return Plan(job=job.name, trainer=Trainer.musubi.value, workdir=musubi.WORKDIR, files={}, steps=steps, env=render.job_env(job),
                mounts=folders + [Mount("job", str(job_dir.resolve()), str(mounts.JOB), True)], output_dir=str(out / SAMPLES))


def losses(job_name: str) -> dict[str, float]:
    """The loss logged before each save of the job's runs (their logs, kept beside the records): save name → loss."""
    found: dict[str, float] = {}
    for record in sorted((r for r in records.all_records() if r.name == job_name), key=lambda r: r.started or ""):
        if not record.log_file.is_file():
            continue
        last = None
        for line in record.log_file.read_text(errors="replace").splitlines():
            if m := LOSS.search(line):
                last = float(m["loss"])
            if (m := SAVED.search(line)) and last is not None:
                found[PurePosixPath(m["musubi"]).name if m["musubi"] else m["diffpipe"]] = last
    return found


def start(job_file: Path, executor: Executor, settings: config.Settings, epochs: list[int] | None, every: bool,
          prompts: list[str] | None, console: Console) -> int:
    """Resolve the job on its target, pick the LoRAs and prompts (refusing before anything is written), run the
    sample plan in the musubi image, then write the contact sheet there. Returns the plan's exit code."""
    gpus = records.gpus_wanted()
    if gpus:
        executor.check_gpus()
    target = launch.target_of(executor, bool(gpus))
    resolved = as_musubi(render.load_checked(job_file, target))
    job = resolved.job
    if job.task.is_i2v:
        raise UserError("task", f"{job.task.value}: sampling an I2V LoRA needs a start image per prompt, which runner does not pass yet.",
                        "sample a T2V job, or run wan_generate_video.py with --image_path by hand (`runner shell musubi`).")
    if job.task.is_wan22:
        raise UserError("task", f"{job.task.value}: runner's samples run musubi's wan_generate_video.py with one DiT, and Wan2.2 needs "
                        "both experts (A14B) or a model musubi has no task for (TI2V-5B).",
                        "run wan_generate_video.py --dit LOW --dit_high_noise HIGH --lora_weight … by hand (`runner shell musubi`).")
    prompts = prompts or list(job.samples.prompts)
    if not prompts:
        raise UserError("samples.prompts", f"{job_file} sets no sample prompts and none was given.",
                        f"add `samples: {{prompts: [\"a red ball bouncing\"]}}` to the job, or give --prompt \"…\".")
    folder = output_folder(job, executor)
    chosen = choose(saved_loras(job, executor), epochs, every, job_file, job, f"{folder} on {executor.host}")
    memory = memory_estimate(resolved)
    estimate = memory.describe()
    console.print(f"sampling {len(chosen)} LoRA(s) × {len(prompts)} prompt(s) of {job.name}; GPU memory, an estimate: {estimate}")
    card = min((g.memory_gib for g in resolved.inventory.gpus), default=None) if resolved.inventory else None
    if card is not None and memory.peak_gib > card:
        console.print(f"runner: that is more than the {card:.0f} GiB of the GPU; memory.text_encoder_dtype: float8 halves umT5, "
                      "memory.transformer_dtype: float8 and memory.blocks_to_swap shrink the DiT, smaller samples.width/height/frames "
                      "shrink the VAE decode", style="bold yellow", highlight=False)
    gpu_env, variant_name = launch.gpu_environment(resolved.inventory, job)
    pins = builder.load_pins(Trainer.musubi.value, variant_name, pins_file=settings.pins)
    ref = builder.image_ref(pins, settings.ca_bundle)
    executor.check_models(job.models.root, missing_model_files(resolved, target.models(job.models.root) if target.models else str(job.models.root), executor))
    executor.check_image(ref, "musubi" if variant_name == "default" else f"musubi --variant {variant_name}")
    rid = records.new_id(f"{job.name}-sample")
    job_dir = config.state_dir() / "samples" / rid / "job"
    plan = sample_plan(resolved, chosen, prompts, job_dir)
    name = f"runner-sample-{rid}"
    spec = ContainerSpec(image=ref, name=name, command=RUN_PLAN, mounts=executor.host_mounts(plan.mounts, job.name, name),
                         env={**config.network_env(settings), **gpu_env, **plan.env}, user=executor.user, workdir=plan.workdir,
                         gpus=gpus, shm_size=settings.shm_size, ulimits=settings.ulimits, labels={LABEL_JOB: job.name})
    render.write(dataclasses.replace(plan, **spec.record(), facts={"gpu_memory_estimate": estimate}), job_dir)
    executor.prepare_mounts(spec, sources=plan.mounts)
    if any(lo.diffpipe for lo in chosen):  # convert_lora.py's save_file makes no folder
        preflight.make_dirs(executor.shell, [str(mounts.to_host(converted_dir(job), spec.mounts))])
    executor.start(spec)
    try:
        with (job_dir.parent / "sample.log").open("w") as log:
            for text in executor.logs(name, follow=True):
                log.write(text + "\n")
                console.print(text, markup=False, highlight=False)
        code = executor.wait(name)
    finally:
        executor.remove(name)
    logged = losses(job.name)
    sheet = contact_sheet.update(executor, folder, [(lo.key, lo.label, logged.get(lo.saved_as)) for lo in chosen], {prompt_id(p): p for p in prompts})
    console.print(f"samples → {folder / SAMPLES}; contact sheet: {sheet}" + ("" if executor.here else f" (on {executor.host}; `runner pull {job.name}` brings it here)"))
    if code != 0:
        console.print(f"runner: sampling exited with {code}; its whole log: {job_dir.parent / 'sample.log'}", style="bold red", highlight=False)
    return code


def as_musubi(r: ResolvedJob) -> ResolvedJob:
    """The job as musubi's generate script loads it: musubi's model files (its umT5 is the official .pth, where
    diffusion-pipe may load ComfyUI's), whichever trainer saved the LoRAs."""
    if r.job.trainer is Trainer.musubi:
        return r
    job = r.job.model_copy(update={"trainer": Trainer.musubi})
    return dataclasses.replace(r, job=job, files=modelfiles.resolve(job))


def missing_model_files(r: ResolvedJob, root_there: str, executor: Executor) -> dict[str, Path]:
    """The DiT, VAE and umT5 sampling loads that are missing on the target (job field → path under models.root)."""
    needed = {"models.dit": r.files.dit, "models.vae": r.files.vae, "models.t5": r.files.t5}
    for field, path in needed.items():
        if path is None:
            raise UserError(field, "is not set, but musubi's wan_generate_video.py, which makes the samples, needs that file.",
                            f"set {field} (a `runner download` preset sets them all).")
    rel = {field: str(p.relative_to(r.files.root)) for field, p in needed.items()}
    missing = set(shell.missing_files(executor.shell, root_there, list(rel.values())))
    return {field: needed[field] for field, p in rel.items() if p in missing}


def memory_estimate(r: ResolvedJob) -> SampleMemory:
    """Peak GPU memory of sampling, a rough estimate (runner.gpu.sampling)."""
    s = r.job.samples
    return estimate(r.job.task.size, musubi.dit_bytes_per_param(r), r.job.memory.text_encoder_dtype == "float8", s.width, s.height, s.frames)
