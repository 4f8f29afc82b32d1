#!/usr/bin/env python3
"""runner's renders checked against the trainers' OWN code at the pins (issue 9).

    python bench/upstream_contract.py --musubi SRC --diffpipe SRC [--python VENV/bin/python]

Renders every examples/*.yaml (as written and switched to the other trainer), a matrix of jobs (both trainers
x T2V/I2V x image/video/mixed data x one/two datasets x gpus 1/2 x memory as written and `memory: auto` at
8/12/16/24/48 GiB) and one job per optimizer name runner uses, with runner's own `render` (this interpreter,
runner's venv); jobs that runner's validate or planner refuses are counted by reason. Then, in the
upstream venv (--python: torch, accelerate 1.6.0, toml 0.10.2, voluptuous... see bench/README.md), each render
goes through upstream's code:
- musubi-tuner: each step's argparse parser built by the script's own setup functions (as its main() does),
  accelerate 1.6.0's launch parser and launch validation, accelerate's config loader for /job/accelerate.yaml,
  the dataset schema (ConfigSanitizer + BlueprintGenerator), the optimizer and LR scheduler built by
  WanNetworkTrainer on a dummy parameter, and the LoRA save dtype (train_utils.resolve_save_dtype); the sample
  prompt file through training/sampling_prompts.load_prompts (each line's size, frames, seed, steps, CFG scale);
  `runner sample` plans (a musubi and a diffusion-pipe LoRA) through wan_generate_video.parse_args and
  convert_lora.parse_args, their values against the job's samples: section.
- diffusion-pipe: toml 0.10.2 on both TOMLs; the keys train.py, models/base.py (Wan's base classes),
  models/wan/wan.py, utils/{dataset,saver,common}.py read, extracted by AST; its asserts on key presence; the
  values it maps or compares (DTYPE_MAP, ==/in literals); the optimizer class its dispatch picks, built.
Upstream source is never imported from this repository: pass the exported trees.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MUSUBI_PIN = "30c658c4f4b0bf05038b3346eff9670259b10fc7"
DIFFPIPE_PIN = "8f83dbf25d03219df705570ec03e62be04bc402f"
DEFAULT_PYTHON = "/work/venvs/contract/bin/python"
TASKS = {"T2V": "t2v-1.3B", "I2V": "i2v-14B-480P", "A14B-T2V": "t2v-A14B", "A14B-I2V": "i2v-A14B", "TI2V-5B": "ti2v-5B",
         "FLF2V": "flf2v-14B"}
KINDS = ("image", "video", "mixed")
VRAMS = (8, 12, 16, 24, 48)
RAM_GIB = 64
# what each matrix job writes under memory when it is not `auto` (the I2V 14B one as in examples/)
MEMORY_AS_WRITTEN = {"T2V": {}, "I2V": {"transformer_dtype": "float8", "blocks_to_swap": 20}, "TI2V-5B": {},
                     "FLF2V": {"transformer_dtype": "float8", "blocks_to_swap": 20}}
# the A14B jobs train both experts (musubi's high/low flags, diffusion-pipe's two runs) from the fp16 ComfyUI files
A14B = {"expert": "both"}
A14B_MEMORY = {"dtype": "float16", "transformer_dtype": "float8"}
FRAMES = {"image": None, "video": [33], "mixed": [1, 33]}
SCHEDULE = {"epochs": 8, "save_every_epochs": 2, "checkpoint_every_epochs": 2, "warmup_steps": 10}  # state with each LoRA: musubi can do no other
OTHER_TRAINER = {"diffpipe": "musubi", "musubi": "diffpipe"}
SECOND_RESOLUTIONS = [512, [624, 624]]  # an area and a [w, h] pair in one list, as a user may write it
# samples: on every T2V job (I2V refuses prompts), no value at its default, so a swapped or dropped flag shows
SAMPLES = {"prompts": ["a red ball bouncing on grass", "a blue ball, slowly rolling"], "width": 624, "height": 352, "frames": 17,
           "steps": 8, "guidance": 6.5, "seed": 7}
GPU_LAYOUTS = {"ids0-2": {"gpus": [0, 2]}, "id3": {"gpus": [3]}, "4gpu-2stages": {"gpus": 4, "pipeline_stages": 2}}
MULTINODE = 2  # musubi jobs also rendered for this many machines (runner.job.render.trainer_plan nodes=)
# the saved LoRAs a `runner sample` plan is rendered for: where each trainer saves epoch 2 (relative to the job's output)
SAVED_EPOCH_2 = {"musubi": "{name}-000002.safetensors", "diffpipe": "20260101_00-00-00/epoch2/adapter_model.safetensors"}


# ---------------------------------------------------------------- phase 1: render (runner's venv)


def data_folders(work: Path) -> dict[str, Path]:
    """Image-only, video-only and mixed folders (two of each) made from the example media."""
    src = REPO / "examples" / "data"
    out = {}
    for n in ("", "2"):
        out["video" + n] = _copy(src / "clips", work / "data" / f"video{n}", lambda p: True)
        out["mixed" + n] = _copy(src / "mixed", work / "data" / f"mixed{n}", lambda p: True)
        out["image" + n] = _copy(src / "mixed", work / "data" / f"image{n}", lambda p: p.stem.startswith("still"))
    return out


def _copy(src: Path, dst: Path, keep) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if keep(f):
            shutil.copy2(f, dst / f.name)
    return dst


def matrix(work: Path) -> list[tuple[str, dict, float | None]]:
    data = data_folders(work)
    (work / "models").mkdir(exist_ok=True)
    jobs = []
    axes = itertools.product(("diffpipe", "musubi"), TASKS, KINDS, (1, 2), (1, 2), ("written",) + VRAMS)
    for trainer, tv, kind, nds, gpus, mem in axes:
        name = f"{trainer}-{tv.lower()}-{kind}-{nds}ds-{gpus}gpu-" + (f"auto{mem}" if mem != "written" else "written")
        datasets = [{"path": str(data[kind]), "kind": kind, "resolutions": [[832, 480]]}]
        if nds == 2:
            datasets.append({"path": str(data[kind + "2"]), "kind": kind, "resolutions": SECOND_RESOLUTIONS, "repeats": 2})
        for d in datasets:
            if FRAMES[kind]:
                d["frames"] = FRAMES[kind]
        job = {
            "name": name,
            "trainer": trainer,
            "task": TASKS[tv],
            "models": {"root": str(work / "models"), "preset": TASKS[tv]},
            "datasets": datasets,
            "lora": {"rank": 16},
            "schedule": SCHEDULE,
            "memory": ("auto" if mem != "written" else MEMORY_AS_WRITTEN[tv]) if not tv.startswith("A14B") else
                      ({**A14B_MEMORY, "auto": True} if mem != "written" else A14B_MEMORY),
            "gpus": gpus,
            "output": str(work / "outputs"),
            "cache": str(work / "cache"),
            "hf_cache": str(work / "hf"),
        }
        if tv == "T2V":
            job["samples"] = SAMPLES
        if tv.startswith("A14B"):
            job.update(A14B)
        jobs.append((name, job, None if mem == "written" else float(mem)))
    base = next(job for name, job, _ in jobs if name == "diffpipe-t2v-video-1ds-1gpu-written")
    for trainer, opt in itertools.product(("diffpipe", "musubi"), optimizer_names()):
        name = f"{trainer}-t2v-video-optimizer-{opt}"
        jobs.append((name, {**base, "name": name, "trainer": trainer, "optimizer": {"type": opt}}, None))
    # device ids (accelerate's gpu_ids, deepspeed's --include) and diffusion-pipe's pipeline stages
    for trainer, (label, layout) in itertools.product(("diffpipe", "musubi"), GPU_LAYOUTS.items()):
        if "pipeline_stages" in layout and trainer == "musubi":
            continue
        for mem in ("written", 24):
            name = f"{trainer}-t2v-video-{label}-" + (f"auto{mem}" if mem != "written" else "written")
            jobs.append((name, {**base, **layout, "name": name, "trainer": trainer, "memory": "auto" if mem != "written" else {}},
                         None if mem == "written" else float(mem)))
    return jobs


def optimizer_names() -> list[str]:
    """Every optimizer name runner writes or shows a user: both trainers' defaults, the planner's 8-bit picks,
    and the examples'. Each goes to both trainers, as a job switched with `trainer:` would."""
    import yaml

    from runner.trainers import diffpipe, musubi
    from runner.gpu.planner import OPTIMIZER_8BIT

    names = {diffpipe.DEFAULT_OPTIMIZER, musubi.DEFAULT_OPTIMIZER, *OPTIMIZER_8BIT.values()}
    for f in (REPO / "examples").glob("*.yaml"):
        names.add((yaml.safe_load(f.read_text()).get("optimizer") or {}).get("type"))
    return sorted(n for n in names if n)


