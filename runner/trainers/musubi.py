"""musubi-tuner: the dataset TOML and the three steps (cache latents, cache text, train) for a job.

Pinned at kohya-ss/musubi-tuner 30c658c (v0.3.4). Only this module knows musubi's flags.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import tomli_w
import yaml

from runner import mounts
from runner.data import media
from runner.errors import UserError
from runner.models.modelfiles import ModelFiles
from runner.plan import Plan, Step
from runner.spec import Job, Samples, Trainer, experts, max_blocks_to_swap, timestep_range
from runner.trainers.multinode import MULTINODE_LAUNCH, MULTINODE_PY
from runner.trainers.resolved import Caches, Entries, Outputs, ResolvedJob, Resume

WORKDIR = "/opt/musubi-tuner"
DATASET_TOML = "musubi_dataset.toml"
ACCELERATE_YAML = "accelerate.yaml"
RESUME_PY = "resume_counters.py"
SCRIPTS = PurePosixPath("src/musubi_tuner")
# musubi's recipe values for Wan2.1 (docs/wan.md)
DEFAULT_OPTIMIZER = "adamw8bit"
DEFAULT_LR = 2e-4
TIMESTEP_SAMPLING = ["--timestep_sampling", "shift", "--discrete_flow_shift", "3.0"]
MIXED_PRECISION = {"bfloat16": "bf16", "float16": "fp16"}
# lora.dtype → --save_precision (choices float, fp32, fp16, bf16; musubi saves fp32 when it is not given)
SAVE_PRECISION = {"bfloat16": "bf16", "float32": "fp32"}
# the caching scripts load their tokenizers from the hub without a revision (wan/modules/t5.py, clip.py); the
# image seeds them into HF_HOME, so offline they load exactly the pinned snapshot and never a moved `main`
CACHE_STEP_ENV = {"HF_HUB_OFFLINE": "1"}
# TensorBoard (--logging_dir): accelerate's tracker writes <dir>/<%Y%m%d%H%M%S of the start>/network_train/events.*
# (training/accelerator_setup.py, accelerate tracking.py TensorBoardTracker): one folder per run, in the job's outputs
TENSORBOARD_DIR = "logs"
# musubi's --task names one I2V config for both resolutions (wan/configs/__init__.py WAN_CONFIGS). It has no
# ti2v-5B config at the pin (only a SUPPORTED_SIZES entry: docs/wan.md "Wan2.2 ... only for 14B models"), and its
# flf2v-14B trains only in the one-frame mode of docs/wan_1f.md: checks refuse both (runner.job.checks).
TASKS = {"t2v-1.3B": "t2v-1.3B", "t2v-14B": "t2v-14B", "i2v-14B-480P": "i2v-14B", "i2v-14B-720P": "i2v-14B",
         "t2v-A14B": "t2v-A14B", "i2v-A14B": "i2v-A14B"}
UNSUPPORTED_TASKS = {
    "ti2v-5B": "musubi-tuner has no ti2v-5B task at its pin (wan/configs WAN_CONFIGS; docs/wan.md: Wan2.2 \"only for 14B models\")",
    "flf2v-14B": "musubi-tuner trains flf2v-14B only in its one-frame mode (docs/wan_1f.md: control images, one target "
                 "frame); its video caching keeps one start image, which the FLF2V image projection cannot take",
}


# --optimizer_type (training/trainer_base.py get_optimizer): "adamw8bit", "adafactor" and "adamw" in any case;
# any other name is a class of torch.optim (exact case) or a dotted path `module.Class`.
NAMED_OPTIMIZERS = {"adamw8bit", "adafactor", "adamw"}
TORCH_OPTIMIZERS = ["Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "ASGD", "LBFGS", "NAdam", "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam"]
# diffusion-pipe's own names (train.py get_optimizer) → what means the same to musubi. musubi trains the LoRA in
# float32, where optimi's and AdamW8bitKahan's Kahan summation (for bf16 weights) changes nothing.
DIFFPIPE_EQUIVALENT = {
    "adamw_optimi": "adamw (torch.optim.AdamW: optimi's AdamW without the Kahan summation that fp32 LoRA weights do not need)",
    "adamw8bitkahan": "adamw8bit (bitsandbytes' AdamW8bit: the same optimizer without the Kahan summation that fp32 LoRA weights do not need)",
    "stableadamw": "adamw (musubi has no StableAdamW)",
    "offload": "adamw8bit (musubi has no CPU-offloaded optimizer; the 8-bit states save most of that memory)",
    "automagic": "adamw8bit (musubi has no Automagic)",
    "genericoptim": "adamw8bit (musubi has no GenericOptim)",
}


def optimizer_type(name: str | None) -> str:
    """The --optimizer_type for a job's optimizer.type (checks refuse the names musubi cannot load)."""
    name = name or DEFAULT_OPTIMIZER
    if "." in name or name.lower() in NAMED_OPTIMIZERS:
        return name
    return next((t for t in TORCH_OPTIMIZERS if t.lower() == name.lower()), name)


