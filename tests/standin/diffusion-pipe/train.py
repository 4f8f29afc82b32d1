"""STAND-IN for diffusion-pipe's train.py at 8f83dbf (runner's CI test double, no GPU, no model math).

Honours, for `[model] type = "wan"`: both TOMLs read with toml 0.10.2 as upstream does, upstream's flags (plus deepspeed's --deepspeed/--deepspeed_config/
--deepscale/--deepscale_config and the launcher's --local_rank), the main TOML rules (output_dir, dataset, epochs,
one save cadence asserted; [adapter] alpha -> NotImplementedError; activation_checkpointing, video_clip_mode,
lr_scheduler, save_dtype values; blocks_to_swap <= blocks-2 with pipeline_stages 1), the Wan model folder checks
(config.json, Wan2.1_VAE.pth, google/umt5-xxl, T5 file, and for Wan2.1 I2V the CLIP .pth + xlm-roberta-large;
variant detection; fp8_scaled transformer files rejected), the dataset rules in utils/dataset.py, MASTER_PORT from
--master_port, the run folder `output_dir/<UTC %Y%m%d_%H-%M-%S>/` with copies of both TOMLs, adapter saves
`epochN/`/`stepN/`, DeepSpeed checkpoints `global_stepN/` + `latest`, the `save`/`save_quit` signal files,
--resume_from_checkpoint, --cache_only, and "TRAINING COMPLETE!". Weights are zeros.
Knobs: STANDIN_STEP_SECONDS, STANDIN_FAIL_AT_STEP, STANDIN_NAN_AT_STEP, STANDIN_NAN_FROM_STEP, STANDIN_HANG_AT_STEP,
STANDIN_OOM_IN, STANDIN_LOG_LINE (utils/standin_kit.py). STANDIN_OOM_IN=cache-latents|cache-text-encoder hangs after the traceback like upstream, whose
caching runs in a non-daemon process the interpreter waits for; =train exits 1 (no hang seen there).
Python: upstream needs 3.12 (sqlite3.connect(autocommit=...)); this stand-in runs on 3.11 and cannot enforce it.
"""

import argparse
import glob
import json
import os
import pickle
import shutil
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import toml

from utils import dataset as dataset_util
from utils.standin_kit import EventWriter, banner, on_sigterm, read_safetensors_header, step_knobs, write_safetensors

parser = argparse.ArgumentParser()
parser.add_argument("--config", help="Path to TOML configuration file.")
parser.add_argument("--local_rank", type=int, default=-1, help="local rank passed from distributed launcher")
parser.add_argument("--resume_from_checkpoint", nargs="?", const=True, default=None, help="resume training from checkpoint")
parser.add_argument("--reset_dataloader", action="store_true")
parser.add_argument("--reset_optimizer", action="store_true")
parser.add_argument("--reset_optimizer_params", action="store_true")
parser.add_argument("--regenerate_cache", action="store_true", help="Force regenerate cache.")
parser.add_argument("--cache_only", action="store_true", help="Cache model inputs then exit.")
parser.add_argument("--trust_cache", action="store_true", help="Load from metadata cache files if they exist.")
parser.add_argument("--i_know_what_i_am_doing", action="store_true")
parser.add_argument("--master_port", type=int, default=29500, help="Master port for distributed training")
parser.add_argument("--dump_dataset", type=Path, default=None)
parser.add_argument("--test_sample", action="store_true")
group = parser.add_argument_group("DeepSpeed", "DeepSpeed configurations")
group.add_argument("--deepspeed", default=False, action="store_true", help="Enable DeepSpeed")
group.add_argument("--deepspeed_config", default=None, type=str, help="DeepSpeed json configuration file.")
group.add_argument("--deepscale", default=False, action="store_true", help="Deprecated enable DeepSpeed")
group.add_argument("--deepscale_config", default=None, type=str, help="Deprecated DeepSpeed json configuration file.")

DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float8": "F8_E4M3", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}
# model name -> (has image cross-attention)
VARIANTS = {"wan": False, "wan_i2v": True, "wan_flf2v": True, "wan2.2_i2v": False, "wan2.2_5b": False, "skyreels_v2": False, "skyreels_v2_i2v": True}
CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
KNOWN_OPTIMIZERS = {"adamw", "adamw8bit", "adamw_optimi", "stableadamw", "sgd", "adamw8bitkahan", "offload", "automagic", "genericoptim"}


def set_config_defaults(config: dict) -> None:
    assert "save_every_n_epochs" in config or "save_every_n_steps" in config or "save_every_n_examples" in config
    config.setdefault("pipeline_stages", 1)
    config.setdefault("activation_checkpointing", False)
    config.setdefault("warmup_steps", 0)
    config.setdefault("micro_batch_size_per_gpu", 1)
    config.setdefault("gradient_accumulation_steps", 1)
    config.setdefault("gradient_clipping", 1.0)
    config.setdefault("caching_batch_size", 1)
    config.setdefault("logging_steps", 1)
    config.setdefault("blocks_to_swap", 0)
    model = config["model"]
    DTYPES[model["dtype"]]  # KeyError on an unknown dtype, like upstream's DTYPE_MAP
    for key in ("transformer_dtype", "diffusion_model_dtype"):
        if key in model:
            DTYPES[model[key]]
    if "adapter" in config:
        adapter = config["adapter"]
        if "alpha" in adapter:
            raise NotImplementedError(
                "This script forces alpha=rank to make the saved adapter format simpler and more predictable with downstream"
                " inference programs. Please remove alpha from the config."
            )
        adapter["alpha"] = adapter["rank"]
        adapter.setdefault("dtype", model["dtype"])
        DTYPES[adapter["dtype"]]
        if adapter["type"] not in ("lora", "lokr"):
            raise NotImplementedError(f"Adapter type {adapter['type']} is not implemented")
    if "save_dtype" in config:
        DTYPES[config["save_dtype"]]


def wan_model(config: dict) -> dict:
    """Check the Wan model files the way models/wan/wan.py loads them; returns name, layers, framerate, rounding."""
    m = config["model"]
    ckpt = Path(m["ckpt_path"])
    tpath = Path(m["transformer_path"]) if m.get("transformer_path") else None
    if tpath is not None and tpath.is_dir():
        config_file = tpath / "config.json"
    elif (ckpt / "config.json").exists():
        config_file = ckpt / "config.json"
    else:
        config_file = ckpt / "low_noise_model" / "config.json"
    with open(config_file) as f:
        cfg = json.load(f)
    keys: dict = {}
    if tpath is not None and tpath.is_file():
        keys, _ = read_safetensors_header(tpath)
        if any(k.endswith("scale_weight") or k.endswith("scale_input") for k in keys):
            raise ValueError("fp8_scaled weights are not supported. Please use non-scaled fp8 or bf16 weights.")
        keys = {k.removeprefix("model.diffusion_model."): v for k, v in keys.items()}
    elif tpath is None and not glob.glob(str(ckpt / "*.safetensors")):
        raise FileNotFoundError(f"no transformer_path and no *.safetensors transformer shards in {ckpt}")
    model_type, dim = cfg.get("model_type"), cfg.get("dim")
    name, fps, round_to = None, 16, 16
    if model_type == "t2v" and dim in (1536, 5120):
        name = "wan"
    elif model_type == "i2v":
        name = "wan_i2v" if "blocks.0.cross_attn.k_img.weight" in keys else "wan2.2_i2v"
    elif model_type == "flf2v" and dim == 5120:
        name = "wan_flf2v"
    elif model_type == "ti2v" and dim == 3072:
        name, fps, round_to = "wan2.2_5b", 24, 32
    if name is None:
        raise RuntimeError(f"Could not autodetect model variant from {config_file}")
    if "skyreels" in ckpt.name.lower():
        name, fps = ("skyreels_v2_i2v" if VARIANTS[name] else "skyreels_v2"), 24
    layers = cfg.get("num_layers") or {1536: 30, 5120: 40, 3072: 30}.get(dim, 40)
    vae = "Wan2.2_VAE.pth" if name == "wan2.2_5b" else "Wan2.1_VAE.pth"
    needed = [ckpt / vae, ckpt / "google" / "umt5-xxl", Path(m.get("llm_path") or ckpt / "models_t5_umt5-xxl-enc-bf16.pth")]
    if VARIANTS[name]:
        needed += [ckpt / CLIP, ckpt / "xlm-roberta-large"]
    for p in needed:
        if not p.exists():
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{p}'")
    method = m.get("timestep_sample_method", "logit_normal")
    if method not in ("logit_normal", "uniform"):
        raise NotImplementedError(f"timestep_sample_method {method} is not implemented")
    print(f"Wan model variant: {name} ({layers} blocks, {fps} fps)")
    return {"name": name, "layers": layers, "dim": dim or 5120, "framerate": fps, "round_to": round_to, "image_attn": VARIANTS[name]}