def render_all(work: Path) -> tuple[list[dict], list[tuple[str, list[str]]]]:
    import yaml

    from runner.job import render
    from runner.errors import JobInvalid, UserError

    rendered, skipped = [], []
    (work / "jobs").mkdir(parents=True, exist_ok=True)
    todo = []
    for f in sorted((REPO / "examples").glob("*.yaml")):
        todo.append((f"example:{f.stem}", f, 24.0))
        # the README's promise: change `trainer:` and the same job runs on the other trainer
        job = yaml.safe_load(f.read_text())
        job["trainer"] = OTHER_TRAINER[job["trainer"]]
        job["models"]["root"] = str(work / "models")
        job["datasets"] = [{**d, "path": str((f.parent / d["path"]).resolve())} for d in job["datasets"]]
        switched = work / "jobs" / f"{f.stem}@{job['trainer']}.yaml"
        switched.write_text(yaml.safe_dump(job, sort_keys=False))
        todo.append((f"example:{f.stem}@{job['trainer']}", switched, 24.0))
    for name, job, vram in matrix(work):
        f = work / "jobs" / f"{name}.yaml"
        f.write_text(yaml.safe_dump(job, sort_keys=False))
        todo.append((name, f, vram))
    for name, f, vram in todo:
        out = work / "renders" / name.replace(":", "_")
        try:
            render.render(f, out, vram, RAM_GIB)
        except JobInvalid as e:
            skipped.append((name, sorted({_reason(x) for x in e.errors})))
            continue
        except UserError as e:
            skipped.append((name, [_reason(e)]))
            continue
        job = render.load_checked(f).job
        rendered.append({"id": name, "dir": str(out), "lora_dtype": job.lora.dtype, "vram": vram, "samples": job.samples.model_dump()})
        if name.endswith("-t2v-video-1ds-1gpu-written"):
            rendered.append(render_sample_plan(f, work / "renders" / f"sample_{name}"))
        if job.trainer.value == "musubi" and name.endswith("-written") and "-t2v-video-" in name:
            rendered.append(render_multinode(f, work / "renders" / f"multinode_{name}"))
    return rendered, skipped


def render_multinode(job_file: Path, out: Path) -> dict:
    """The plan every machine of a MULTINODE-machine run gets, written like a render (its launcher in the job folder)."""
    from runner.job import render

    r = render.load_checked(job_file)
    render.write(render.trainer_plan(r, out, nodes=MULTINODE), out)
    return {"id": f"multinode:{job_file.stem}", "dir": str(out), "lora_dtype": r.job.lora.dtype, "vram": None,
            "samples": r.job.samples.model_dump()}


def render_sample_plan(job_file: Path, out: Path) -> dict:
    """`runner sample`'s plan for the job's epoch-2 LoRA as its trainer saves it, written like a render."""
    from runner.job import render
    from runner.jobs import sample

    r = sample.as_musubi(render.load_checked(job_file))
    trainer = render.load_checked(job_file).job.trainer.value
    rel = SAVED_EPOCH_2[trainer].format(name=r.job.name)
    lora = (sample._musubi_lora(r.job, rel) if trainer == "musubi" else sample._diffpipe_lora(rel))
    assert lora is not None and lora.epoch == 2, rel
    plan = sample.sample_plan(r, [lora], list(r.job.samples.prompts), out)
    render.write(plan, out)
    return {"id": f"sample:{job_file.stem}", "dir": str(out), "lora_dtype": r.job.lora.dtype, "vram": None,
            "samples": r.job.samples.model_dump(), "converts": lora.diffpipe}


def _reason(e) -> str:
    """The field and the problem's first clause, paths and numbers elided: refusals of one cause group together."""
    field = re.sub(r"\[\d+\]", "[i]", e.where.rsplit(": ", 1)[-1])
    problem = re.sub(r"(?<!\w)/\S+", "<file>", e.problem).split("; ")[0].split(". ")[0]
    problem = re.sub(r"(?<![\w.-])\d+(\.\d+)?(?![\w.-])", "N", problem)
    return f"{field}: {problem}"


