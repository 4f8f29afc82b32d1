"""musubi-tuner: the dataset TOML and the three steps (cache latents, cache text, train) for a job.

Pinned at kohya-ss/musubi-tuner 30c658c (v0.3.4). Only this module knows musubi's flags.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import tomli_w

from runner import media, mounts, weights
from runner.modelfiles import ModelFiles
from runner.plan import Plan, Step
from runner.spec import Job

WORKDIR = "/opt/musubi-tuner"
DATASET_TOML = "musubi_dataset.toml"
SCRIPTS = PurePosixPath("src/musubi_tuner")
# musubi's recipe values for Wan2.1 (docs/wan.md)
DEFAULT_OPTIMIZER = "adamw8bit"
DEFAULT_LR = 2e-4
TIMESTEP_SAMPLING = ["--timestep_sampling", "shift", "--discrete_flow_shift", "3.0"]
TEXT_ENCODER_BATCH = 16
MIXED_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}
# musubi's --task names one I2V config for both resolutions (wan/configs/__init__.py)
TASKS = {"t2v-1.3B": "t2v-1.3B", "t2v-14B": "t2v-14B", "i2v-14B-480P": "i2v-14B", "i2v-14B-720P": "i2v-14B"}


def _wh(res: int | tuple[int, int]) -> tuple[int, int]:
    return (res, res) if isinstance(res, int) else res


def dataset_cache_dir(job: Job, index: int) -> PurePosixPath:
    """Where the caches of the index-th dataset live (and runner's fingerprint of them)."""
    return mounts.job_cache_dir(job.name) / "musubi" / mounts.dataset_dir(index, job.datasets[index].path).name


def _cache_dir(job: Job, index: int, res: tuple[int, int], kind: str) -> str:
    # one cache folder per [[datasets]] entry: musubi keys caches by file stem, so entries must not share one
    return str(dataset_cache_dir(job, index) / f"{res[0]}x{res[1]}-{kind}")


def dataset_entries(job: Job) -> list[dict]:
    """One [[datasets]] entry per dataset, resolution and media kind (a mixed folder is read twice)."""
    entries = []
    for i, d in enumerate(job.datasets):
        kind = media.dataset_kind(d.kind, d.path)
        kinds = ["image", "video"] if kind == "mixed" else [kind]
        folder = str(mounts.dataset_dir(i, d.path))
        for res in map(_wh, d.resolutions):
            for k in kinds:
                entry: dict = {"resolution": list(res)}
                if k == "video":
                    entry["video_directory"] = folder
                    entry["target_frames"] = media.video_frames(d.frames)
                    entry["frame_extraction"] = "head"
                    if d.source_fps:
                        entry["source_fps"] = float(d.source_fps)
                else:
                    entry["image_directory"] = folder
                entry["cache_directory"] = _cache_dir(job, i, res, k)
                entry["num_repeats"] = d.repeats
                entry["caption_extension"] = d.caption_extension
                entries.append(entry)
    return entries


def dataset_toml(job: Job) -> str:
    general = {"batch_size": job.schedule.batch_size, "enable_bucket": True, "bucket_no_upscale": False}
    return tomli_w.dumps({"general": general, "datasets": dataset_entries(job)})


def _model(files: ModelFiles, p: Path | None) -> str:
    assert p is not None, "checks guarantee every file musubi needs is set"
    return str(mounts.model_path(files.root, p))


def _dit_is_fp8(path: Path | None) -> bool:
    try:
        return path is not None and weights.inspect(path).dtype == "float8"
    except (OSError, weights.NotSafetensors):
        return False


def train_args(job: Job, files: ModelFiles, config: str) -> list[str]:
    mem, sch, opt = job.memory, job.schedule, job.optimizer
    mp = MIXED_PRECISION[mem.dtype]
    out = str(mounts.job_output_dir(job.name))
    args = ["--task", TASKS[job.task.value], "--dit", _model(files, files.dit), "--dataset_config", config]
    args += ["--sdpa", "--mixed_precision", mp]
    if mem.transformer_dtype == "float8":
        # an fp8 file is already quantized; a bf16/fp16 file is quantized at load with per-tensor scales
        args += ["--fp8_base"] if _dit_is_fp8(files.dit) else ["--fp8_base", "--fp8_scaled"]
    if mem.blocks_to_swap:
        args += ["--blocks_to_swap", str(mem.blocks_to_swap)]
    if mem.activation_checkpointing:
        args += ["--gradient_checkpointing"]
    args += ["--optimizer_type", opt.type or DEFAULT_OPTIMIZER, "--learning_rate", f"{opt.lr or DEFAULT_LR:g}"]
    explicit = {"weight_decay", "betas", "eps"} & opt.model_fields_set
    if explicit:
        args += ["--optimizer_args"] + [_optimizer_arg(k, getattr(opt, k)) for k in sorted(explicit)]
    if sch.warmup_steps:
        # musubi's default scheduler "constant" refuses warmup steps
        args += ["--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", str(sch.warmup_steps)]
    if sch.gradient_accumulation_steps > 1:
        args += ["--gradient_accumulation_steps", str(sch.gradient_accumulation_steps)]
    args += ["--max_data_loader_n_workers", "2", "--persistent_data_loader_workers"]
    rank = job.lora.rank
    alpha = job.lora.alpha if job.lora.alpha is not None else rank
    args += ["--network_module", "networks.lora_wan", "--network_dim", str(rank), "--network_alpha", f"{alpha:g}"]
    args += TIMESTEP_SAMPLING
    # --max_train_epochs overrides --max_train_steps, so pass only the one that limits the run
    args += ["--max_train_steps", str(sch.max_steps)] if sch.max_steps else ["--max_train_epochs", str(sch.epochs)]
    if sch.save_every_epochs:
        args += ["--save_every_n_epochs", str(sch.save_every_epochs)]
    if sch.save_every_steps:
        args += ["--save_every_n_steps", str(sch.save_every_steps)]
    if sch.checkpoint_every_epochs:
        args += ["--save_state"]
    if job.lora.dtype == "float32":
        args += ["--save_precision", "float"]
    args += ["--seed", str(job.seed), "--output_dir", out, "--output_name", job.name]
    return args


def _optimizer_arg(key: str, value: object) -> str:
    if isinstance(value, tuple):
        return f"{key}=({','.join(f'{v:g}' for v in value)})"
    return f"{key}={value:g}"


def render(job: Job, files: ModelFiles, master_port: int, regenerate_cache: bool = False) -> Plan:
    """The three steps. musubi re-caches whenever its cache steps run (they delete stale files); the
    executor skips them when the fingerprint says the cache is fresh, so `regenerate_cache` changes nothing."""
    config = str(mounts.JOB / DATASET_TOML)
    mp = MIXED_PRECISION[job.memory.dtype]
    python = ["python"]
    cache_latents = python + [str(SCRIPTS / "wan_cache_latents.py"), "--dataset_config", config]
    cache_latents += ["--vae", _model(files, files.vae)]
    if job.task.is_i2v:
        cache_latents += ["--i2v", "--clip", _model(files, files.clip)]
    cache_text = python + [str(SCRIPTS / "wan_cache_text_encoder_outputs.py"), "--dataset_config", config]
    cache_text += ["--t5", _model(files, files.t5), "--batch_size", str(TEXT_ENCODER_BATCH)]
    launch = ["accelerate", "launch", "--num_cpu_threads_per_process", "1", "--mixed_precision", mp]
    launch += ["--num_processes", str(job.gpus), "--num_machines", "1", "--dynamo_backend", "no"]
    if job.gpus > 1:
        launch += ["--multi_gpu", "--main_process_port", str(master_port)]
    train = launch + [str(SCRIPTS / "wan_train_network.py")] + train_args(job, files, config)
    return Plan(
        job=job.name,
        trainer=job.trainer.value,
        workdir=WORKDIR,
        files={DATASET_TOML: dataset_toml(job)},
        steps=[
            Step("cache-latents", cache_latents, caches=True),
            Step("cache-text-encoder", cache_text, caches=True),
            Step("train", train),
        ],
        output_dir=str(mounts.job_output_dir(job.name)),
    )
