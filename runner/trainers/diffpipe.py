"""diffusion-pipe: dataset.toml, the main TOML and the deepspeed launch for a job.

Pinned at tdrussell/diffusion-pipe 8f83dbf. Only this module knows diffusion-pipe's keys and flags.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import tomli_w

from runner import mounts
from runner.data import media
from runner.models.modelfiles import ModelFiles
from runner.plan import Plan, Step
from runner.spec import Job
from runner.trainers.resolved import Caches, ResolvedJob

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


def main_toml(job: Job, files: ModelFiles) -> str:
    mem, sch, opt = job.memory, job.schedule, job.optimizer
    assert files.ckpt_dir is not None, "checks guarantee ckpt_dir for diffusion-pipe"
    doc: dict = {
        "output_dir": str(mounts.job_output_dir(job.name)),
        "dataset": str(mounts.JOB / DATASET_TOML),
        "epochs": epochs(job),
        **({"max_steps": sch.max_steps} if sch.max_steps else {}),
        "micro_batch_size_per_gpu": sch.batch_size,
        "pipeline_stages": 1,
        "gradient_accumulation_steps": sch.gradient_accumulation_steps,
        "gradient_clipping": 1.0,
        "warmup_steps": sch.warmup_steps,
    }
    cadence = {
        "save_every_n_epochs": sch.save_every_epochs,
        "save_every_n_steps": sch.save_every_steps,
        "checkpoint_every_n_epochs": sch.checkpoint_every_epochs,
        "checkpoint_every_n_minutes": sch.checkpoint_every_minutes,
    }
    doc.update({k: v for k, v in cadence.items() if v is not None})
    if mem.activation_checkpointing:
        doc["activation_checkpointing"] = mem.activation_checkpointing
    if mem.blocks_to_swap:
        doc["blocks_to_swap"] = mem.blocks_to_swap
    doc.update({"save_dtype": job.lora.dtype, "caching_batch_size": 1, "video_clip_mode": "single_beginning"})
    model: dict = {"type": "wan", "ckpt_path": _model(files, files.ckpt_dir), "dtype": mem.dtype}
    if files.dit is not None:
        model["transformer_path"] = _model(files, files.dit)
    if files.t5_outside_ckpt:
        model["llm_path"] = _model(files, files.t5)
    if mem.transformer_dtype == "float8":
        model["transformer_dtype"] = "float8"
    if mem.text_encoder_dtype == "float8":
        model["text_encoder_fp8"] = True
    model["timestep_sample_method"] = "logit_normal"
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


def dataset_cache_dir(job: Job, index: int) -> PurePosixPath:
    """diffusion-pipe caches inside the dataset folder, under the model's name."""
    return mounts.dataset_dir(index, job.datasets[index].path) / "cache" / ("wan_i2v" if job.task.is_i2v else "wan")


def render(r: ResolvedJob, master_port: int) -> Plan:
    """--regenerate_cache when the data changed in ways diffusion-pipe's own cache check misses (media bytes);
    it makes missing caches and reuses matching ones itself."""
    job = r.job
    config = str(mounts.JOB / MAIN_TOML)
    # --master_port after train.py wins over the launcher's, so two jobs on one host do not clash
    train = ["deepspeed", f"--num_gpus={job.gpus}", "train.py", "--deepspeed", "--config", config]
    train += ["--master_port", str(master_port)]
    if r.caches is Caches.regenerate:
        train += ["--regenerate_cache"]
    return Plan(
        job=job.name,
        trainer=job.trainer.value,
        workdir=WORKDIR,
        files={DATASET_TOML: dataset_toml(r), MAIN_TOML: main_toml(job, r.files)},
        steps=[Step("train", train)],
        output_dir=str(mounts.job_output_dir(job.name)),
    )