# Controls: a render with one planted fault each, to show that the check named last catches it.
# (render, fault, file, text, replacement, check that must report it)
CONTROLS = [
    ("example:t2v-1.3B-diffpipe", "unknown top-level key", "diffpipe.toml", "\nepochs = ", "\nepochz = 1\nepochs = ", "diffpipe keys read"),
    ("example:t2v-1.3B-diffpipe", "required key left out", "diffpipe.toml", "\nepochs = ", "\n# epochs = ", "diffpipe required keys"),
    ("example:t2v-1.3B-diffpipe", "dtype not in DTYPE_MAP", "diffpipe.toml", 'dtype = "bfloat16"', 'dtype = "bf16"', "diffpipe values"),
    ("example:t2v-1.3B-diffpipe", "int and array in one array", "dataset.toml", "resolutions = [", "resolutions = [ 512,", "diffpipe toml dataset.toml"),
    ("example:t2v-1.3B-diffpipe", "unknown optimizer", "diffpipe.toml", '"adamw_optimi"', '"adamw_optimj"', "diffpipe optimizer"),
    ("example:t2v-1.3B-musubi", "unknown script flag", "plan.json", '"--sdpa"', '"--sdpa_x"', "musubi argparse train"),
    ("example:t2v-1.3B-musubi", "unknown dataset key", "musubi_dataset.toml", "[[datasets]]\n", "[[datasets]]\nfoo = 1\n",
     "musubi dataset schema (cache-latents)"),
    ("example:t2v-1.3B-musubi", "unknown accelerate flag", "plan.json", '"--num_cpu_threads_per_process"',
     '"--num_cpu_threads_per_procesz"', "accelerate launch argv"),
    ("example:t2v-1.3B-musubi", "unknown accelerate config key", "accelerate.yaml", "num_machines:", "num_machinez:",
     "accelerate config file"),
    ("example:t2v-1.3B-musubi", "unknown optimizer", "plan.json", '"adamw8bit"', '"adamw8bitt"', "musubi optimizer"),
    ("example:t2v-1.3B-musubi", "LoRA saved in another dtype", "plan.json", '"--seed"', '"--save_precision", "fp16", "--seed"',
     "musubi LoRA save dtype"),
    ("musubi-t2v-video-1ds-1gpu-written", "guidance as --g (not Wan's CFG)", "sample_prompts.txt", " --l 6.5", " --g 6.5",
     "musubi sample prompt file"),
    ("sample:musubi-t2v-video-1ds-1gpu-written", "width and height swapped", "plan.json", '"--video_size",\n        "352",\n        "624"',
     '"--video_size",\n        "624",\n        "352"', "musubi wan_generate_video values (sample)"),
    ("sample:diffpipe-t2v-video-1ds-1gpu-written", "diffusion-pipe LoRA not converted", "plan.json", '"--lora_weight",\n        "/outputs/diffpipe-t2v-video-1ds-1gpu-written/samples/loras/epoch0002.safetensors"',
     '"--lora_weight",\n        "/outputs/diffpipe-t2v-video-1ds-1gpu-written/20260101_00-00-00/epoch2/adapter_model.safetensors"',
     "musubi wan_generate_video values (sample)"),
    ("sample:musubi-t2v-video-1ds-1gpu-written", "unknown generate flag", "plan.json", '"--infer_steps"', '"--infer_stepz"',
     "musubi argparse sample"),
]


def plant_controls(work: Path, rendered: list[dict]) -> list[dict]:
    by_id = {e["id"]: e for e in rendered}
    out = []
    for n, (base, fault, name, text, new, check) in enumerate(CONTROLS):
        if base not in by_id:
            continue
        d = work / "controls" / f"{n}"
        shutil.copytree(by_id[base]["dir"], d, dirs_exist_ok=True)
        content = (d / name).read_text()
        assert text in content, f"control {fault!r}: {text!r} not in {base}/{name}"
        (d / name).write_text(content.replace(text, new, 1))
        out.append({**by_id[base], "id": f"control {n}: {fault}", "dir": str(d), "expect": check})
    return out


# ---------------------------------------------------------------- phase 2: check (upstream venv)


class ParseError(Exception):
    pass


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse exits on a bad flag; raise instead, with argparse's own message."""

    def error(message):
        raise ParseError(message)

    parser.error = error
    return parser


def host_path(path, render_dir: Path) -> Path:
    """/job/X in the container is the render folder here (musubi's read_config_from_file makes paths Paths)."""
    path = str(path)
    if path.startswith("/job/"):
        return render_dir / path[len("/job/"):]
    return Path(path)