def optimizer_problem(name: str) -> tuple[str, str] | None:
    """(problem, fix) when musubi cannot load optimizer `name`, else None."""
    low = name.lower()
    if "." in name or low in NAMED_OPTIMIZERS or any(t.lower() == low for t in TORCH_OPTIMIZERS):
        return None
    problem = (
        f"'{name}' is not an optimizer musubi-tuner knows: it takes adamw8bit, adamw or adafactor, else looks the name "
        "up in torch.optim and stops with AttributeError, after caching and loading the DiT."
    )
    if low in DIFFPIPE_EQUIVALENT:
        return problem.replace("knows:", "knows (it is diffusion-pipe's):"), f"for trainer: musubi use optimizer.type: {DIFFPIPE_EQUIVALENT[low]}."
    return problem, "use adamw8bit, adamw, adafactor, a torch.optim class (e.g. SGD) or a class path such as bitsandbytes.optim.PagedAdamW8bit."


def _wh(res: int | tuple[int, int]) -> tuple[int, int]:
    return (res, res) if isinstance(res, int) else res


def dataset_cache_dir(job: Job, index: int) -> PurePosixPath:
    """Where the caches of the index-th dataset live (and runner's fingerprint of them)."""
    return mounts.job_cache_dir(job.name) / "musubi" / mounts.dataset_dir(index, job.datasets[index].path).name


def _cache_dir(job: Job, index: int, res: tuple[int, int], kind: str) -> str:
    # one cache folder per [[datasets]] entry: musubi keys caches by file stem, so entries must not share one
    return str(dataset_cache_dir(job, index) / f"{res[0]}x{res[1]}-{kind}")


def dataset_entries(r: ResolvedJob) -> list[dict]:
    """One [[datasets]] entry per dataset, resolution and media kind (a mixed folder is read twice)."""
    job, entries = r.job, []
    for i, d in enumerate(job.datasets):
        kind = r.kind(i)
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


def dataset_toml(r: ResolvedJob) -> str:
    general = {"batch_size": r.job.schedule.batch_size, "enable_bucket": True, "bucket_no_upscale": False}
    return tomli_w.dumps({"general": general, "datasets": dataset_entries(r)})


def _model(files: ModelFiles, p: Path | None) -> str:
    assert p is not None, "checks guarantee every file musubi needs is set"
    return str(mounts.model_path(files.root, p))


def dit_bytes_per_param(r: ResolvedJob) -> int:
    """Bytes per DiT parameter as musubi holds the weights. Without fp8, musubi keeps the file's dtype
    (wan_train_network.py detect_wan_sd_dtype → --dit_dtype, which the script resets to None, i.e. always
    detected): the official Wan2.1 DiT (one file for 1.3B, shards for 14B, loaded together from the first
    shard's name) is float32, 4 bytes. An fp8 file without fp8 is cast to the mixed-precision dtype.
    A DiT whose header was not read (not on the target): the format of the job's preset decides."""
    job = r.job
    if job.memory.transformer_dtype == "float8":
        return 1
    dtype = r.dit_dtype
    if dtype is None:
        dtype = "float32" if job.models.preset and job.models.format == "official" else job.memory.dtype
    return 4 if dtype == "float32" else 2


