"""diffusion-pipe: dataset.toml, the main TOML and the deepspeed launch for a job.

Pinned at tdrussell/diffusion-pipe 8f83dbf. Only this module knows diffusion-pipe's keys and flags.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import tomli_w

from runner import mounts
from runner.data import media
from runner.errors import UserError
from runner.models.modelfiles import ModelFiles
from runner.plan import Plan, Step
from runner.spec import Job, experts, timestep_range
from runner.trainers.resolved import Caches, Entries, Outputs, ResolvedJob, Resume

WORKDIR = "/opt/diffusion-pipe"
DATASET_TOML = "dataset.toml"
MAIN_TOML = "diffpipe.toml"
# diffusion-pipe's recipe values for Wan (examples/wan_14b_min_vram.toml, examples/dataset.toml)
DEFAULT_OPTIMIZER = "adamw_optimi"
DEFAULT_LR = 2e-5
AR_BUCKETS = {"enable_ar_bucket": True, "min_ar": 0.5, "max_ar": 2.0, "num_ar_buckets": 7}
# train.py get_optimizer: these names in any case; any other name is a class of pytorch_optimizer (exact case)
NAMED_OPTIMIZERS = {"adamw", "adamw8bit", "adamw_optimi", "stableadamw", "sgd", "adamw8bitkahan", "offload", "automagic", "genericoptim"}
# TensorBoard: train.py writes events.* into each run folder itself (SummaryWriter(log_dir=run_dir)), so the runs are
# folders of the job's output folder
TENSORBOARD_DIR = ""
# musubi's names for optimizers diffusion-pipe knows under another name
MUSUBI_EQUIVALENT = {"adafactor": "AdaFactor (pytorch-optimizer's Adafactor)"}


def optimizer_problem(name: str) -> tuple[str, str] | None:
    """(problem, fix) when diffusion-pipe cannot load optimizer `name`, else None. Other names are looked up
    in pytorch-optimizer, whose classes runner does not list."""
    low = name.lower()
    if "." in name:
        return (
            f"'{name}' is a class path, which only musubi-tuner takes; diffusion-pipe looks any name it does not know "
            "up in pytorch_optimizer and stops with AttributeError after loading the model.",
            f"use one of {', '.join(sorted(NAMED_OPTIMIZERS))} or a pytorch-optimizer class name (e.g. Prodigy).",
        )
    if low in MUSUBI_EQUIVALENT and name != MUSUBI_EQUIVALENT[low].split()[0]:
        return (
            f"'{name}' is musubi-tuner's name; diffusion-pipe looks it up in pytorch_optimizer, which spells it differently.",
            f"for trainer: diffpipe use optimizer.type: {MUSUBI_EQUIVALENT[low]}.",
        )
    return None


def _resolution(res: int | tuple[int, int]) -> list[int]:
    # A side n is rendered as [n, n]: toml 0.10.2, which diffusion-pipe parses with, rejects an array mixing
    # integers and arrays ("Not a homogeneous array"). utils/dataset.py reads [w, h] as the area sqrt(w * h),
    # so [n, n] is exactly the side n (_process_user_provided_resolutions).
    return [res, res] if isinstance(res, int) else list(res)


def _frame_buckets(kind: str, frames: list[int] | None) -> list[int]:
    # images always land in bucket 1, which diffusion-pipe adds itself
    return [1] if kind == "image" else media.video_frames(frames)


def dataset_toml(r: ResolvedJob) -> str:
    """Top-level settings come from the first dataset; later datasets override them per [[directory]]."""
    job, settings = r.job, []
    for i, d in enumerate(job.datasets):
        settings.append({"resolutions": [_resolution(x) for x in d.resolutions], "frame_buckets": _frame_buckets(r.kind(i), d.frames)})
    top = settings[0]
    doc: dict = {**top, **AR_BUCKETS, "directory": []}
    for i, (d, s) in enumerate(zip(job.datasets, settings)):
        entry: dict = {"path": str(mounts.dataset_dir(i, d.path)), "num_repeats": d.repeats}
        entry.update({k: v for k, v in s.items() if v != top[k]})
        doc["directory"].append(entry)
    return tomli_w.dumps(doc)


def _model(files: ModelFiles, p: Path) -> str:
    return str(mounts.model_path(files.root, p))


def epochs(job: Job) -> int:
    """diffusion-pipe stops at `epochs` or `max_steps`, whichever comes first. A job that sets only max_steps
    means "max_steps steps" (as on musubi): every epoch is at least one step, so max_steps epochs never stop it first."""
    sch = job.schedule
    if sch.max_steps and "epochs" not in sch.model_fields_set:
        return sch.max_steps
    return sch.epochs


def cadence(job: Job) -> dict[str, int]:
    """When diffusion-pipe saves LoRAs and checkpoints."""
    sch = job.schedule
    keys = {
        "save_every_n_epochs": sch.save_every_epochs,
        "save_every_n_steps": sch.save_every_steps,
        "checkpoint_every_n_epochs": sch.checkpoint_every_epochs,
        "checkpoint_every_n_minutes": sch.checkpoint_every_minutes,
    }
    if sch.checkpoint_every_epochs is None and sch.checkpoint_every_minutes is None:
        # without a checkpoint cadence diffusion-pipe keeps only its final state, and a crash cannot be resumed
        keys["checkpoint_every_n_epochs"] = sch.save_every_epochs or 1
    return {k: v for k, v in keys.items() if v is not None}


# expert: both trains one LoRA per A14B expert, each run in a folder of the job's output named like the experts'
# ComfyUI files (wan2.2_t2v_high_noise_14B_fp16.safetensors, ..._low_noise_...), which is how ComfyUI users tell the
# two LoRAs apart: <output>/<name>/high_noise/<run>/epochN/adapter_model.safetensors and low_noise/ likewise
EXPERT_DIRS = {"high": "high_noise", "low": "low_noise"}


def expert_runs(job: Job) -> list[str | None]:
    """The runs of a job, one per expert it trains (None: a model without experts)."""
    return list(experts(job)) or [None]


def output_dir(job: Job, expert: str | None) -> PurePosixPath:
    """Where a run writes: the job's output folder, or with expert: both each expert's folder in it."""
    both = len(experts(job)) == 2
    return mounts.job_output_dir(job.name) / EXPERT_DIRS[expert] if both and expert else mounts.job_output_dir(job.name)


def main_toml_name(job: Job, expert: str | None) -> str:
    return f"diffpipe_{EXPERT_DIRS[expert]}.toml" if len(experts(job)) == 2 and expert else MAIN_TOML


def main_toml(job: Job, files: ModelFiles, expert: str | None = None) -> str:
    """expert: the A14B expert this run trains: transformer_path is its DiT (a file, or the official expert folder)
    and min_t/max_t its timestep range (docs/supported_models.md, Wan2.2: T2V boundary 0.875, I2V 0.9)."""
    mem, sch, opt = job.memory, job.schedule, job.optimizer
    assert files.ckpt_dir is not None, "checks guarantee ckpt_dir for diffusion-pipe"
    doc: dict = {
        "output_dir": str(output_dir(job, expert)),
        "dataset": str(mounts.JOB / DATASET_TOML),
        "epochs": epochs(job),
        **({"max_steps": sch.max_steps} if sch.max_steps else {}),
        "micro_batch_size_per_gpu": sch.batch_size,
        "pipeline_stages": job.pipeline_stages,
        "gradient_accumulation_steps": sch.gradient_accumulation_steps,
        "gradient_clipping": 1.0,
        "warmup_steps": sch.warmup_steps,
    }
    doc.update(cadence(job))
    if mem.activation_checkpointing:
        doc["activation_checkpointing"] = mem.activation_checkpointing
    if mem.blocks_to_swap:
        doc["blocks_to_swap"] = mem.blocks_to_swap
    doc.update({"save_dtype": job.lora.dtype, "caching_batch_size": 1, "video_clip_mode": "single_beginning"})
    model: dict = {"type": "wan", "ckpt_path": _model(files, files.ckpt_dir), "dtype": mem.dtype}
    dit = files.dit_high_noise if expert == "high" else files.dit
    if dit is not None:
        model["transformer_path"] = _model(files, dit)
    if files.t5_outside_ckpt:
        model["llm_path"] = _model(files, files.t5)
    if mem.transformer_dtype == "float8":
        model["transformer_dtype"] = "float8"
    if mem.text_encoder_dtype == "float8":
        model["text_encoder_fp8"] = True
    model["timestep_sample_method"] = "logit_normal"
    if expert:
        model["min_t"], model["max_t"] = timestep_range(job.task, expert)
    doc["model"] = model
    doc["adapter"] = {"type": "lora", "rank": job.lora.rank, "dtype": job.lora.dtype}
    doc["optimizer"] = {
        "type": opt.type or DEFAULT_OPTIMIZER,
        "lr": opt.lr or DEFAULT_LR,
        "betas": list(opt.betas),
        "weight_decay": opt.weight_decay,
        "eps": opt.eps,
    }
    return tomli_w.dumps(doc)


def dit_bytes_per_param(r: ResolvedJob) -> int:
    """Bytes per DiT parameter as diffusion-pipe holds the weights: it casts any file to [model] transformer_dtype,
    which is float8 or else the job's dtype (models/wan/wan.py; a few norm/embedding weights stay in dtype)."""
    return 1 if r.job.memory.transformer_dtype == "float8" else 2