class Musubi:
    """musubi-tuner at the pin: parsers, dataset schema, optimizer, scheduler and save dtype from its code."""

    SCRIPTS = ("wan_cache_latents.py", "wan_cache_text_encoder_outputs.py", "wan_train_network.py", "wan_generate_video.py", "convert_lora.py")

    def __init__(self, src: Path):
        self.src = src
        sys.path.insert(0, str(src / "src"))
        import torch

        # the Wan modules call torch.cuda.current_device() at import (a default argument in wan/modules/t5.py);
        # no GPU here, so only that call is patched, to device 0
        torch.cuda.current_device = lambda: 0
        from musubi_tuner import convert_lora, wan_cache_latents, wan_cache_text_encoder_outputs, wan_generate_video, wan_train_network
        from musubi_tuner.training import sampling_prompts
        from musubi_tuner.dataset import config_utils
        from musubi_tuner.utils import train_utils

        self.torch, self.config_utils, self.train_utils = torch, config_utils, train_utils
        self.train_module = wan_train_network
        self.load_prompts = sampling_prompts.load_prompts
        # these two scripts build their parser inside parse_args(), which reads sys.argv
        self.argv_parsers = {"wan_generate_video.py": wan_generate_video.parse_args, "convert_lora.py": convert_lora.parse_args}
        # each script's main(): parser = <setup_parser_common>(); parser = wan_setup_parser(parser)
        self.parsers = {
            "wan_cache_latents.py": lambda: wan_cache_latents.wan_setup_parser(wan_cache_latents.cache_latents.setup_parser_common()),
            "wan_cache_text_encoder_outputs.py": lambda: wan_cache_text_encoder_outputs.wan_setup_parser(
                wan_cache_text_encoder_outputs.cache_text_encoder_outputs.setup_parser_common()
            ),
            "wan_train_network.py": lambda: wan_train_network.wan_setup_parser(wan_train_network.setup_parser_common()),
        }
        from accelerate.commands.config.config_args import default_config_file, load_config_from_file
        from accelerate.commands.launch import _validate_launch_command, launch_command_parser

        self.accelerate_default_config = default_config_file
        self.load_accelerate_config = load_config_from_file
        self.launch_parser, self.validate_launch = launch_command_parser, _validate_launch_command

    def check(self, entry: dict, plan: dict, render_dir: Path):
        converted: set[str] = set()
        for step in plan["steps"]:
            argv = step["argv"]
            if len(argv) > 2 and Path(argv[1]).name == "multinode_launch.py":
                # what the rendered launcher runs on machine 1 of a Slurm job (runner/trainers/multinode.py)
                argv = argv[3:5] + ["--machine_rank", "1", "--main_process_ip", "node01", "--main_process_port", "29601"] + argv[5:]
            if argv[:2] == ["mkdir", "-p"]:  # a folder made for a later step (runner sample: convert_lora.py's output folder)
                continue
            if argv[:2] == ["accelerate", "launch"]:
                script_at = next(i for i, a in enumerate(argv) if a.endswith(".py"))
                yield from self.accelerate(argv[2:], plan, render_dir)
                script, args = argv[script_at], argv[script_at + 1:]
            else:
                script, args = argv[1], argv[2:]
            parsed = yield from self.parse(step["name"], script, args)
            if parsed is None:
                continue
            if Path(script).name == "convert_lora.py":
                converted.add(parsed.output)
                problem = None if parsed.target == "default" else f"--target {parsed.target}: wan_generate_video.py merges only the default (musubi) keys"
                yield f"musubi LoRA conversion ({step['name']})", problem
                continue
            if Path(script).name == "wan_generate_video.py":
                yield self.generated(step["name"], parsed, entry, converted)
                continue
            if getattr(parsed, "sample_prompts", None):
                yield self.prompt_file(parsed, entry, plan, render_dir)
            if getattr(parsed, "dataset_config", None):
                yield self.dataset_schema(step["name"], parsed, render_dir)
            if Path(script).name == "wan_train_network.py":
                yield from self.training(entry, parsed, plan)

    def parse(self, step: str, script: str, args: list[str]):
        name = Path(script).name
        where = f"musubi argparse {step}"
        if name not in {**self.parsers, **self.argv_parsers} or not (self.src / script).is_file():
            yield where, f"{script} is not one of the Wan scripts at the pin ({', '.join(self.SCRIPTS)})"
            return None
        if name in self.argv_parsers:  # one name for all steps of a kind: sample-<lora>-<prompt> → sample
            return (yield from self.parse_argv(f"musubi argparse {step.split('-')[0]}", name, args))
        try:
            parser = strict(self.parsers[name]())
            parsed = parser.parse_args(args)
            if name == "wan_train_network.py":
                parsed = self.train_module.read_config_from_file(parsed, parser)
        except ParseError as e:
            yield where, f"{name}: {e}"
            return None
        yield where, None
        return parsed

    def parse_argv(self, where: str, name: str, args: list[str]):
        """The script's own parse_args() on args as its argv; argparse's exit and the script's checks are failures."""
        import contextlib
        import io

        saved, err = sys.argv, io.StringIO()
        sys.argv = [name, *args]
        try:
            with contextlib.redirect_stderr(err):
                parsed = self.argv_parsers[name]()
        except SystemExit:
            yield where, f"{name}: {err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else 'argparse exit'}"
            return None
        except Exception as e:
            yield where, f"{name}: {type(e).__name__}: {e}"
            return None
        finally:
            sys.argv = saved
        yield where, None
        return parsed

    def generated(self, step: str, parsed, entry: dict, converted: set[str]):
        """wan_generate_video.py's parsed values against the job's samples: section."""
        s = entry["samples"]
        want = {"video_size": [s["height"], s["width"]], "video_length": s["frames"], "infer_steps": s["steps"], "guidance_scale": s["guidance"],
                "seed": s["seed"], "fps": 16, "output_type": "video", "lora_multiplier": [1.0]}
        problems = [f"{k} = {getattr(parsed, k)!r}, the job asks {v!r}" for k, v in want.items() if getattr(parsed, k) != v]
        if parsed.prompt not in s["prompts"]:
            problems.append(f"--prompt {parsed.prompt!r} is none of the job's prompts")
        if entry.get("converts") and not set(parsed.lora_weight or []) <= converted:
            problems.append(f"--lora_weight {parsed.lora_weight} is diffusion-pipe's file, not converted to musubi's keys first")
        for flag in ("dit", "vae", "t5"):
            if not str(getattr(parsed, flag) or "").startswith("/models/"):
                problems.append(f"--{flag} {getattr(parsed, flag)!r} is not a model file under /models")
        return f"musubi wan_generate_video values ({step.split('-')[0]})", "; ".join(problems) or None

    def prompt_file(self, parsed, entry: dict, plan: dict, render_dir: Path):
        """The sample prompt file as musubi's trainer reads it: one dict per prompt with the job's values."""
        where = "musubi sample prompt file"
        path = host_path(parsed.sample_prompts, render_dir)
        if path.name not in plan["files"]:
            return where, f"--sample_prompts {parsed.sample_prompts} is not a file the render writes"
        s = entry["samples"]
        want = {"width": s["width"], "height": s["height"], "frame_count": s["frames"], "seed": s["seed"], "sample_steps": s["steps"], "cfg_scale": s["guidance"]}
        prompts = self.load_prompts(str(path))
        problems = [] if [p["prompt"] for p in prompts] == s["prompts"] else [f"prompts {[p['prompt'] for p in prompts]} != {s['prompts']}"]
        for p in prompts:
            problems += [f"{k} = {p.get(k)!r}, the job asks {v!r}" for k, v in want.items() if p.get(k) != v]
        if not (parsed.vae and parsed.t5):
            problems.append("sampling while training needs --vae and --t5")
        return where, "; ".join(problems) or None

    def accelerate(self, launch_args: list[str], plan: dict, render_dir: Path):
        try:
            args = strict(self.launch_parser()).parse_args(launch_args)
        except ParseError as e:
            yield "accelerate launch argv", str(e)
            return
        files = set(plan["files"])
        if args.config_file:
            path = host_path(args.config_file, render_dir)
            if not args.config_file.startswith("/job/") or path.name not in files:
                yield "accelerate config file", f"--config_file {args.config_file} is not a file the render writes ({sorted(files)})"
                return
            try:
                self.load_accelerate_config(str(path))
            except Exception as e:  # accelerate raises what the file's content makes it raise
                yield "accelerate config file", f"accelerate 1.6.0 rejects {path.name}: {type(e).__name__}: {e}"
                return
            args.config_file = str(path)
            yield "accelerate config file", None
        else:
            yield (
                "accelerate config file",
                f"no --config_file: accelerate 1.6.0 then reads {self.accelerate_default_config} when it exists "
                f"(HF_HOME={plan['env'].get('HF_HOME')}, the user's mounted cache), which changes the launch",
            )
        try:
            self.validate_launch(args)
        except Exception as e:
            yield "accelerate launch argv", f"accelerate's launch validation: {type(e).__name__}: {e}"
            return
        yield "accelerate launch argv", None

    def dataset_schema(self, step: str, parsed, render_dir: Path):
        from musubi_tuner.dataset.image_video_dataset import ARCHITECTURE_WAN

        cu = self.config_utils
        try:
            user_config = cu.load_user_config(str(host_path(parsed.dataset_config, render_dir)))
            cu.BlueprintGenerator(cu.ConfigSanitizer()).generate(user_config, parsed, architecture=ARCHITECTURE_WAN)
        except Exception as e:
            return f"musubi dataset schema ({step})", f"{type(e).__name__}: {_one_line(e)}"
        return f"musubi dataset schema ({step})", None

    def training(self, entry: dict, parsed, plan: dict):
        torch = self.torch
        trainer = self.train_module.WanNetworkTrainer()
        args = argparse.Namespace(**vars(parsed))
        try:
            _, _, optimizer, _, _ = trainer.get_optimizer(args, [torch.nn.Parameter(torch.zeros(8, 8))])
        except Exception as e:
            yield "musubi optimizer", f"WanNetworkTrainer.get_optimizer({parsed.optimizer_type!r}): {type(e).__name__}: {e}"
            optimizer = None
        else:
            yield "musubi optimizer", None
        if optimizer is not None:
            args.max_train_steps = args.max_train_steps or 1000
            try:
                trainer.get_lr_scheduler(args, optimizer, 1)
            except Exception as e:
                yield "musubi lr scheduler", f"{args.lr_scheduler}: {type(e).__name__}: {e}"
            else:
                yield "musubi lr scheduler", None
        # _build_network: the musubi_tuner folder goes on sys.path, then import_module(args.network_module)
        sys.path.append(str(Path(self.train_module.__file__).parent))
        try:
            module = importlib.import_module(parsed.network_module)
            problem = None if hasattr(module, "create_arch_network") else f"{parsed.network_module} has no create_arch_network"
        except Exception as e:
            problem = f"import_module({parsed.network_module!r}): {type(e).__name__}: {e}"
        yield "musubi network module", problem
        saved = self.train_utils.resolve_save_dtype(
            parsed.save_precision, getattr(parsed, "full_fp16", False), getattr(parsed, "full_bf16", False)
        )
        wanted = getattr(torch, entry["lora_dtype"])
        problem = None
        if saved != wanted:
            problem = (f"musubi saves the LoRA as {saved} (resolve_save_dtype, --save_precision {parsed.save_precision}); "
                       f"the job's lora.dtype is {entry['lora_dtype']}")
        yield "musubi LoRA save dtype", problem


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:400]