def train_args(r: ResolvedJob, config: str, processes: int) -> list[str]:
    """wan_train_network.py's arguments; processes: the training processes of the run, one per GPU of every machine."""
    job, files = r.job, r.files
    mem, sch, opt = job.memory, job.schedule, job.optimizer
    mp = MIXED_PRECISION[mem.dtype]
    out = str(run_dir(r))
    args = ["--task", TASKS[job.task.value], "--dit", _model(files, expert_dit(r)), "--dataset_config", config]
    args += ["--sdpa", "--mixed_precision", mp]
    if mem.transformer_dtype == "float8":
        # an fp8 file is already quantized (its header, read on the target, says so); a bf16/fp16 file is
        # quantized at load with per-tensor scales
        args += ["--fp8_base"] if r.dit_dtype == "float8" else ["--fp8_base", "--fp8_scaled"]
    if mem.blocks_to_swap:
        args += ["--blocks_to_swap", str(mem.blocks_to_swap)]
    if mem.activation_checkpointing:
        args += ["--gradient_checkpointing"]
    args += ["--optimizer_type", optimizer_type(opt.type), "--learning_rate", f"{opt.lr or DEFAULT_LR:g}"]
    explicit = {"weight_decay", "betas", "eps"} & opt.model_fields_set
    if explicit:
        args += ["--optimizer_args"] + [_optimizer_arg(k, getattr(opt, k)) for k in sorted(explicit)]
    if sch.warmup_steps:
        # musubi's default scheduler "constant" refuses warmup steps. accelerate steps the scheduler once per
        # process at each optimizer step (AcceleratedScheduler.step), so warmup_steps optimizer steps are
        # warmup_steps × processes scheduler steps, as musubi's own num_training_steps = max_train_steps × processes
        # (training/trainer_base.py get_lr_scheduler). It does not scale the learning rate with the processes.
        args += ["--lr_scheduler", "constant_with_warmup", "--lr_warmup_steps", str(sch.warmup_steps * processes)]
    if sch.gradient_accumulation_steps > 1:
        args += ["--gradient_accumulation_steps", str(sch.gradient_accumulation_steps)]
    args += ["--max_data_loader_n_workers", "2", "--persistent_data_loader_workers"]
    rank = job.lora.rank
    alpha = job.lora.alpha if job.lora.alpha is not None else rank
    args += ["--network_module", "networks.lora_wan", "--network_dim", str(rank), "--network_alpha", f"{alpha:g}"]
    args += TIMESTEP_SAMPLING + expert_args(r)
    # --max_train_epochs overrides --max_train_steps, so pass only the one that limits the run (checks refuse
    # a job that sets both: musubi cannot stop at whichever comes first). A resumed run counts from 0 again: what is left.
    start = r.start
    if sch.max_steps:
        args += ["--max_train_steps", str(sch.max_steps - start.step)]
    else:
        args += ["--max_train_epochs", str(sch.epochs - start.epoch)]
    if sch.save_every_epochs:
        args += ["--save_every_n_epochs", str(sch.save_every_epochs)]
    if sch.save_every_steps:
        args += ["--save_every_n_steps", str(sch.save_every_steps)]
    # always: a run can be resumed from the state musubi saves with every LoRA (checks allow checkpoint_every_epochs
    # only equal to save_every_epochs)
    args += ["--save_state"]
    if start.checkpoint is not None:
        args += ["--resume", str(mounts.job_output_dir(job.name) / start.checkpoint)]
    args += ["--save_precision", SAVE_PRECISION[job.lora.dtype]]
    # every run of the job (a --fresh one writes its saves into a subfolder) logs beside the others
    args += ["--log_with", "tensorboard", "--logging_dir", str(mounts.job_output_dir(job.name) / TENSORBOARD_DIR)]
    args += ["--seed", str(job.seed), "--output_dir", out, "--output_name", job.name]
    return args


def expert_args(r: ResolvedJob) -> list[str]:
    """Wan2.2 A14B (docs/wan.md): one expert trains on its share of the timesteps, 0..1000 as --min/max_timestep
    take them, with --preserve_distribution_shape as the docs recommend; both experts train in one run, --dit the
    low-noise one and --dit_high_noise the other, switched at --timestep_boundary (an int: 0..1000), the inactive
    one in host RAM unless blocks are swapped (--offload_inactive_dit asserts no block swap)."""
    job, chosen = r.job, experts(r.job)
    if not chosen:
        return []
    if len(chosen) == 2:
        assert job.task.boundary is not None
        args = ["--dit_high_noise", _model(r.files, r.files.dit_high_noise), "--timestep_boundary", str(round(job.task.boundary * 1000))]
        return args + ([] if job.memory.blocks_to_swap else ["--offload_inactive_dit"])
    low, high = timestep_range(job.task, chosen[0])
    return ["--min_timestep", str(round(low * 1000)), "--max_timestep", str(round(high * 1000)), "--preserve_distribution_shape"]


