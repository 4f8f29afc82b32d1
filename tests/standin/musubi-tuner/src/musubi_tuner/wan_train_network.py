"""STAND-IN for musubi_tuner.wan_train_network (runner's CI test double, no GPU, no model math).

Honours upstream's contract at 30c658c: the full argparse option set (common parser + Wan additions; an unknown
flag exits 2 like argparse), --config_file, the argument checks in upstream's order (dataset_config/dit required,
--fp8_scaled needs --fp8_base, --sage_attn refused, DiT dtype vs --mixed_precision, fp8 DiT vs --fp8_scaled,
DiT width vs --task, attention flag, blocks_to_swap <= blocks-1, network module, --optimizer_type,
constant scheduler + warmup), cache discovery (`*_wan.safetensors` paired with `_wan_te`; none -> ValueError),
step arithmetic (--max_train_epochs overrides --max_train_steps; grad accumulation; processes), tqdm-like
progress lines and epoch lines, and the output layout: `{name}-step{N:08d}.safetensors`, `{name}-{E:06d}.safetensors`
(epochs before the last), `{name}.safetensors`, and `-state/` folders with --save_state. Weights are zeros.
Knobs: STANDIN_STEP_SECONDS, STANDIN_FAIL_AT_STEP, STANDIN_NAN_AT_STEP (see _standin.py).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import json
import logging
import math
import os
import pathlib
import pickle
import random
import re
import shutil
import sys
import time
import tomllib

from musubi_tuner._standin import EventWriter, Progress, banner, on_sigterm, read_safetensors_header, step_knobs
from musubi_tuner.dataset import config_utils, items
from musubi_tuner.networks import lora, lora_wan
from musubi_tuner.utils import train_utils

logger = logging.getLogger(__name__)

DYNAMO_BACKENDS = ["NO", "EAGER", "AOT_EAGER", "INDUCTOR", "AOT_TS_NVFUSER", "NVPRIMS_NVFUSER", "CUDAGRAPHS", "OFI", "FX2TRT",
                   "ONNXRT", "TENSORRT", "AOT_TORCHXLA_TRACE_ONCE", "TORCHXLA_TRACE_ONCE", "IPEX", "TVM", "HPU_BACKEND"]
TIMESTEP_SAMPLING = ["sigma", "uniform", "sigmoid", "shift", "flux_shift", "flux2_shift", "ideogram4_shift", "qwen_shift",
                     "krea2_shift", "logsnr", "qinglong_flux", "qinglong_qwen"]
SCHEDULERS = ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
              "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "rex", "piecewise_constant"]
TORCH_OPTIMIZERS = ["Adadelta", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "ASGD", "LBFGS", "NAdam", "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam"]
DIT_KEYS = ["model.diffusion_model.blocks.0.cross_attn.k.weight", "blocks.0.cross_attn.k.weight"]


def _int_or_float(value: str):
    try:
        return int(value)
    except ValueError:
        return float(value)


# (flag, type, default, extra)  — flags that only switch something on are listed in FLAGS below
OPTIONS: list[tuple] = [
    ("--config_file", str, None, {}),
    ("--dataset_config", pathlib.Path, None, {}),
    ("--compile_backend", str, "inductor", {}),
    ("--compile_mode", str, "default", {"choices": ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]}),
    ("--compile_dynamic", str, None, {"choices": ["true", "false", "auto"]}),
    ("--compile_cache_size_limit", int, None, {}),
    ("--dynamo_backend", str, "NO", {"choices": DYNAMO_BACKENDS}),
    ("--dynamo_mode", str, None, {"choices": ["default", "reduce-overhead", "max-autotune"]}),
    ("--max_train_steps", int, 1600, {}),
    ("--max_train_epochs", int, None, {}),
    ("--max_data_loader_n_workers", int, 8, {}),
    ("--seed", int, None, {}),
    ("--gradient_accumulation_steps", int, 1, {}),
    ("--mixed_precision", str, None, {"choices": ["no", "fp16", "bf16"]}),
    ("--save_precision", str, None, {"choices": ["float", "fp32", "fp16", "bf16"]}),
    ("--logging_dir", str, None, {}),
    ("--log_with", str, None, {"choices": ["tensorboard", "wandb", "all"]}),
    ("--log_prefix", str, None, {}),
    ("--log_tracker_name", str, None, {}),
    ("--wandb_run_name", str, None, {}),
    ("--log_tracker_config", str, None, {}),
    ("--wandb_api_key", str, None, {}),
    ("--ddp_timeout", int, None, {}),
    ("--sample_every_n_steps", int, None, {}),
    ("--sample_every_n_epochs", int, None, {}),
    ("--sample_prompts", str, None, {}),
    ("--optimizer_type", str, "", {}),
    ("--optimizer_args", str, None, {"nargs": "*"}),
    ("--learning_rate", float, 2.0e-6, {}),
    ("--max_grad_norm", float, 1.0, {}),
    ("--lr_scheduler", str, "constant", {}),
    ("--lr_warmup_steps", _int_or_float, 0, {}),
    ("--lr_decay_steps", _int_or_float, 0, {}),
    ("--lr_scheduler_num_cycles", int, 1, {}),
    ("--lr_scheduler_power", float, 1, {}),
    ("--lr_scheduler_timescale", int, None, {}),
    ("--lr_scheduler_min_lr_ratio", float, None, {}),
    ("--lr_scheduler_type", str, "", {}),
    ("--lr_scheduler_args", str, None, {"nargs": "*"}),
    ("--blocks_to_swap", int, None, {}),
    ("--block_swap_ring_size", int, 2, {}),
    ("--guidance_scale", float, 1.0, {}),
    ("--timestep_sampling", None, "sigma", {"choices": TIMESTEP_SAMPLING}),
    ("--discrete_flow_shift", float, 1.0, {}),
    ("--sigmoid_scale", float, 1.0, {}),
    ("--weighting_scheme", str, "none", {"choices": ["logit_normal", "mode", "cosmap", "sigma_sqrt", "none"]}),
    ("--logit_mean", float, 0.0, {}),
    ("--logit_std", float, 1.0, {}),
    ("--mode_scale", float, 1.29, {}),
    ("--min_timestep", int, None, {}),
    ("--max_timestep", int, None, {}),
    ("--num_timestep_buckets", int, None, {}),
    ("--show_timesteps", str, None, {"choices": ["image", "console"]}),
    ("--network_weights", str, None, {}),
    ("--network_module", str, None, {}),
    ("--network_dim", int, None, {}),
    ("--network_alpha", float, 1, {}),
    ("--network_dropout", float, None, {}),
    ("--network_args", str, None, {"nargs": "*"}),
    ("--training_comment", str, None, {}),
    ("--scale_weight_norms", float, None, {}),
    ("--base_weights", str, None, {"nargs": "*"}),
    ("--base_weights_multiplier", float, None, {"nargs": "*"}),
    ("--output_dir", str, None, {}),
    ("--output_name", str, None, {}),
    ("--resume", str, None, {}),
    ("--save_every_n_epochs", int, None, {}),
    ("--save_every_n_steps", int, None, {}),
    ("--save_last_n_epochs", int, None, {}),
    ("--save_last_n_epochs_state", int, None, {}),
    ("--save_last_n_steps", int, None, {}),
    ("--save_last_n_steps_state", int, None, {}),
    ("--metadata_title", str, None, {}),
    ("--metadata_author", str, None, {}),
    ("--metadata_description", str, None, {}),
    ("--metadata_license", str, None, {}),
    ("--metadata_tags", str, None, {}),
    ("--metadata_reso", str, None, {}),
    ("--metadata_arch", str, None, {}),
    ("--huggingface_repo_id", str, None, {}),
    ("--huggingface_repo_type", str, None, {}),
    ("--huggingface_path_in_repo", str, None, {}),
    ("--huggingface_token", str, None, {}),
    ("--huggingface_repo_visibility", str, None, {}),
    ("--dit", str, None, {}),
    ("--vae", str, None, {}),
    ("--vae_dtype", str, None, {}),
]
FLAGS = [
    "--sdpa", "--flash_attn", "--sage_attn", "--xformers", "--flash3", "--split_attn", "--compile", "--compile_fullgraph",
    "--cuda_allow_tf32", "--cuda_cudnn_benchmark", "--dynamo_fullgraph", "--dynamo_dynamic", "--persistent_data_loader_workers",
    "--gradient_checkpointing", "--gradient_checkpointing_cpu_offload", "--log_config", "--ddp_gradient_as_bucket_view",
    "--ddp_static_graph", "--sample_at_first", "--fp8_base", "--use_pinned_memory_for_block_swap", "--block_swap_h2d_only",
    "--img_in_txt_in_offloading", "--disable_numpy_memmap", "--preserve_distribution_shape", "--no_metadata",
    "--dim_from_weights", "--save_state", "--save_state_on_train_end", "--save_state_to_huggingface",
    "--resume_from_huggingface", "--async_upload",
]


def setup_parser_common() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for flag, typ, default, extra in OPTIONS:
        kw = dict(default=default, **extra)
        if typ is not None:
            kw["type"] = typ
        parser.add_argument(flag, **kw)
    for flag in FLAGS:
        parser.add_argument(flag, action="store_true")
    return parser


def wan_setup_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--task", type=str, default="t2v-14B", choices=list(lora_wan.TASKS), help="The task to run.")
    for flag in ("--fp8_scaled", "--fp8_t5", "--vae_cache_cpu", "--one_frame", "--force_v2_1_time_embedding", "--offload_inactive_dit"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--t5", type=str, default=None)
    parser.add_argument("--clip", type=str, default=None)
    parser.add_argument("--dit_high_noise", type=str, default=None)
    parser.add_argument("--timestep_boundary", type=int, default=None)
    return parser


def read_config_from_file(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """--config_file: every table of the TOML flattened onto the defaults, then the command line again on top."""
    if not args.config_file:
        return args
    path = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"
    if not os.path.exists(path):
        logger.info(f"{path} not found.")
        sys.exit(1)
    logger.info(f"Loading settings from {path}...")
    with open(path, "rb") as f:
        config = tomllib.load(f)
    flat = {}
    for k, v in config.items():
        flat.update(v if isinstance(v, dict) else {k: v})
    ns = argparse.Namespace(**flat)
    args = parser.parse_args(namespace=ns)
    args.config_file = os.path.splitext(args.config_file)[0]
    return args


# ---------------------------------------------------------------- checks in upstream's order


def detect_dit_dtype(path: str) -> str:
    tensors, _ = read_safetensors_header(path)
    for key in DIT_KEYS:
        if key in tensors:
            return tensors[key]["dtype"]
    raise ValueError(f"Could not find the dtype in the model weights: {path}")


def handle_model_specific_args(args) -> None:
    if not os.path.exists(args.dit):
        raise FileNotFoundError(f"No such file or directory: '{args.dit}'")
    dtype = detect_dit_dtype(args.dit)
    if dtype == "F16":
        assert args.mixed_precision in ["fp16", "no"], "DiT weights are in fp16, mixed precision must be fp16 or no"
    elif dtype == "BF16":
        assert args.mixed_precision in ["bf16", "no"], "DiT weights are in bf16, mixed precision must be bf16 or no"
    if args.fp8_scaled and dtype.startswith("F8"):
        raise ValueError("DiT weights is already in fp8 format, cannot scale to fp8. Please use fp16/bf16 weights")
    if dtype.startswith("F8"):
        dtype = "F16" if args.mixed_precision == "fp16" else "BF16"
    args.dit_dtype = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(dtype, dtype)
    # Wan2.2 high/low training (wan_train_network.py handle_model_specific_args, load_transformer)
    if args.dit_high_noise is not None:
        if args.blocks_to_swap is not None and args.blocks_to_swap > 0:
            assert not args.offload_inactive_dit, "Block swap is not supported with offloading inactive DiT"
        if not os.path.exists(args.dit_high_noise):
            raise FileNotFoundError(f"No such file or directory: '{args.dit_high_noise}'")


def split_weight_filenames(path: str) -> list[str] | None:
    """utils/safetensors_utils.py get_split_weight_filenames: `...-00001-of-00006.safetensors` names every shard,
    all of which must exist."""
    match = re.match(r"^(.*?)(\d+)-of-(\d+)\.safetensors$", os.path.basename(path))
    if not match:
        return None
    prefix, count = os.path.basename(path)[: match.start(2)], int(match.group(3))
    files = [os.path.join(os.path.dirname(path), f"{prefix}{i + 1:05d}-of-{count:05d}.safetensors") for i in range(count)]
    for f in files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"File {f} not found")
    return files


def load_transformer_checks(args) -> None:
    if args.sdpa:
        attn = "torch"
    elif args.flash_attn:
        attn = "flash"
    elif args.sage_attn:
        attn = "sageattn"
    elif args.xformers:
        attn = "xformers"
    elif args.flash3:
        attn = "flash3"
    else:
        raise ValueError("either --sdpa, --flash-attn, --flash3, --sage-attn or --xformers must be specified")
    logger.info(f"Loading DiT model from {args.dit}, attention mode {attn}")
    logger.info(f"Loading model files: {split_weight_filenames(args.dit) or [args.dit]}")
    dim, _ffn, layers, _img = lora_wan.TASKS[args.task]
    tensors, _ = read_safetensors_header(args.dit)
    key = next((k for k in DIT_KEYS if k in tensors), None)
    shape = tensors[key].get("shape") if key else None
    if shape and shape[0] != dim:
        raise RuntimeError(
            f"Error(s) in loading state_dict for WanModel: size mismatch for blocks.0.cross_attn.k.weight: copying a param with "
            f"shape {shape} from checkpoint, the shape in current model is [{dim}, {dim}] (--task {args.task})"
        )
    if args.blocks_to_swap:
        assert args.blocks_to_swap <= layers - 1, f"Cannot swap more than {layers - 1} blocks. Requested {args.blocks_to_swap} blocks to swap."
        logger.info(f"enable swap {args.blocks_to_swap} blocks to CPU from device")


def import_network_module(name: str):
    if name is None:
        raise TypeError("the 'package' argument is required to perform a relative import for None")
    if name in ("networks.lora_wan", "musubi_tuner.networks.lora_wan"):
        return lora_wan
    return importlib.import_module(name)


def optimizer_name(args) -> str:
    t = args.optimizer_type
    low = t.lower()
    if low == "adamw8bit":
        return "bitsandbytes.optim.AdamW8bit"
    if low == "adafactor":
        return "transformers.optimization.Adafactor"
    if low == "adamw":
        return "torch.optim.AdamW"
    if "." in t:
        return t  # upstream imports module.Class; the stand-in has no optimizers to import
    if t not in TORCH_OPTIMIZERS:
        raise AttributeError(f"module 'torch.optim' has no attribute '{t}'")
    return f"torch.optim.{t}"


def scheduler_checks(args, max_train_steps: int, num_processes: int) -> None:
    for arg in args.lr_scheduler_args or []:
        key, value = arg.split("=")
        ast.literal_eval(value)
    if args.lr_scheduler_type:
        return
    warmup = args.lr_warmup_steps
    if isinstance(warmup, float):
        warmup = int(warmup * max_train_steps * num_processes)
    name = args.lr_scheduler
    if name.startswith("adafactor"):
        return
    if name not in SCHEDULERS:
        raise ValueError(f"'{name}' is not a valid SchedulerType")
    if name == "constant" and warmup:
        raise ValueError(f"{name} does not require `num_warmup_steps`. Set None or 0.")


# ---------------------------------------------------------------- saving


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


class Accelerator:
    """What accelerate.Accelerator.save_state writes for a LoRA run: the network's weights, optimizer, scheduler, RNG."""

    def __init__(self, args):
        self.args = args

    def save_state(self, dir_: str) -> None:
        args, tmp = self.args, dir_ + ".tmp"
        _remove(tmp)
        os.makedirs(tmp)
        lora_wan.save_weights(os.path.join(tmp, "model.safetensors"), args.task, args.network_dim or 4, args.network_alpha, None, None)
        with open(os.path.join(tmp, "optimizer.bin"), "wb") as f:
            pickle.dump({"standin": True, "state": {}, "param_groups": [{"lr": args.learning_rate}]}, f)
        with open(os.path.join(tmp, "scheduler.bin"), "wb") as f:
            pickle.dump({"standin": True}, f)
        with open(os.path.join(tmp, "random_states_0.pkl"), "wb") as f:
            pickle.dump({"standin": True, "random_state": random.getstate()}, f)
        _remove(dir_)
        os.replace(tmp, dir_)