# ----- diffusion-pipe: what its source reads, by AST

MAIN, DATASET, DIRECTORY = "main", "dataset", "dataset.directory"
# per file: which expressions name which TOML table (upstream's own variable names at the pin)
ALIASES = {
    "train.py": {"config": MAIN, "model_config": "main.model", "adapter_config": "main.adapter", "optim_config": "main.optimizer",
                 "dataset_config": DATASET},
    "utils/saver.py": {"config": MAIN, "self.config": MAIN},
    "utils/common.py": {"model_config": "main.model"},
    "utils/dataset.py": {"dataset_config": DATASET, "self.dataset_config": DATASET, "directory_config": DIRECTORY,
                         "self.directory_config": DIRECTORY},
    "models/base.py": {"config": MAIN, "self.config": MAIN, "self.model_config": "main.model", "model_config": "main.model",
                       "adapter_config": "main.adapter", "dataset_config": DATASET},
    "models/wan/wan.py": {"self.config": MAIN, "self.model_config": "main.model", "adapter_config": "main.adapter",
                          "dataset_config": DATASET},
}
WAN_PIPELINE = "WanPipeline"


def _dotted(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _const_str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


class KeyReads(ast.NodeVisitor):
    """Every key of a TOML table that a file reads: t[k], t.get/setdefault/pop(k), 'k' in t, and whole-table
    iteration (t.items(): every key is passed on). A key read with [] and never with a default or a presence
    test is required. Also the literals a read value is compared with, whether it indexes DTYPE_MAP (through
    names assigned from the read), and the unconditional asserts that only test which keys are present."""

    def __init__(self, aliases: dict[str, str], reads: dict):
        self.aliases, self.r = aliases, reads
        self.depth = 0  # if/elif/ternary/boolean nesting inside the current function (for asserts)
        self.names: dict[str, tuple[str, str]] = {}  # local name -> (table, key) it was assigned from

    def table(self, node) -> str | None:
        d = _dotted(node)
        if d in self.aliases:
            return self.aliases[d]
        key = self.read_key(node)
        return f"{key[0]}.{key[1]}" if key else None

    def read_key(self, node) -> tuple[str, str] | None:
        """(table, key) when node reads one key: t['k'] or t.get('k', ...) / t.pop('k', ...)."""
        if isinstance(node, ast.Subscript) and (k := _const_str(node.slice)) and (t := self.table(node.value)):
            return t, k
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop", "setdefault")
                and node.args and (k := _const_str(node.args[0])) and (t := self.table(node.func.value))):
            return t, k
        return None

    def tracked(self, node) -> tuple[str, str] | None:
        """(table, key) whose value node holds: the read itself, a name assigned from it, or its .lower()."""
        if isinstance(node, ast.Name) and node.id in self.names:
            return self.names[node.id]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "lower":
            return self.tracked(node.func.value)
        return self.read_key(node)

    def _table_reads(self, t: str) -> dict:
        return self.r.setdefault(t, {"read": set(), "required": set(), "optional": set(), "passthrough": False,
                                     "compared": {}, "dtype_map": set(), "asserts": []})

    def visit_FunctionDef(self, node):
        depth, names = self.depth, dict(self.names)
        self.depth = 0
        self.generic_visit(node)
        self.depth, self.names = depth, names

    visit_AsyncFunctionDef = visit_FunctionDef

    def _conditional(self, node):
        """if / ternary: the test is as conditional as the statement; the branches one level more."""
        self.visit(node.test)
        self.depth += 1
        for child in (node.body if isinstance(node.body, list) else [node.body]) + (
                node.orelse if isinstance(node.orelse, list) else [node.orelse]):
            self.visit(child)
        self.depth -= 1

    def visit_If(self, node):
        if ast.unparse(node.test) in ("__name__ == '__main__'", '__name__ == "__main__"'):
            self.generic_visit(node)  # train.py's whole run: as unconditional as a script gets
        else:
            self._conditional(node)

    def visit_IfExp(self, node):
        self._conditional(node)

    def visit_BoolOp(self, node):
        self.visit(node.values[0])
        self.depth += 1
        for v in node.values[1:]:
            self.visit(v)
        self.depth -= 1

    def visit_Subscript(self, node):
        key = self.read_key(node)
        if key and isinstance(node.ctx, ast.Load):
            r = self._table_reads(key[0])
            r["read"].add(key[1])
            r["required"].add(key[1])
        if isinstance(node.value, ast.Name) and node.value.id == "DTYPE_MAP" and (t := self.tracked(node.slice)):
            self._table_reads(t[0])["dtype_map"].add(t[1])
        self.generic_visit(node)

    def visit_Call(self, node):
        key = self.read_key(node)
        if key:
            r = self._table_reads(key[0])
            r["read"].add(key[1])
            r["optional"].add(key[1])
        if (isinstance(node.func, ast.Attribute) and node.func.attr in ("items", "keys", "values")
                and (t := self.table(node.func.value))):
            self._table_reads(t)["passthrough"] = True
        self.generic_visit(node)

    def _assign(self, targets, value):
        t = self.tracked(value)
        for target in targets:
            if isinstance(target, ast.Name):
                if t:
                    self.names[target.id] = t
                else:
                    self.names.pop(target.id, None)

    def visit_Assign(self, node):
        self.generic_visit(node)
        self._assign(node.targets, node.value)

    def visit_NamedExpr(self, node):
        self.generic_visit(node)
        self._assign([node.target], node.value)

    def visit_Compare(self, node):
        left = node.left
        if (isinstance(left, ast.Constant) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn))
                and isinstance(left.value, str) and (t := self.table(node.comparators[0]))):
            r = self._table_reads(t)
            r["read"].add(left.value)
            r["optional"].add(left.value)
        elif (t := self.tracked(left)) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
            comp = node.comparators[0]
            consts = comp.elts if isinstance(comp, (ast.Tuple, ast.List, ast.Set)) else [comp]
            values = [c.value for c in consts if isinstance(c, ast.Constant)]
            if values and len(values) == len(consts):
                self._table_reads(t[0])["compared"].setdefault(t[1], set()).update(values)
        self.generic_visit(node)

    def visit_Assert(self, node):
        if self.depth == 0 and (tables := self._presence_tables(node.test)) and len(tables) == 1:
            self._table_reads(tables.pop())["asserts"].append(ast.unparse(node.test))
        self.generic_visit(node)

    def _presence_tables(self, node) -> set[str] | None:
        """The tables an assert tests when it only asks whether keys are present ('k' in t, and/or/not)."""
        if isinstance(node, ast.BoolOp):
            parts = [self._presence_tables(v) for v in node.values]
            return set().union(*parts) if all(p is not None for p in parts) else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return self._presence_tables(node.operand)
        if (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.In, ast.NotIn))
                and _const_str(node.left) and (t := self.table(node.comparators[0]))):
            return {t}
        return None