def expert_dit(r: ResolvedJob) -> Path | None:
    """The DiT --dit loads: the high-noise expert's when only that one trains, else models.dit."""
    return r.files.dit_high_noise if experts(r.job) == ("high",) else r.files.dit


def _optimizer_arg(key: str, value: object) -> str:
    if isinstance(value, tuple):
        return f"{key}=({','.join(f'{v:g}' for v in value)})"
    return f"{key}={value:g}"


def gpus_per_machine(job: Job) -> int:
    assert job.gpu_count is not None, "runner.job.resolve resolves `gpus: all` before a render"
    return job.gpu_count


def accelerate_yaml(job: Job, master_port: int | None, machines: int = 1) -> str:
    """`accelerate launch --config_file` for this job: keys of accelerate 1.6.0's ClusterConfig
    (commands/config/config_args.py), which refuses unknown keys; what the command line does not set comes from here.
    num_processes counts every machine's (accelerate runs num_processes / num_machines per machine:
    utils/launch.py prepare_multi_gpu_env). gpu_ids becomes CUDA_VISIBLE_DEVICES of the training processes (one id
    too: the simple launcher sets it as well). Several machines: each one's rank and the main process's address and
    port come on the command line (multinode_launch.py), so master_port is None there."""
    processes = gpus_per_machine(job) * machines
    config: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if processes > 1 else "NO",
        "mixed_precision": MIXED_PRECISION[job.memory.dtype],
        "use_cpu": False,
        "debug": False,
        "num_processes": processes,
        "num_machines": machines,
        "machine_rank": 0,
        "gpu_ids": ",".join(map(str, job.gpu_ids)) if job.gpu_ids else "all",
        "rdzv_backend": "static",
        "same_network": True,
        "main_training_function": "main",
        "enable_cpu_affinity": False,
        "downcast_bf16": False,
        "dynamo_config": {"dynamo_backend": "NO"},
    }
    if processes > 1 and master_port is not None:
        config["main_process_port"] = master_port
    return yaml.safe_dump(config, sort_keys=False)


def render(r: ResolvedJob, master_port: int | None, machines: int = 1) -> Plan:
    """The three steps; the two caching steps only when the caches are not to be reused. musubi re-caches
    whenever its cache steps run (they delete stale files), so making and regenerating are the same steps.

    machines > 1: the plan every machine of a multi-node Slurm job runs (runner.job.render.trainer_plan): its caching
    steps belong once, on one machine, before the others start (the caches are in the shared folder), and `train` on
    every machine as the one task of its node, through /job/multinode_launch.py (runner.trainers.multinode), which adds
    the machine's rank and the main process's address and port at run time; master_port is then unused."""
    job, models = r.job, r.files
    config = str(mounts.JOB / DATASET_TOML)
    python = ["python"]
    cache_latents = python + [str(SCRIPTS / "wan_cache_latents.py"), "--dataset_config", config]
    cache_latents += ["--vae", _model(models, models.vae)]
    if job.task.is_i2v:  # Wan2.2 I2V conditions on the first frame's latents only, without CLIP (docs/wan.md)
        cache_latents += ["--i2v"] + (["--clip", _model(models, models.clip)] if job.task.needs_clip else [])
    cache_text = python + [str(SCRIPTS / "wan_cache_text_encoder_outputs.py"), "--dataset_config", config]
    cache_text += ["--t5", _model(models, models.t5), "--batch_size", str(job.memory.text_encoder_batch)]
    if job.memory.text_encoder_dtype == "float8":
        cache_text += ["--fp8_t5"]
    # every launch setting comes from the rendered file: without --config_file accelerate would read
    # $HF_HOME/accelerate/default_config.yaml, which is in the user's mounted cache. The thread count has no config key.
    launch = ["accelerate", "launch", "--config_file", str(mounts.JOB / ACCELERATE_YAML), "--num_cpu_threads_per_process", "1"]
    script = [str(SCRIPTS / "wan_train_network.py")]
    prompts, sampling = training_samples(r)
    files = {DATASET_TOML: dataset_toml(r), ACCELERATE_YAML: accelerate_yaml(job, master_port if machines == 1 else None, machines), **prompts}
    if r.start.checkpoint is not None:
        script = [str(mounts.JOB / RESUME_PY), str(r.start.epoch), str(r.start.step)] + script
        files[RESUME_PY] = RESUME_COUNTERS
    if machines > 1:
        launch = ["python", str(mounts.JOB / MULTINODE_PY), str(machines)] + launch
        files[MULTINODE_PY] = MULTINODE_LAUNCH
    train = launch + script + train_args(r, config, gpus_per_machine(job) * machines) + sampling
    offline = {k: v for k, v in CACHE_STEP_ENV.items() if k not in job.env}  # the job's env wins over runner's
    # the caching scripts use the first visible GPU: with device ids, the job's first
    device = {"CUDA_VISIBLE_DEVICES": str(job.gpu_ids[0])} if job.gpu_ids and "CUDA_VISIBLE_DEVICES" not in job.env else {}
    caching = [] if r.caches is Caches.reuse else [
        Step("cache-latents", cache_latents, env=offline | device),
        Step("cache-text-encoder", cache_text, env=offline | device),
    ]
    return Plan(
        job=job.name,
        trainer=job.trainer.value,
        workdir=WORKDIR,
        files=files,
        steps=caching + [Step("train", train, env=offline if sampling else {})],  # sampling loads umT5's tokenizer
        output_dir=str(run_dir(r)),
    )