class Saver:
    """Upstream's save order (training/trainer_base.py): the LoRA, then its state; every name and state through
    utils/train_utils.py and every LoRA through LoRANetwork.save_weights, looked up at each save as upstream does."""

    def __init__(self, args, metadata: dict):
        self.args, self.metadata = args, metadata
        self.accelerator = Accelerator(args)
        self.network = lora.LoRANetwork(args.task, args.network_dim or 4, args.network_alpha)

    def model(self, name: str, steps: int, epoch: int) -> None:
        args = self.args
        path = os.path.join(args.output_dir, name)  # None output_dir: TypeError like upstream
        os.makedirs(args.output_dir, exist_ok=True)
        print(f"\nsaving checkpoint: {path}", flush=True)
        meta = dict(self.metadata, ss_training_finished_at=str(time.time()), ss_steps=str(steps), ss_epoch=str(epoch))
        if args.no_metadata:
            meta = {k: v for k, v in meta.items() if k in MINIMUM_METADATA}
        h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
        meta.update(sshs_model_hash=h, sshs_legacy_hash=h[:8])
        self.network.save_weights(path, args.save_precision, meta)

    def step(self, step: int, epoch: int) -> None:
        """At a step save upstream passes the 0-based epoch of the loop (the epochs completed) as ss_epoch."""
        a = self.args
        self.model(train_utils.get_step_ckpt_name(a.output_name, step), step, epoch)
        if a.save_state:
            train_utils.save_and_remove_state_stepwise(a, self.accelerator, step)
        if a.save_last_n_steps:
            old = step - a.save_every_n_steps * a.save_last_n_steps
            if old > 0:
                _remove(os.path.join(a.output_dir, train_utils.get_step_ckpt_name(a.output_name, old)))

    def epoch(self, epoch: int, step: int) -> None:
        a = self.args
        self.model(train_utils.get_epoch_ckpt_name(a.output_name, epoch), step, epoch)
        if a.save_last_n_epochs:
            old = epoch - a.save_every_n_epochs * a.save_last_n_epochs
            if old > 0:
                _remove(os.path.join(a.output_dir, train_utils.get_epoch_ckpt_name(a.output_name, old)))
        if a.save_state:
            train_utils.save_and_remove_state_on_epoch_end(a, self.accelerator, epoch)

    def end(self, steps: int, epochs: int) -> None:
        a = self.args
        if a.save_state or a.save_state_on_train_end:
            train_utils.save_state_on_train_end(a, self.accelerator)
        self.model(train_utils.get_last_ckpt_name(a.output_name), steps, epochs)