def _eval_presence(test: str, table: dict) -> bool:
    """Evaluate an upstream presence assert ('a' in config or ...) on the rendered table."""
    tree = ast.parse(test, mode="eval").body

    def ev(n):
        if isinstance(n, ast.BoolOp):
            vals = [ev(v) for v in n.values]
            return all(vals) if isinstance(n.op, ast.And) else any(vals)
        if isinstance(n, ast.UnaryOp):
            return not ev(n.operand)
        present = n.left.value in table
        return present if isinstance(n.ops[0], ast.In) else not present

    return ev(tree)


def _wan_scope(tree: ast.Module, path: str) -> list[ast.stmt]:
    """models/base.py holds every model family's base: keep the classes WanPipeline inherits from, the helpers,
    and no other *Pipeline (e.g. ComfyPipeline, whose model keys are not Wan's)."""
    if path != "models/base.py":
        return tree.body
    return [n for n in tree.body if not (isinstance(n, ast.ClassDef) and n.name.endswith("Pipeline") and n.name not in WAN_BASES)]


WAN_BASES: set[str] = set()


def _wan_bases(src: Path) -> set[str]:
    """The classes WanPipeline derives from, following base names through models/base.py."""
    classes = {}
    for f in ("models/wan/wan.py", "models/base.py"):
        for n in ast.parse((src / f).read_text()).body:
            if isinstance(n, ast.ClassDef):
                classes[n.name] = [b.id for b in n.bases if isinstance(b, ast.Name)]
    out, todo = set(), [WAN_PIPELINE]
    while todo:
        c = todo.pop()
        if c not in out:
            out.add(c)
            todo += classes.get(c, [])
    return out


def upstream_reads(src: Path) -> dict:
    WAN_BASES.update(_wan_bases(src))
    reads: dict = {}
    for path, aliases in ALIASES.items():
        tree = ast.parse((src / path).read_text())
        visitor = KeyReads(aliases, reads)
        for node in _wan_scope(tree, path):
            visitor.visit(node)
    for r in reads.values():
        r["required"] -= r["optional"]
    return reads