# ---------------------------------------------------------------- earlier runs and resume
# musubi writes {name}-{epoch:06d}.safetensors, {name}-step{step:08d}.safetensors and the final {name}.safetensors
# into --output_dir, with --save_state a {same}-state/ folder (accelerate.save_state) beside each, and {name}-state/ at
# the end (utils/train_utils.py). --resume DIR restores weights, optimizer, scheduler and RNG but counts epochs and
# steps from 0 (training/trainer_base.py: epoch_to_start = 0, global_step = 0; no flag sets them), so runner's
# resume_counters.py shifts the names and the ss_epoch/ss_steps metadata of every save by the counters reached.
RUN_FOLDER = re.compile(r"\d{8}_\d{2}-\d{2}-\d{2}")  # where a --fresh run writes, beside the earlier files
STATE_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin")  # what accelerate.load_state reads first
RESUME_COUNTERS = '''"""Written by runner: musubi-tuner's training script resumed with its counters where they were.

musubi-tuner 30c658c restores weights, optimizer, scheduler and RNG with --resume but counts epochs and steps from 0
(training/trainer_base.py), so its saves would be named -000001... again, over the earlier run's files. This shifts
the numbers in the names of its LoRAs and states (utils/train_utils.py) and the ss_epoch/ss_steps metadata of its
LoRAs (networks/lora.py LoRANetwork.save_weights) by the counters the resumed state had reached, then runs the
script unchanged.  usage: resume_counters.py EPOCHS STEPS SCRIPT ARGS...
"""
import runpy
import sys

from musubi_tuner.networks import lora
from musubi_tuner.utils import train_utils

EPOCHS, STEPS, SCRIPT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def shifted(function, by):
    return lambda *args: function(*args[:-1], args[-1] + by)


train_utils.get_epoch_ckpt_name = shifted(train_utils.get_epoch_ckpt_name, EPOCHS)
train_utils.get_step_ckpt_name = shifted(train_utils.get_step_ckpt_name, STEPS)
train_utils.save_and_remove_state_on_epoch_end = shifted(train_utils.save_and_remove_state_on_epoch_end, EPOCHS)
train_utils.save_and_remove_state_stepwise = shifted(train_utils.save_and_remove_state_stepwise, STEPS)
save_weights = lora.LoRANetwork.save_weights


def save_with_counters(self, file, dtype, metadata):
    if metadata and "ss_epoch" in metadata and "ss_steps" in metadata:
        metadata = {**metadata, "ss_epoch": str(int(metadata["ss_epoch"]) + EPOCHS), "ss_steps": str(int(metadata["ss_steps"]) + STEPS)}
    return save_weights(self, file, dtype, metadata)


lora.LoRANetwork.save_weights = save_with_counters
sys.argv = [SCRIPT] + sys.argv[4:]
runpy.run_path(SCRIPT, run_name="__main__")
'''