# the pipeline's name per model (models/wan/wan.py WanPipeline: set from config.json's model_type and the weights)
CACHE_NAMES = {"i2v-14B-480P": "wan_i2v", "i2v-14B-720P": "wan_i2v", "i2v-A14B": "wan2.2_i2v", "flf2v-14B": "wan_flf2v", "ti2v-5B": "wan2.2_5b"}


def dataset_cache_dir(job: Job, index: int) -> PurePosixPath:
    """diffusion-pipe caches inside the dataset folder, under the model's name."""
    return mounts.dataset_dir(index, job.datasets[index].path) / "cache" / CACHE_NAMES.get(job.task.value, "wan")


# why diffusion-pipe runs on one machine only, at its pin (runner.job.render.check_nodes says it)
SINGLE_MACHINE = (
    "diffusion-pipe 8f83dbf trains on one machine only: its launch is `deepspeed --num_gpus=N` without a hostfile, "
    "train.py sets MASTER_ADDR to localhost unless the launcher gives one, its caching hands the work to every GPU's "
    "process through a multiprocessing Manager queue that rank 0 creates on a local socket (utils/dataset.py "
    "DatasetManager.cache), which processes on other machines cannot reach, and its maintainer says it is "
    "single-machine (issue #397)"
)


def launcher(job: Job) -> list[str]:
    """deepspeed 0.18.4's launcher for the job's GPUs: --num_gpus=N for the first N, --include=localhost:IDS for device
    ids (launcher/runner.py refuses both together; the launcher sets CUDA_VISIBLE_DEVICES of the processes to them)."""
    if job.gpu_ids:
        return ["deepspeed", "--include=localhost:" + ",".join(map(str, job.gpu_ids))]
    assert job.gpu_count is not None, "runner.job.resolve resolves `gpus: all` before a render"
    return ["deepspeed", f"--num_gpus={job.gpu_count}"]