def dtype_map_keys(src: Path) -> set[str]:
    for n in ast.walk(ast.parse((src / "utils/common.py").read_text())):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DTYPE_MAP" for t in n.targets):
            return {k.value for k in n.value.keys}
    raise SystemExit("diffusion-pipe utils/common.py: no DTYPE_MAP")


def optimizer_dispatch(src: Path) -> tuple[dict[str, list[ast.stmt]], list[ast.stmt]]:
    """train.py's get_optimizer: optim_type_lower == 'name' -> the statements of that branch; the else branch."""
    tree = ast.parse((src / "train.py").read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "get_optimizer")
    chain = next(n for n in fn.body if isinstance(n, ast.If) and "optim_type_lower" in ast.unparse(n.test))
    branches = {}
    while isinstance(chain, ast.If):
        branches[chain.test.comparators[0].value] = chain.body
        chain = chain.orelse[0] if len(chain.orelse) == 1 and isinstance(chain.orelse[0], ast.If) else chain.orelse
    return branches, chain


class DiffPipe:
    def __init__(self, src: Path):
        self.src = src
        sys.path.insert(0, str(src))
        import toml

        assert toml.__version__ == "0.10.2", toml.__version__
        self.toml = toml
        self.reads = upstream_reads(src)
        self.dtypes = dtype_map_keys(src)
        self.branches, self.fallback = optimizer_dispatch(src)

    def check(self, entry: dict, plan: dict, render_dir: Path):
        docs = {}
        for name in plan["files"]:
            try:
                docs[name] = self.toml.load(str(render_dir / name))
            except Exception as e:
                yield f"diffpipe toml {name}", f"toml 0.10.2: {type(e).__name__}: {e}"
            else:
                yield f"diffpipe toml {name}", None
        # one main TOML per run: an A14B job with expert: both renders one per expert
        for main in [d for d in docs.values() if "dataset" in d and "model" in d]:
            yield from self.check_main(main, docs, plan)

    def check_main(self, main: dict, docs: dict, plan: dict):
        dataset_name = Path(main["dataset"]).name
        if not main["dataset"].startswith("/job/") or dataset_name not in plan["files"]:
            yield "diffpipe dataset path", f"dataset = {main['dataset']!r} is not the rendered dataset TOML"
        # table -> its rendered instances (one per [[directory]])
        tables = {MAIN: [main]}
        tables.update({f"main.{k}": [v] for k, v in main.items() if isinstance(v, dict)})
        if dataset_name in docs:
            tables[DATASET] = [docs[dataset_name]]
            tables[DIRECTORY] = docs[dataset_name].get("directory", [])
        yield "diffpipe keys read", self.unread(tables)
        yield "diffpipe required keys", self.missing(tables)
        yield "diffpipe values", self.values(tables)
        yield "diffpipe optimizer", self.optimizer(main.get("optimizer", {}))

    def unread(self, tables: dict) -> str | None:
        out = []
        for t, doc in _instances(tables):
            r = self.reads.get(t)
            if r is None:
                out.append(f"[{t}] is read nowhere")
                continue
            if r["passthrough"]:
                continue
            for k, v in doc.items():
                nested = isinstance(v, dict) or (t == DATASET and k == "directory")
                if not nested and k not in r["read"] and f"{t}.{k}" not in out:
                    out.append(f"{t}.{k}")
        return f"keys upstream never reads (silently ignored): {', '.join(out)}" if out else None

    def missing(self, tables: dict) -> str | None:
        out = []
        for t, doc in _instances(tables):
            r = self.reads.get(t, {})
            out += [f"{t}.{k} (read as [{k!r}], no default)" for k in sorted(r.get("required", ())) if k not in doc]
            out += [f"{t}: assert {a}" for a in r.get("asserts", ()) if not _eval_presence(a, doc)]
        return f"missing: {'; '.join(out)}" if out else None

    def values(self, tables: dict) -> str | None:
        out = []
        for t, doc in _instances(tables):
            r = self.reads.get(t, {})
            for k in r.get("dtype_map", ()):
                if k in doc and doc[k] not in self.dtypes:
                    out.append(f"{t}.{k} = {doc[k]!r} is not a DTYPE_MAP key {sorted(self.dtypes)}")
            for k, consts in r.get("compared", {}).items():
                if t == "main.optimizer" and k == "type":
                    continue  # an unmatched name falls through to pytorch_optimizer: checked by building it
                v = doc.get(k)
                strs = {c for c in consts if isinstance(c, str)}
                if isinstance(v, str) and strs and v not in strs and v.lower() not in strs:
                    out.append(f"{t}.{k} = {v!r}: upstream compares it only with {sorted(strs)}")
        return "; ".join(out) or None

    def optimizer(self, config: dict) -> str | None:
        """Run train.py's own dispatch branch for the type, then build the class on a dummy parameter with the
        kwargs train.py passes (every key but type and gradient_release)."""
        import torch

        optim_type = config.get("type", "")
        body = self.branches.get(optim_type.lower(), self.fallback)
        ns = {"torch": torch, "optim_type": optim_type, "optim_type_lower": optim_type.lower(), "args": [],
              "kwargs": {k: v for k, v in config.items() if k not in ["type", "gradient_release"]}}
        try:
            exec(compile(ast.Module(body=[s for s in body if not _touches_runtime(s)], type_ignores=[]), "train.py", "exec"), ns)
            ns["klass"]([torch.nn.Parameter(torch.zeros(8, 8))], *ns["args"], **ns["kwargs"])
        except Exception as e:
            return f"type {optim_type!r}: {type(e).__name__}: {e}"
        return None


def _instances(tables: dict[str, list[dict]]):
    return ((t, doc) for t, docs in tables.items() for doc in docs)


def _touches_runtime(stmt: ast.stmt) -> bool:
    """Statements of a dispatch branch that need the live DeepSpeed model (only genericoptim has them)."""
    text = ast.unparse(stmt)
    return "pipeline_model" in text or "model.get_param_groups" in text or "config[" in text