MINIMUM_METADATA = {"ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "modelspec.sai_model_spec",
                    "modelspec.architecture", "modelspec.implementation", "modelspec.title"}


# ---------------------------------------------------------------- training


def train(args) -> None:
    if args.dataset_config is None:
        raise ValueError("dataset_config is required / dataset_configが必要です")
    if args.dit is None:
        raise ValueError("path to DiT model is required / DiTモデルのパスが必要です")
    assert not args.fp8_scaled or args.fp8_base, "fp8_scaled requires fp8_base / fp8_scaledはfp8_baseが必要です"
    if args.sage_attn:
        raise ValueError("SageAttention doesn't support training currently. Please use `--sdpa` or `--xformers` etc. instead.")
    handle_model_specific_args(args)
    if args.show_timesteps:
        return

    session_id = random.randint(0, 2**32)
    started = time.time()
    if args.seed is None:
        args.seed = random.randint(0, 2**32)
    random.seed(args.seed)

    logger.info(f"Load dataset config from {args.dataset_config}")
    datasets = config_utils.generate(config_utils.load_user_config(args.dataset_config), args)
    per_dataset = [items.training_items(p) for p in datasets]
    num_items = sum(len(x) for x in per_dataset)
    if num_items == 0:
        raise ValueError(
            "No training items found in the dataset. Please ensure that the latent/Text Encoder cache has been created beforehand."
        )
    batches = sum(items.num_batches(p, x) for p, x in zip(datasets, per_dataset))

    logger.info("preparing accelerator")
    num_processes = int(os.environ.get("WORLD_SIZE", "1"))
    log_with, log_dir = args.log_with, None
    # accelerate's is_main_process (PartialState.process_index == 0, from RANK): only it logs and saves (trainer_base.py)
    is_main_process = int(os.environ.get("RANK", "0")) == 0
    if not is_main_process:
        print(f"STAND-IN: process rank {os.environ['RANK']} of {num_processes}: not the main process, it saves and logs nothing", flush=True)
    if args.logging_dir is not None:
        log_with = log_with or "tensorboard"
        log_dir = os.path.join(args.logging_dir, (args.log_prefix or "") + time.strftime("%Y%m%d%H%M%S", time.localtime()))
        if is_main_process:
            os.makedirs(log_dir, exist_ok=True)
    elif log_with in ("tensorboard", "all"):
        raise ValueError("logging_dir is required when log_with is tensorboard / Tensorboardを使う場合、logging_dirを指定してください")
    if args.mixed_precision is None:
        args.mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")

    load_transformer_checks(args)
    network_module = import_network_module(args.network_module)
    logger.info(f"import network module: {network_module.__name__}")
    opt = optimizer_name(args)
    logger.info(f"use {opt} optimizer | {args.optimizer_args or []}")
    accelerator_print("prepare optimizer, data loader etc.")

    updates_per_epoch = math.ceil(batches / num_processes / args.gradient_accumulation_steps)
    if args.max_train_epochs is not None:
        args.max_train_steps = args.max_train_epochs * updates_per_epoch
        accelerator_print(f"override steps. steps for {args.max_train_epochs} epochs is / 指定エポックまでのステップ数: {args.max_train_steps}")
    scheduler_checks(args, args.max_train_steps, num_processes)
    if args.resume:
        for f in ("model.safetensors", "optimizer.bin", "scheduler.bin"):
            if not os.path.isfile(os.path.join(args.resume, f)):
                raise FileNotFoundError(f"[Errno 2] No such file or directory: '{os.path.join(args.resume, f)}'")
        logger.info(f"resume training from local state: {args.resume}")
        # like upstream: weights, optimizer, scheduler and RNG come back, the epoch and step counters start at 0 again

    num_update_steps_per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
    num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    accelerator_print("running training / 学習開始")
    accelerator_print(f"  num train items / 学習画像、動画数: {num_items}")
    accelerator_print(f"  num batches per epoch / 1epochのバッチ数: {batches}")
    accelerator_print(f"  num epochs / epoch数: {num_train_epochs}")
    accelerator_print(f"  gradient accumulation steps / 勾配を合計するステップ数 = {args.gradient_accumulation_steps}")
    accelerator_print(f"  total optimization steps / 学習ステップ数: {args.max_train_steps}")

    metadata = {
        "ss_session_id": str(session_id), "ss_training_started_at": str(started), "ss_output_name": str(args.output_name),
        "ss_learning_rate": str(args.learning_rate), "ss_num_train_items": str(num_items), "ss_num_batches_per_epoch": str(batches),
        "ss_num_epochs": str(num_train_epochs), "ss_gradient_checkpointing": str(args.gradient_checkpointing),
        "ss_gradient_accumulation_steps": str(args.gradient_accumulation_steps), "ss_max_train_steps": str(args.max_train_steps),
        "ss_lr_warmup_steps": str(args.lr_warmup_steps), "ss_lr_scheduler": args.lr_scheduler,
        "ss_network_module": str(args.network_module), "ss_network_dim": str(args.network_dim or 4),
        "ss_network_alpha": str(args.network_alpha), "ss_network_dropout": str(args.network_dropout),
        "ss_network_args": json.dumps(args.network_args or []), "ss_mixed_precision": str(args.mixed_precision),
        "ss_seed": str(args.seed), "ss_training_comment": str(args.training_comment), "ss_optimizer": opt,
        "ss_max_grad_norm": str(args.max_grad_norm), "ss_fp8_base": str(args.fp8_base), "ss_fp8_scaled": str(args.fp8_scaled),
        "ss_timestep_sampling": args.timestep_sampling, "ss_discrete_flow_shift": str(args.discrete_flow_shift),
        "ss_dit": os.path.basename(args.dit), "ss_vae": os.path.basename(args.vae) if args.vae else "None",
        "ss_task": args.task, "ss_datasets": json.dumps([{"num_repeats": p.num_repeats, "batch_size": p.batch_size,
                                                            "resolution": list(p.resolution), "is_video": p.is_video} for p in datasets]),
        "modelspec.sai_model_spec": "1.0.1", "modelspec.architecture": f"wan2.1/{args.task}/lora",
        "modelspec.implementation": "https://github.com/Wan-Video/Wan2.1", "modelspec.title": str(args.metadata_title or args.output_name),
        "standin": "runner CI test double: zeros, shapes [rank, rank] unless STANDIN_FULL_SHAPES=1",
    }
    saver = Saver(args, metadata)
    on_sigterm(lambda: print("STAND-IN: SIGTERM during training, nothing half-written", flush=True))
    progress = Progress(args.max_train_steps, "steps")
    # accelerate's TensorBoardTracker: SummaryWriter(<log_dir>/<tracker name>), scalars per optimizer step and per epoch
    tracker = EventWriter(os.path.join(log_dir, args.log_tracker_name or "network_train")) if log_with in ("tensorboard", "all") and is_main_process else None
    global_step, losses = 0, []
    micro = 0
    for epoch in range(num_train_epochs):
        accelerator_print(f"\nepoch {epoch + 1}/{num_train_epochs}")
        for b in range(batches):
            micro += 1
            last_of_epoch = b == batches - 1
            if micro % args.gradient_accumulation_steps and not last_of_epoch:
                continue
            micro = 0
            global_step += 1
            loss = step_knobs(global_step)
            losses.append(loss)
            avr = sum(losses) / len(losses)
            progress.update(1, avr_loss=f"{avr:.3g}")
            if tracker:
                for tag, value in (("loss/current", loss), ("loss/average", avr), ("lr/unet", args.learning_rate)):
                    tracker.add_scalar(tag, value, global_step)
            if args.save_every_n_steps is not None and global_step % args.save_every_n_steps == 0 and is_main_process:
                saver.step(global_step, epoch)
            if global_step >= args.max_train_steps:
                break
        if tracker:
            tracker.add_scalar("loss/epoch", avr, epoch + 1)
        saving = args.save_every_n_epochs is not None and (epoch + 1) % args.save_every_n_epochs == 0 and (epoch + 1) < num_train_epochs
        if is_main_process and saving:
            saver.epoch(epoch + 1, global_step)
        if global_step >= args.max_train_steps:
            break

    if is_main_process:
        saver.end(global_step, num_train_epochs)
        logger.info("model saved.")


def accelerator_print(msg: str) -> None:
    print(msg, flush=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = wan_setup_parser(setup_parser_common())
    args = parser.parse_args()
    args = read_config_from_file(args, parser)
    banner("musubi-tuner wan_train_network")
    args.dit_dtype = None
    if args.vae_dtype is None:
        args.vae_dtype = "bfloat16"
    # upstream appends the package folder to sys.path so `--network_module networks.lora_wan` imports
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    train(args)


if __name__ == "__main__":
    main()