def run_dir(r: ResolvedJob) -> PurePosixPath:
    return mounts.job_output_dir(r.job.name) / r.start.run_folder


def _saves(job: Job, entries: Entries, run: str) -> dict[str, tuple[str, int]]:
    """Each save of `run` ("" = the output folder itself): its name → (kind: epoch|step|final, number)."""
    saves = {}
    pattern = re.compile(rf"{re.escape(job.name)}(?:-(\d{{6}})|-step(\d{{8}}))?(\.safetensors|-state/)")
    prefix = f"{run}/" if run else ""
    for e in entries:
        m = pattern.fullmatch(e[len(prefix):]) if e.startswith(prefix) else None
        if m:
            saves[e.rstrip("/")] = ("epoch", int(m[1])) if m[1] else ("step", int(m[2])) if m[2] else ("final", 0)
    return saves


def _runs(job: Job, entries: Entries) -> list[str]:
    """Run folders holding saves, oldest first: the output folder itself, then each --fresh run."""
    stamps = sorted({e.split("/")[0] for e in entries if RUN_FOLDER.fullmatch(e.split("/")[0])})
    return [run for run in ["", *stamps] if _saves(job, entries, run)]


def earlier_files(job: Job, entries: Entries) -> list[str]:
    """The LoRAs and states earlier runs left in the job's output folder."""
    return sorted(name for run in _runs(job, entries) for name in _saves(job, entries, run))


def fresh_run(job: Job, entries: Entries, stamp: str) -> Resume:
    """A new run writes into a new folder named like diffusion-pipe's runs (UTC time), beside the earlier files."""
    return Resume(run_folder=stamp) if earlier_files(job, entries) else Resume()


def resume_from(job: Job, out: Outputs) -> Resume:
    """The latest complete state of the latest run, with the counters its LoRA's metadata records; refused when
    that run finished or holds LoRAs saved after the state (the resumed run would save them again, over them)."""
    runs = _runs(job, out.entries)
    run = runs[-1] if runs else ""
    saves = _saves(job, out.entries, run)
    where = f"{out.folder}/{run}".rstrip("/")
    if any(kind == "final" and name.endswith(".safetensors") for name, (kind, _) in saves.items()):
        raise UserError(where, f"finished: its final LoRA {job.name}.safetensors is saved, there is nothing to resume.",
                        "start a new run with `runner train JOB --fresh` (earlier files stay).")
    states = []
    for name, (kind, _) in saves.items():
        if kind == "final" or not name.endswith("-state") or not all(f"{name}/{f}" in out.entries for f in STATE_FILES):
            continue
        meta = (out.read_header(name.removesuffix("-state") + ".safetensors") or {}).get("__metadata__", {})
        if str(meta.get("ss_epoch", "")).isdigit() and str(meta.get("ss_steps", "")).isdigit():
            states.append((int(meta["ss_steps"]), int(meta["ss_epoch"]), name))
    if not states:
        raise UserError(where, "holds no complete training state (NAME-…-state/ with its LoRA beside it) to resume from.",
                        "start a new run with `runner train JOB --fresh` (earlier files stay).")
    step, epoch, state = max(states)
    sch = job.schedule
    if (sch.max_steps - step if sch.max_steps else sch.epochs - epoch) <= 0:
        raise UserError(where, f"its latest state {state} is at the end of the schedule ({epoch} epochs, {step} steps): "
                        "there is nothing to resume.", "start a new run with `runner train JOB --fresh` (earlier files stay).")
    later = sorted(name for name, (kind, n) in saves.items() if name.endswith(".safetensors")
                   and ((kind == "epoch" and n > epoch) or (kind == "step" and n > step)))
    if later:
        raise UserError(where, f"holds LoRAs saved after its latest complete state ({state}): {', '.join(later)}; "
                        "resuming would train them again and save over them.",
                        "move them out of the folder (or start a new run with `runner train JOB --fresh`).")
    return Resume(run_folder=run, checkpoint=state, epoch=epoch, step=step)