def run_checks(manifest: Path, musubi_src: Path, diffpipe_src: Path) -> dict:
    entries = json.loads(manifest.read_text())
    os.environ["HF_HOME"] = "/hf-cache"  # the container's, so accelerate names the file it would read there
    checkers = {"musubi": Musubi(musubi_src), "diffpipe": DiffPipe(diffpipe_src)}
    results = []
    for entry in entries:
        render_dir = Path(entry["dir"])
        plan = json.loads((render_dir / "plan.json").read_text())
        try:
            for check, problem in checkers[plan["trainer"]].check(entry, plan, render_dir):
                results.append({"id": entry["id"], "check": check, "problem": problem})
        except Exception:
            results.append({"id": entry["id"], "check": "bench", "problem": traceback.format_exc(limit=3)})
    extracted = {t: {"read": sorted(r["read"]) if not r["passthrough"] else ["(every key: passed on as a whole)"],
                     "required": sorted(r["required"]), "asserts": r["asserts"]}
                 for t, r in sorted(checkers["diffpipe"].reads.items())}
    return {"results": results, "extracted": extracted}


# ---------------------------------------------------------------- report


def report(rendered: list[dict], skipped: list[tuple[str, list[str]]], results: list[dict], header: list[str]) -> str:
    lines = header + ["", f"{'render':<44} {'upstream check':<46} result"]
    for r in results:
        lines.append(f"{r['id']:<44} {r['check']:<46} " + ("ok" if r["problem"] is None else f"MISMATCH: {r['problem']}"))
    lines += ["", f"refused by runner validate or the planner (not rendered): {len(skipped)} jobs; by reason (a job may have several):"]
    by_reason = Counter(reason for _, reasons in skipped for reason in reasons)
    for reason, n in by_reason.most_common():
        names = [name for name, r in skipped if reason in r]
        lines.append(f"  {n:4d} x {reason}\n         {', '.join(names)}")
    mism = [r for r in results if r["problem"] is not None]
    lines += ["", "mismatches by check:"]
    for check, n in Counter(r["check"] for r in mism).most_common():
        lines.append(f"  {n:4d}  {check}")
    lines += ["", f"{len(rendered)} renders, {len(results)} checks, {len(mism)} mismatches"]
    return "\n".join(lines) + "\n"


def control_report(controls: list[dict], results: list[dict]) -> str:
    lines, caught = ["", "controls (one planted fault each; not counted above):"], 0
    for c in controls:
        hit = [r["problem"] for r in results if r["id"] == c["id"] and r["check"] == c["expect"] and r["problem"]]
        caught += bool(hit)
        lines.append(f"  {c['id']:<42} {c['expect']:<40} " + (f"caught: {hit[0][:160]}" if hit else "NOT CAUGHT"))
    lines.append(f"  {caught}/{len(controls)} caught (of {len(CONTROLS)} planted)")
    return "\n".join(lines) + "\n"


def extraction(extracted: dict) -> str:
    """What the AST read out of diffusion-pipe, so that a reader can judge the key checks."""
    lines = ["", "diffusion-pipe keys by table, as extracted from its source (train.py, models/base.py for Wan's bases, "
             "models/wan/wan.py, utils/dataset.py, utils/saver.py, utils/common.py):"]
    for t, r in extracted.items():
        lines.append(f"  [{t}] read: {', '.join(r['read'])}")
        lines.append(f"  [{t}] required: {', '.join(r['required']) or '-'}" + "".join(f"; assert {a}" for a in r["asserts"]))
    return "\n".join(lines) + "\n"


def _pin(src: Path, pin: str) -> str:
    r = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"(an exported tree; bench/README.md exports it at {pin[:7]})"
    return r.stdout.strip() + ("" if r.stdout.strip() == pin else f" (NOT the pin {pin[:7]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--musubi", type=Path, required=True, help="musubi-tuner source at 30c658c (holds src/musubi_tuner)")
    ap.add_argument("--diffpipe", type=Path, required=True, help="diffusion-pipe source at 8f83dbf (holds train.py)")
    ap.add_argument("--python", default=DEFAULT_PYTHON, help="interpreter of the upstream venv (bench/README.md)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "data" / "upstream_contract.txt")
    ap.add_argument("--work", type=Path, help="folder for jobs, data and renders (default: a temporary one)")
    ap.add_argument("--check", type=Path, help=argparse.SUPPRESS)  # internal: phase 2, in the upstream venv
    a = ap.parse_args()
    if a.check:
        a.check.with_suffix(".results.json").write_text(json.dumps(run_checks(a.check, a.musubi.resolve(), a.diffpipe.resolve())))
        return
    work = a.work or Path(tempfile.mkdtemp(prefix="upstream-contract-"))
    rendered, skipped = render_all(work.resolve())
    controls = plant_controls(work.resolve(), rendered)
    checked = check_in_upstream_venv(a, work / "manifest.json", rendered + controls)
    ids = {c["id"] for c in controls}
    results = [r for r in checked["results"] if r["id"] not in ids]
    text = report(rendered, skipped, results, header(a))
    text += control_report(controls, checked["results"]) + extraction(checked["extracted"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)


def check_in_upstream_venv(a: argparse.Namespace, manifest: Path, entries: list[dict]) -> dict:
    manifest.write_text(json.dumps(entries))
    me = str(Path(__file__).resolve())
    subprocess.run([a.python, me, "--musubi", str(a.musubi), "--diffpipe", str(a.diffpipe), "--check", str(manifest)], check=True)
    return json.loads(manifest.with_suffix(".results.json").read_text())


def header(a: argparse.Namespace) -> list[str]:
    def out(cmd: list[str]) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()

    versions = out([a.python, "-c", "import torch, accelerate, toml, voluptuous, bitsandbytes as b; print(f'torch {torch.__version__}, "
                    "accelerate {accelerate.__version__}, toml {toml.__version__}, voluptuous {voluptuous.__version__}, "
                    "bitsandbytes {b.__version__}')"])
    return [
        "upstream contract: runner's renders through the trainers' own code (bench/upstream_contract.py)",
        f"runner: {out(['git', '-C', str(REPO), 'log', '-1', '--format=%h', '--', 'runner', 'examples'])} (last change to runner/ "
        f"or examples/); musubi-tuner: {a.musubi} "
        f"{_pin(a.musubi, MUSUBI_PIN)}; diffusion-pipe: {a.diffpipe} {_pin(a.diffpipe, DIFFPIPE_PIN)}",
        f"upstream venv: {versions} (real packages, no stand-ins); patched: torch.cuda.current_device -> 0 only "
        "(musubi's Wan modules call it at import; no GPU here)",
        f"matrix: memory: auto rendered with --vram {'/'.join(map(str, VRAMS))} --ram {RAM_GIB}; examples with --vram 24",
    ]


if __name__ == "__main__":
    main()