def render(r: ResolvedJob, master_port: int, machines: int = 1) -> Plan:
    """--regenerate_cache when the data changed in ways diffusion-pipe's own cache check misses (media bytes);
    it makes missing caches and reuses matching ones itself."""
    job = r.job
    assert machines == 1, "runner.job.render.check_nodes refuses diffusion-pipe on several machines"
    files, steps = {DATASET_TOML: dataset_toml(r)}, []
    for expert in expert_runs(job):
        name = main_toml_name(job, expert)
        files[name] = main_toml(job, r.files, expert)
        # --master_port after train.py wins over the launcher's, so two jobs on one host do not clash
        train = launcher(job) + ["train.py", "--deepspeed", "--config", str(mounts.JOB / name)]
        train += ["--master_port", str(master_port)]
        if r.caches is Caches.regenerate and not steps:  # the second expert's run reuses the first one's caches
            train += ["--regenerate_cache"]
        if r.start.checkpoint is not None:
            # always the run folder by name: without a value train.py takes the last entry of output_dir, files included
            train += ["--resume_from_checkpoint", r.start.checkpoint]
        steps.append(Step(f"train-{EXPERT_DIRS[expert]}" if len(experts(job)) == 2 and expert else "train", train))
    return Plan(
        job=job.name,
        trainer=job.trainer.value,
        workdir=WORKDIR,
        files=files,
        steps=steps,
        output_dir=str(mounts.job_output_dir(job.name)),
    )


# ---------------------------------------------------------------- earlier runs and resume
# train.py: every run writes output_dir/<UTC %Y%m%d_%H-%M-%S>/ (epochN/ and stepN/ LoRAs, DeepSpeed checkpoints
# global_stepN/ and the file `latest` naming the newest complete one); --resume_from_checkpoint RUN continues RUN
# from its `latest`, saving into the same folder with its counters restored (utils/saver.py).
RUN_FOLDER = re.compile(r"\d{8}_\d{2}-\d{2}-\d{2}")
SAVED = re.compile(r"(epoch|step|global_step)(\d+)")