# --- sample videos: while training (musubi's own sampler) and after it (`runner sample`, wan_generate_video.py) ----

SAMPLE_PROMPTS = "sample_prompts.txt"
GENERATE = SCRIPTS / "wan_generate_video.py"
CONVERT_LORA = SCRIPTS / "convert_lora.py"
SAMPLE_FPS = 16  # Wan2.1's sample_fps (wan/configs/shared_config.py), wan_generate_video.py's --fps default


def sample_prompt_line(prompt: str, s: Samples) -> str:
    """One line of musubi's prompt file (training/sampling_prompts.py line_to_prompt_dict). Wan's classifier-free
    guidance scale is `--l` (cfg_scale); `--g` sets guidance_scale, which Wan's sampler does not read."""
    return f"{prompt} --w {s.width} --h {s.height} --f {s.frames} --d {s.seed} --s {s.steps} --l {s.guidance:g}"


def training_samples(r: ResolvedJob) -> tuple[dict[str, str], list[str]]:
    """The prompt file and wan_train_network.py's sampling flags (training/parser_common.py _add_sampling_args);
    nothing without prompts or with samples.during_training false. Sampling loads the VAE and umT5 (--vae, --t5)."""
    job, files = r.job, r.files
    s = job.samples
    if not s.prompts or not s.during_training:
        return {}, []
    epochs, steps = s.every_epochs, s.every_steps
    if epochs is None and steps is None:  # each saved LoRA gets its videos
        epochs, steps = job.schedule.save_every_epochs, job.schedule.save_every_steps
    args = ["--sample_prompts", str(mounts.JOB / SAMPLE_PROMPTS)]
    args += ["--sample_every_n_epochs", str(epochs)] if epochs else []
    args += ["--sample_every_n_steps", str(steps)] if steps else []
    args += ["--sample_at_first"] if s.at_first else []
    args += ["--vae", _model(files, files.vae), "--t5", _model(files, files.t5)]
    args += ["--fp8_t5"] if job.memory.text_encoder_dtype == "float8" else []
    text = "".join(sample_prompt_line(p, s) + "\n" for p in s.prompts)
    return {SAMPLE_PROMPTS: text}, args


def generate_argv(r: ResolvedJob, lora: str, prompt: str, save_dir: str) -> list[str]:
    """wan_generate_video.py for one LoRA (a container path, in musubi's own key format) and one prompt; the video
    lands in save_dir as `{time}_{seed}.mp4`. --video_size is height then width."""
    job, files = r.job, r.files
    s, mem = job.samples, job.memory
    argv = ["python", str(GENERATE), "--task", TASKS[job.task.value], "--dit", _model(files, files.dit)]
    argv += ["--vae", _model(files, files.vae), "--t5", _model(files, files.t5)]
    argv += ["--lora_weight", lora, "--lora_multiplier", "1.0", "--prompt", prompt]
    argv += ["--video_size", str(s.height), str(s.width), "--video_length", str(s.frames), "--fps", str(SAMPLE_FPS)]
    argv += ["--infer_steps", str(s.steps), "--guidance_scale", f"{s.guidance:g}", "--seed", str(s.seed)]
    argv += ["--attn_mode", "sdpa", "--save_path", save_dir, "--output_type", "video"]
    if mem.transformer_dtype == "float8":
        argv += ["--fp8"] if r.dit_dtype == "float8" else ["--fp8", "--fp8_scaled"]
    if mem.text_encoder_dtype == "float8":
        argv += ["--fp8_t5"]
    if mem.blocks_to_swap:
        argv += ["--blocks_to_swap", str(min(mem.blocks_to_swap, max_blocks_to_swap(Trainer.musubi, job.task)))]
    return argv


def convert_lora_argv(source: str, target: str) -> list[str]:
    """convert_lora.py: diffusion-pipe's ComfyUI/PEFT keys (`diffusion_model.blocks.0.self_attn.q.lora_A.weight`) to
    musubi's (`lora_unet_blocks_0_self_attn_q.lora_down.weight`). wan_generate_video.py merges only musubi's keys
    (utils/lora_utils.py) and skips others without a word, so an unconverted LoRA would sample the base model."""
    return ["python", str(CONVERT_LORA), "--input", source, "--output", target, "--target", "default"]