def lora_targets(model: dict) -> list[str]:
    names = []
    for i in range(model["layers"]):
        for attn in ("self_attn", "cross_attn"):
            extra = ["k_img", "v_img"] if attn == "cross_attn" and model["image_attn"] else []
            names += [f"blocks.{i}.{attn}.{n}" for n in ["q", "k", "v", "o"] + extra]
        names += [f"blocks.{i}.ffn.0", f"blocks.{i}.ffn.2"]
    return names


class Saver:
    def __init__(self, args, config: dict, run_dir: Path, model: dict):
        self.args, self.config, self.run_dir, self.model = args, config, run_dir, model
        self.last_checkpoint_time = None

    def save_model(self, name: str) -> None:
        print(f"Saving model to directory {name}")
        adapter = self.config["adapter"]
        rank = adapter["rank"]
        dtype = DTYPES[self.config.get("save_dtype", adapter["dtype"])]
        full = os.environ.get("STANDIN_FULL_SHAPES") == "1"
        dim = self.model["dim"]
        ffn = {1536: 8960, 5120: 13824, 3072: 14336}.get(dim, 4 * dim)
        tensors = {}
        for t in lora_targets(self.model):
            fin = ffn if t.endswith("ffn.2") else dim
            fout = ffn if t.endswith("ffn.0") else dim
            tensors[f"diffusion_model.{t}.lora_A.weight"] = (dtype, [rank, fin if full else rank])
            tensors[f"diffusion_model.{t}.lora_B.weight"] = (dtype, [fout if full else rank, rank])
        out = self.run_dir / name
        tmp = out / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        write_safetensors(out / "adapter_model.safetensors", tensors, {"format": "pt"})
        peft = {
            "peft_type": "LORA", "r": rank, "lora_alpha": adapter["alpha"], "lora_dropout": adapter.get("dropout", 0.0),
            "target_modules": sorted({t.split(".", 2)[2] for t in lora_targets(self.model)}), "bias": "none",
            "fan_in_fan_out": False, "init_lora_weights": True, "inference_mode": True, "modules_to_save": None,
            "task_type": None, "base_model_name_or_path": None, "standin": "runner CI test double: zero weights",
        }
        (out / "adapter_config.json").write_text(json.dumps(peft, indent=2))
        shutil.copy(self.args.config, out)
        shutil.rmtree(tmp)

    def save_checkpoint(self, step: int, examples: int, epoch: int) -> None:
        tag = f"global_step{step}"
        d = self.run_dir / tag
        d.mkdir(parents=True, exist_ok=True)
        client_state = {"step": step, "examples": examples, "custom_loader": {"epoch": epoch, "step": step}}
        _torch_like_save(d / "mp_rank_00_model_states.pt", {"client_state": client_state, "global_steps": step, "standin": True})
        for i in range(self.model["layers"] + 2):
            _torch_like_save(d / f"layer_{i:02d}-model_states.pt", {"layer": i, "standin": True})
        (self.run_dir / "latest").write_text(tag)
        print(f"[Rank 0] Saved checkpoint {d}")

    def need_to_checkpoint(self, epoch=None) -> bool:
        if epoch is not None:
            n = self.config.get("checkpoint_every_n_epochs")
            if n and epoch % n == 0:
                self.last_checkpoint_time = time.time()
                return True
            return False
        minutes = self.config.get("checkpoint_every_n_minutes")
        if minutes is None:
            return False
        now = time.time()
        if self.last_checkpoint_time is None:
            self.last_checkpoint_time = now
        elif (now - self.last_checkpoint_time) / 60 > minutes:
            self.last_checkpoint_time = now
            return True
        return False

    def process_epoch(self, epoch: int, new_epoch: int, step: int, examples: int):
        checkpointed = saved = False
        if new_epoch != epoch:
            if self.need_to_checkpoint(epoch):
                self.save_checkpoint(step, examples, new_epoch)
                checkpointed = True
            n = self.config.get("save_every_n_epochs")
            if n and epoch % n == 0:
                self.save_model(f"epoch{epoch}")
                saved = True
            if new_epoch > self.config["epochs"]:
                return None, checkpointed, saved
            print(f"Started new epoch: {new_epoch}")
        return new_epoch, checkpointed, saved

    def process_step(self, step: int, examples: int, epoch: int):
        checkpointed = saved = False
        manual_save = manual_quit = False
        save, save_quit = self.run_dir / "save", self.run_dir / "save_quit"
        if save.is_file():
            manual_save = True
            os.remove(save)
        elif save_quit.is_file():
            manual_save = manual_quit = True
            os.remove(save_quit)
        n = self.config.get("save_every_n_steps")
        if n and step % n == 0:
            self.save_model(f"step{step}")
            saved = True
        if self.need_to_checkpoint() or manual_save:
            self.save_checkpoint(step, examples, epoch)
            checkpointed = True
        if manual_quit:
            print("Manually quitting")
            sys.exit()
        return checkpointed, saved