def _saved(entries: Entries) -> list[tuple[str, str, int]]:
    """(run, kind, number) of every LoRA and checkpoint folder in a run folder; a run of an expert folder
    (expert: both) is named with it, "high_noise/RUN"."""
    found = []
    for e in entries:
        parts = e.rstrip("/").split("/")
        m = SAVED.fullmatch(parts[-1])
        expert = len(parts) == 3 and parts[0] in EXPERT_DIRS.values()
        if e.endswith("/") and (len(parts) == 2 or expert) and RUN_FOLDER.fullmatch(parts[-2]) and m:
            found.append(("/".join(parts[:-1]), m[1], int(m[2])))
    return sorted(found)


def earlier_files(job: Job, entries: Entries) -> list[str]:
    """The LoRAs and checkpoints earlier runs left in the job's output folder."""
    return [f"{run}/{kind}{n}" for run, kind, n in _saved(entries)]


def fresh_run(job: Job, entries: Entries, stamp: str) -> Resume:
    """diffusion-pipe starts every run in a new timestamped folder of its own: nothing of an earlier run is touched."""
    return Resume()


def _epochs_after(job: Job, out: Outputs, run: str) -> list[str]:
    """Epoch LoRAs saved after the run's latest checkpoint. A checkpoint records no epoch runner can read, so their
    times tell: at an epoch's end diffusion-pipe writes the checkpoint (when the epoch cadence asks for one) before
    the LoRA (utils/saver.py process_epoch), so of the LoRAs newer than `latest` the first one is the checkpoint's own
    when its epoch is a checkpoint epoch; every other one came later."""
    written = out.entries[f"{run}/latest"]
    newer = sorted(n for r, kind, n in _saved(out.entries) if r == run and kind == "epoch" and out.entries[f"{r}/epoch{n}/"] > written)
    every = cadence(job).get("checkpoint_every_n_epochs")
    if newer and every and newer[0] % every == 0:
        newer = newer[1:]
    return [f"{run}/epoch{n}" for n in newer]


def resume_from(job: Job, out: Outputs) -> Resume:
    """The newest run folder with a complete checkpoint (`latest`), refused when that run finished or holds step
    LoRAs newer than the checkpoint (the resumed run would save them again, over them)."""
    if len(experts(job)) == 2:
        raise UserError(out.folder, "holds the runs of both A14B experts (expert: both), which runner cannot resume yet: "
                        "each expert's run would need its own checkpoint.",
                        "start anew with `runner train JOB --fresh` (earlier files stay), or train one expert per job "
                        "(expert: high, expert: low), which resumes.")
    runs = sorted({run for run, kind, _ in _saved(out.entries) if kind == "global_step" and f"{run}/latest" in out.entries})
    if not runs:
        raise UserError(out.folder, "holds no DeepSpeed checkpoint (RUN/global_stepN/ with RUN/latest) to resume from.",
                        "start a new run with `runner train JOB --fresh` (earlier files stay).")
    run = runs[-1]
    tag = (out.read_text(f"{run}/latest") or "").strip()
    m = re.fullmatch(r"global_step(\d+)", tag)
    if m is None or f"{run}/{tag}/" not in out.entries:
        raise UserError(f"{out.folder}/{run}/latest", f"names {tag!r}, which is not a checkpoint folder of that run.",
                        "start a new run with `runner train JOB --fresh` (earlier files stay).")
    step, sch = int(m[1]), job.schedule
    final = f"{run}/step{sch.max_steps}/" if sch.max_steps else f"{run}/epoch{epochs(job)}/"
    if final in out.entries:
        raise UserError(f"{out.folder}/{run}", f"finished: its final LoRA {final.rstrip('/')} is saved, there is nothing to resume.",
                        "raise schedule.epochs (or max_steps) to train on from its checkpoint, or start a new run with `runner train JOB --fresh`.")
    later = [f"{run}/step{n}" for r, kind, n in _saved(out.entries) if r == run and kind == "step" and n > step]
    later += _epochs_after(job, out, run)
    if later:
        raise UserError(f"{out.folder}/{run}", f"holds LoRAs saved after its latest checkpoint ({tag}): {', '.join(later)}; "
                        "resuming would train them again and save over them.",
                        "move them out of the run folder (or start a new run with `runner train JOB --fresh`).")
    return Resume(checkpoint=run, step=step)
