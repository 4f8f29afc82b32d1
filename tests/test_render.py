"""Trainer rules the renderers encode, checked on the rendered argv and TOMLs (facts at the pinned commits)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import toml
import yaml

from runner.job import render
from tests import modelfixtures
from tests.conftest import write_job
from tests.test_validation import job_text


def rendered(workspace: Path, text: str, tmp_path: Path):
    job = write_job(workspace / "examples", text)
    return render.render(job, tmp_path / "out")


def train_argv(plan) -> list[str]:
    return next(s.argv for s in plan.steps if s.name == "train")


def test_fp8_dit_file_gets_fp8_base_without_fp8_scaled(workspace, tmp_path):
    # musubi raises ValueError for --fp8_scaled with an fp8 (e4m3fn) DiT; a bf16 DiT gets both flags
    modelfixtures.dit(workspace / "models" / "dit_fp8.safetensors", dtype="F8_E4M3")
    fp8 = train_argv(rendered(workspace, job_text(dit="dit_fp8.safetensors", extra="memory:\n  transformer_dtype: float8\n"), tmp_path))
    assert "--fp8_base" in fp8 and "--fp8_scaled" not in fp8
    bf16 = train_argv(rendered(workspace, job_text(extra="memory:\n  transformer_dtype: float8\n"), tmp_path))
    assert bf16[bf16.index("--fp8_base") + 1] == "--fp8_scaled"


def test_musubi_warmup_switches_scheduler(workspace, tmp_path):
    argv = train_argv(rendered(workspace, job_text(extra="schedule:\n  warmup_steps: 50\n"), tmp_path))
    assert argv[argv.index("--lr_scheduler") + 1] == "constant_with_warmup"
    assert argv[argv.index("--lr_warmup_steps") + 1] == "50"


def test_max_steps_alone_means_that_many_steps_on_both_trainers(workspace, tmp_path):
    argv = train_argv(rendered(workspace, job_text(extra="schedule:\n  max_steps: 300\n"), tmp_path / "m"))
    assert argv[argv.index("--max_train_steps") + 1] == "300" and "--max_train_epochs" not in argv
    # diffusion-pipe stops at epochs or max_steps, whichever comes first; an epoch is at least one step
    doc = tomllib.loads(rendered(workspace, job_text("diffpipe", extra="schedule:\n  max_steps: 300\n"), tmp_path / "d").files["diffpipe.toml"])
    assert (doc["epochs"], doc["max_steps"]) == (300, 300)
    both = rendered(workspace, job_text("diffpipe", extra="schedule:\n  max_steps: 300\n  epochs: 4\n"), tmp_path / "b")
    doc = tomllib.loads(both.files["diffpipe.toml"])
    assert (doc["epochs"], doc["max_steps"]) == (4, 300)


def test_diffpipe_square_sides_render_as_pairs_toml_0_10_2_reads(workspace, tmp_path):
    # diffusion-pipe reads its TOMLs with toml 0.10.2, which rejects [512, [624, 624]] ("Not a homogeneous array")
    text = job_text("diffpipe").replace("  - path: data/clips\n", "  - path: data/clips\n    resolutions: [512, [624, 624]]\n")
    doc = toml.loads(rendered(workspace, text, tmp_path).files["dataset.toml"])
    assert doc["resolutions"] == [[512, 512], [624, 624]]


def test_diffpipe_swaps_blocks_on_several_gpus(workspace, tmp_path):
    # train.py asserts only pipeline_stages == 1 for block swap, which runner always renders
    text = job_text("diffpipe", extra="gpus: 2\nmemory:\n  blocks_to_swap: 10\n")
    doc = tomllib.loads(rendered(workspace, text, tmp_path).files["diffpipe.toml"])
    assert (doc["blocks_to_swap"], doc["pipeline_stages"]) == (10, 1)
    assert train_argv(rendered(workspace, text, tmp_path))[1] == "--num_gpus=2"


def test_musubi_alpha_defaults_to_rank_not_musubis_1(workspace, tmp_path):
    argv = train_argv(rendered(workspace, job_text(extra="lora:\n  rank: 64\n"), tmp_path))
    assert argv[argv.index("--network_alpha") + 1] == "64"


def test_musubi_mixed_precision_is_given_to_the_script_too(workspace, tmp_path):
    plan = rendered(workspace, job_text(), tmp_path)
    argv = train_argv(plan)
    script = argv.index("src/musubi_tuner/wan_train_network.py")
    assert yaml.safe_load(plan.files["accelerate.yaml"])["mixed_precision"] == "bf16"
    assert argv[argv.index("--mixed_precision", script) + 1] == "bf16"


def test_accelerate_takes_every_launch_setting_from_the_rendered_file(workspace, tmp_path):
    # without --config_file accelerate would read $HF_HOME/accelerate/default_config.yaml from the user's cache
    one = rendered(workspace, job_text(), tmp_path / "one")
    argv = train_argv(one)
    assert argv[: argv.index("src/musubi_tuner/wan_train_network.py")] == [
        "accelerate", "launch", "--config_file", "/job/accelerate.yaml", "--num_cpu_threads_per_process", "1"]
    config = yaml.safe_load(one.files["accelerate.yaml"])
    assert config["distributed_type"] == "NO" and config["num_processes"] == 1 and "main_process_port" not in config
    job = write_job(workspace / "examples", job_text(extra="gpus: 2\n"))
    two = yaml.safe_load(render.trainer_plan(render.load_checked(job), tmp_path, master_port=29612).files["accelerate.yaml"])
    assert (two["distributed_type"], two["num_processes"], two["main_process_port"]) == ("MULTI_GPU", 2, 29612)


def test_musubi_warmup_counts_optimizer_steps_on_every_gpu_count(workspace, tmp_path):
    # accelerate steps musubi's scheduler once per process at each optimizer step
    text = job_text(extra="schedule:\n  warmup_steps: 8\ngpus: 2\n")
    argv = train_argv(rendered(workspace, text, tmp_path))
    assert argv[argv.index("--lr_warmup_steps") + 1] == "16"


@pytest.mark.parametrize("dtype,flag", [("bfloat16", "bf16"), ("float32", "fp32")])
def test_musubi_saves_the_lora_in_the_jobs_dtype(workspace, tmp_path, dtype, flag):
    argv = train_argv(rendered(workspace, job_text(extra=f"lora:\n  dtype: {dtype}\n"), tmp_path))
    assert argv[argv.index("--save_precision") + 1] == flag


def test_musubi_caching_steps_run_offline_unless_the_job_says_otherwise(workspace, tmp_path):
    plan = rendered(workspace, job_text(), tmp_path / "a")
    assert [s.env for s in plan.steps] == [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "1"}, {}]
    recorded = json.loads((tmp_path / "a" / "out" / "plan.json").read_text())["steps"]
    assert recorded[0]["env"] == {"HF_HUB_OFFLINE": "1"}
    assert "HF_HUB_OFFLINE=1 python src/musubi_tuner/wan_cache_latents.py" in (tmp_path / "a" / "out" / "command.sh").read_text()
    own = rendered(workspace, job_text(extra="env:\n  HF_HUB_OFFLINE: '0'\n"), tmp_path / "b")
    assert all(s.env == {} for s in own.steps) and own.env["HF_HUB_OFFLINE"] == "0"


@pytest.mark.parametrize("given,passed", [("adamw8bit", "adamw8bit"), ("ADAMW", "ADAMW"), ("sgd", "SGD"), ("radam", "RAdam"), ("bitsandbytes.optim.PagedAdamW8bit", "bitsandbytes.optim.PagedAdamW8bit")])
def test_musubi_optimizer_names_are_spelled_as_musubi_looks_them_up(workspace, tmp_path, given, passed):
    argv = train_argv(rendered(workspace, job_text(extra=f"optimizer:\n  type: {given}\n"), tmp_path))
    assert argv[argv.index("--optimizer_type") + 1] == passed


def test_musubi_dit_bytes_per_param_follow_the_file(workspace):
    # musubi keeps the DiT file's dtype unless fp8 is on: the official Wan2.1 DiT is float32
    modelfixtures.dit(workspace / "models" / "dit_fp32.safetensors", dtype="F32")
    modelfixtures.dit(workspace / "models" / "dit_fp8.safetensors", dtype="F8_E4M3")

    def bytes_for(trainer, dit, extra=""):
        return render.dit_bytes_per_param(render.load_checked(write_job(workspace / "examples", job_text(trainer, extra=extra, dit=dit))))

    assert bytes_for("musubi", "dit_fp32.safetensors") == 4
    assert bytes_for("musubi", "dit_fp32.safetensors", "memory:\n  transformer_dtype: float8\n") == 1
    assert bytes_for("musubi", "dit_fp8.safetensors") == 2
    assert bytes_for("musubi", "wan2.1_t2v_1.3B_bf16.safetensors") == 2
    assert bytes_for("diffpipe", "dit_fp32.safetensors") == 2
    assert bytes_for("diffpipe", "dit_fp32.safetensors", "memory:\n  transformer_dtype: float8\n") == 1


def test_musubi_official_dit_not_on_the_target_counts_float32(workspace):
    text = "name: t\ntrainer: musubi\ntask: t2v-1.3B\nmodels:\n  root: ../nowhere\n  preset: t2v-1.3B\n  format: official\ndatasets:\n  - path: data/clips\n"
    resolved = render.load_checked(write_job(workspace / "examples", text))
    assert resolved.headers == {} and render.dit_bytes_per_param(resolved) == 4


def test_musubi_source_fps_is_written_as_a_float(workspace, tmp_path):
    plan = rendered(workspace, job_text().replace("  - path: data/clips\n", "  - path: data/clips\n    source_fps: 30\n    frames: [17]\n"), tmp_path)
    entry = tomllib.loads(plan.files["musubi_dataset.toml"])["datasets"][0]
    assert entry["source_fps"] == 30.0 and isinstance(entry["source_fps"], float)


def test_musubi_cache_directories_are_unique(workspace, tmp_path):
    text = job_text().replace("data/clips", "data/mixed").replace("  - path: data/mixed\n", "  - path: data/mixed\n    resolutions: [[832, 480], 512]\n")
    entries = tomllib.loads(rendered(workspace, text, tmp_path).files["musubi_dataset.toml"])["datasets"]
    assert len(entries) == 4
    assert len({e["cache_directory"] for e in entries}) == 4
    assert {e.get("resolution")[0] for e in entries} == {832, 512}


def test_diffpipe_second_dataset_overrides_only_what_differs(workspace, tmp_path):
    text = job_text("diffpipe") + "  - path: data/mixed\n    frames: [1, 29]\n    repeats: 3\n"
    doc = tomllib.loads(rendered(workspace, text, tmp_path).files["dataset.toml"])
    assert doc["frame_buckets"] == [33]
    first, second = doc["directory"]
    assert "frame_buckets" not in first and second["frame_buckets"] == [29] and second["num_repeats"] == 3


def test_diffpipe_max_steps_and_master_port(workspace, tmp_path):
    job = write_job(workspace / "examples", job_text("diffpipe", extra="schedule:\n  max_steps: 100\n"))
    plan = render.trainer_plan(render.load_checked(job), tmp_path, master_port=29611)
    assert tomllib.loads(plan.files["diffpipe.toml"])["max_steps"] == 100
    argv = train_argv(plan)
    assert argv[argv.index("train.py") :][-2:] == ["--master_port", "29611"]


def test_render_replaces_an_earlier_render_whole(workspace, tmp_path):
    out = tmp_path / "out"
    rendered(workspace, job_text("diffpipe"), tmp_path)
    assert (out / "diffpipe.toml").is_file()
    rendered(workspace, job_text(), tmp_path)
    assert not (out / "diffpipe.toml").exists() and (out / "musubi_dataset.toml").is_file()


def test_memory_auto_fits_the_seeds_case_on_a_24gb_card_for_each_trainer(workspace, tmp_path):
    # the seed's bar: Wan2.1-T2V-1.3B at 832x480 with 81 frames on a 24 GB RTX 4090
    from runner.data.synth import write_caption, write_video
    from runner.gpu.planner import plan_for_job

    (workspace / "examples" / "data" / "long").mkdir()
    write_caption(write_video(workspace / "examples" / "data" / "long" / "walk81.mp4", frames=81, fps=16))
    for trainer in ("musubi", "diffpipe"):
        text = job_text(trainer).replace("  - path: data/clips\n", "  - path: data/long\n    frames: [81]\n") + "memory: auto\n"
        job_file = write_job(workspace / "examples", text)
        plan = render.render(job_file, tmp_path / trainer, vram_gib=24, ram_gib=64)
        chosen = plan_for_job(render.read_job(job_file)[0], 24, 64)
        assert chosen.fits and chosen.gpu_gib + chosen.margin_gib <= 24
        rendered = " ".join(train_argv(plan)) if trainer == "musubi" else plan.files["diffpipe.toml"]
        assert "--gradient_checkpointing" in rendered or "activation_checkpointing = true" in rendered


def test_memory_auto_without_a_gpu_asks_for_its_size(cli, workspace):
    job = write_job(workspace / "examples", job_text() + "memory: auto\n")
    code, _, stderr = cli("render", job, "--out", workspace / "r")
    assert code == 2 and "--vram" in stderr and not (workspace / "r").exists()


def test_memory_auto_on_a_12gb_card_caches_text_with_the_fp8_text_encoder_on_each_trainer(workspace, tmp_path):
    # measured: the bf16 umT5 alone needs ~12.6 GiB on the device while caching, more than the card
    for trainer in ("musubi", "diffpipe"):
        plan = render.render(write_job(workspace / "examples", job_text(trainer) + "memory: auto\n"), tmp_path / trainer, vram_gib=12, ram_gib=64)
        if trainer == "musubi":
            cache_text = next(s.argv for s in plan.steps if s.name == "cache-text-encoder")
            assert "--fp8_t5" in cache_text and cache_text[cache_text.index("--batch_size") + 1] == "16"
        else:
            assert tomllib.loads(plan.files["diffpipe.toml"])["model"]["text_encoder_fp8"] is True


def test_text_encoder_settings_by_hand_render_for_each_trainer(workspace, tmp_path):
    memory = "memory:\n  text_encoder_dtype: float8\n  text_encoder_batch: 4\n"
    musubi = rendered(workspace, job_text("musubi") + memory, tmp_path / "m")
    cache_text = next(s.argv for s in musubi.steps if s.name == "cache-text-encoder")
    assert "--fp8_t5" in cache_text and cache_text[cache_text.index("--batch_size") + 1] == "4"
    diffpipe = rendered(workspace, job_text("diffpipe") + memory, tmp_path / "d")
    assert tomllib.loads(diffpipe.files["diffpipe.toml"])["model"]["text_encoder_fp8"] is True
    default = rendered(workspace, job_text("diffpipe"), tmp_path / "d0")
    assert "text_encoder_fp8" not in tomllib.loads(default.files["diffpipe.toml"])["model"]