def _torch_like_save(path: Path, obj: dict) -> None:
    """A tiny zip with archive/data.pkl, the container layout of torch.save (no tensors inside)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("archive/version", "3\n")


def _load_client_state(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return pickle.loads(z.read("archive/data.pkl"))["client_state"]


def main() -> None:
    args = parser.parse_args()
    banner("diffusion-pipe")
    with open(args.config) as f:
        # upstream parses with toml 0.10.2 (which rejects arrays mixing integers and arrays) and round-trips through JSON
        config = json.loads(json.dumps(toml.load(f)))
    set_config_defaults(config)

    resume_from_checkpoint = args.resume_from_checkpoint if args.resume_from_checkpoint is not None else config.get("resume_from_checkpoint", False)
    os.environ["MASTER_ADDR"] = os.environ.get("MASTER_ADDR", "localhost")
    os.environ["MASTER_PORT"] = str(args.master_port)
    print(f"MASTER_PORT={os.environ['MASTER_PORT']} (--master_port), local_rank={args.local_rank}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))

    model_type = config["model"]["type"]
    if model_type != "wan":
        raise NotImplementedError(f"Model type {model_type} is not implemented (STAND-IN: only wan)")
    model = wan_model(config)

    blocks_to_swap = config["blocks_to_swap"]
    if blocks_to_swap > 0:
        assert config["pipeline_stages"] == 1, "Block swapping only works with pipeline_stages=1"
        assert "adapter" in config, "Block swapping only works when training LoRA"
        assert blocks_to_swap <= model["layers"] - 2, f"Cannot swap more than {model['layers'] - 2} blocks"
    ac = config["activation_checkpointing"]
    if ac not in (True, False, "unsloth"):
        raise NotImplementedError(f"activation_checkpointing={ac} is not implemented")
    clip_mode = config.get("video_clip_mode", "single_beginning")
    if clip_mode not in ("single_beginning", "single_middle"):
        raise NotImplementedError(f"video_clip_mode={clip_mode} is not implemented")

    with open(config["dataset"]) as f:
        dataset_config = toml.load(f)
    dp = world_size // config["pipeline_stages"]
    global_batch = config["micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * dp
    items = dataset_util.build(dataset_config, model["name"], model["framerate"], model["round_to"], global_batch, args, model["image_attn"])
    if args.cache_only:
        sys.exit(0)  # upstream: quit() after caching

    opt_type = config["optimizer"]["type"]
    if opt_type.lower() not in KNOWN_OPTIMIZERS:
        print(f"STAND-IN: optimizer {opt_type} is taken from pytorch_optimizer upstream; not checked here")
    scheduler = config.get("lr_scheduler", "constant")
    if scheduler not in ("constant", "linear", "cosine"):
        raise NotImplementedError(f"Unknown lr_scheduler: {scheduler}")

    examples_per_epoch = sum(it.repeats for it in items)
    steps_per_epoch = max(1, examples_per_epoch // global_batch)
    print(f"Global batch size = {global_batch}")
    if "save_every_n_examples" in config and "save_every_n_steps" not in config:
        config["save_every_n_steps"] = max(1, config["save_every_n_examples"] // global_batch)
        print(f"Computed save_every_n_steps = {config['save_every_n_steps']}")

    output_dir = Path(config["output_dir"])
    if resume_from_checkpoint is True:
        run_dir = Path(sorted(glob.glob(str(output_dir / "*")))[-1])
    elif resume_from_checkpoint:
        run_dir = output_dir / resume_from_checkpoint
    else:
        run_dir = output_dir / datetime.now(timezone.utc).strftime("%Y%m%d_%H-%M-%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume_from_checkpoint:
        shutil.copy(args.config, run_dir)
        shutil.copy(config["dataset"], run_dir)
    print(f"Run directory: {run_dir}")

    saver = Saver(args, config, run_dir, model)
    tb_writer = EventWriter(run_dir)  # upstream: SummaryWriter(log_dir=run_dir), a resumed run adds a file beside
    step, epoch, examples = 1, 1, global_batch
    if resume_from_checkpoint:
        latest = run_dir / "latest"
        load_path = run_dir / latest.read_text().strip() if latest.is_file() else None
        assert load_path is not None
        client_state = _load_client_state(load_path / "mp_rank_00_model_states.pt")
        step = client_state["step"] + 1
        examples = client_state["examples"] + global_batch
        epoch = client_state["custom_loader"]["epoch"]
        print(f"Resuming training from checkpoint. Resuming at epoch: {epoch}, step: {step}")

    on_sigterm(lambda: print("STAND-IN: SIGTERM during training, nothing half-written", flush=True))
    saver.need_to_checkpoint()  # starts the minutes timer like upstream's first call
    final_model_name = None
    checkpointed = saved = False
    epoch_loss, num_steps = 0.0, 0
    while True:
        t0 = time.monotonic()
        loss = step_knobs(step)
        dt = max(time.monotonic() - t0, 1e-6)
        print(f"steps: {step} loss: {loss:.4f} iter time (s): {dt:.3f} samples/sec: {global_batch / dt:.3f}", flush=True)
        epoch_loss, num_steps = epoch_loss + loss, num_steps + 1
        new_epoch = epoch + 1 if step % steps_per_epoch == 0 else epoch
        new_epoch, checkpointed, saved = saver.process_epoch(epoch, new_epoch, step, examples)
        if step % config["logging_steps"] == 0:
            tb_writer.add_scalar("train/loss", loss, examples if config.get("x_axis_examples") else step)
        if new_epoch != epoch:
            tb_writer.add_scalar("train/epoch_loss", epoch_loss / num_steps, epoch)
            epoch_loss, num_steps = 0.0, 0
            if new_epoch is None:
                final_model_name = f"epoch{epoch}"
                break
            epoch = new_epoch
        checkpointed, saved = saver.process_step(step, examples, epoch)
        if "max_steps" in config and step >= config["max_steps"]:
            final_model_name = f"step{step}"
            break
        step += 1
        examples += global_batch

    if not checkpointed:
        saver.save_checkpoint(step, examples, epoch)
    if not saved:
        saver.save_model(final_model_name)
    print("TRAINING COMPLETE!")


if __name__ == "__main__":
    main()
