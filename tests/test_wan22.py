"""Wan2.2 (A14B experts, TI2V-5B) and FLF2V-14B: what each trainer gets, and every job a trainer cannot run refused (exit 2)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from runner.job import render
from tests import modelfixtures
from tests.conftest import write_job
from tests.test_validation import assert_refused

COMFY_22 = "Wan_2.2_ComfyUI_Repackaged/split_files/diffusion_models"


def job(trainer: str, task: str, extra: str = "", preset: str | None = None, frames: str = "[33]") -> str:
    return (f"name: w\ntrainer: {trainer}\ntask: {task}\nmodels:\n  root: ../models\n  preset: {preset or task}\n"
            f"datasets:\n  - path: data/clips\n    frames: {frames}\n{extra}")


def rendered(workspace: Path, tmp_path: Path, text: str):
    return render.render(write_job(workspace / "examples", text), tmp_path / "out")


def argv(plan, step: str = "train") -> list[str]:
    return next(s.argv for s in plan.steps if s.name == step)


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


@pytest.mark.parametrize("expert,low,high", [("low", "0", "875"), ("high", "875", "1000")])
def test_musubi_one_expert_trains_on_its_timesteps_from_its_own_dit(workspace, tmp_path, expert, low, high):
    plan = rendered(workspace, tmp_path, job("musubi", "t2v-A14B", f"expert: {expert}\nmemory: {{dtype: float16}}\n"))
    args = argv(plan)
    assert flag(args, "--task") == "t2v-A14B"
    assert flag(args, "--dit").endswith(f"wan2.2_t2v_{expert}_noise_14B_fp16.safetensors")
    assert (flag(args, "--min_timestep"), flag(args, "--max_timestep")) == (low, high)
    assert "--preserve_distribution_shape" in args and "--dit_high_noise" not in args


def test_musubi_both_experts_in_one_run_switched_at_the_i2v_boundary(workspace, tmp_path):
    plan = rendered(workspace, tmp_path, job("musubi", "i2v-A14B", "expert: both\nmemory: {dtype: float16}\n"))
    args = argv(plan)
    assert flag(args, "--dit").endswith("wan2.2_i2v_low_noise_14B_fp16.safetensors")
    assert flag(args, "--dit_high_noise").endswith("wan2.2_i2v_high_noise_14B_fp16.safetensors")
    assert flag(args, "--timestep_boundary") == "900" and "--offload_inactive_dit" in args and "--min_timestep" not in args
    latents = argv(plan, "cache-latents")
    assert "--i2v" in latents and "--clip" not in latents, "Wan2.2 I2V has no CLIP"
    assert flag(latents, "--vae").endswith("Wan2.2-I2V-A14B/Wan2.1_VAE.pth")


def test_musubi_both_experts_with_block_swap_leaves_out_offload_inactive_dit(workspace, tmp_path):
    plan = rendered(workspace, tmp_path, job("musubi", "t2v-A14B", "expert: both\nmemory: {dtype: float16, blocks_to_swap: 10}\n"))
    assert "--offload_inactive_dit" not in argv(plan), "musubi asserts no block swap with --offload_inactive_dit"


def test_diffpipe_both_experts_are_two_runs_with_their_ranges_and_folders(workspace, tmp_path):
    plan = rendered(workspace, tmp_path, job("diffpipe", "t2v-A14B", "expert: both\n"))
    assert [s.name for s in plan.steps] == ["train-high_noise", "train-low_noise"]
    high, low = (tomllib.loads(plan.files[f"diffpipe_{e}_noise.toml"]) for e in ("high", "low"))
    assert (high["model"]["min_t"], high["model"]["max_t"]) == (0.875, 1.0)
    assert (low["model"]["min_t"], low["model"]["max_t"]) == (0.0, 0.875)
    assert high["output_dir"] == "/outputs/w/high_noise" and low["output_dir"] == "/outputs/w/low_noise"
    assert "high_noise_14B" in high["model"]["transformer_path"] and "low_noise_14B" in low["model"]["transformer_path"]


def test_diffpipe_official_expert_is_its_folder(workspace, tmp_path):
    plan = rendered(workspace, tmp_path, job("diffpipe", "i2v-A14B", "expert: high\n").replace("preset: i2v-A14B\n", "preset: i2v-A14B\n  format: official\n"))
    model = tomllib.loads(plan.files["diffpipe.toml"])["model"]
    assert model["transformer_path"] == "/models/Wan2.2-I2V-A14B/high_noise_model" and (model["min_t"], model["max_t"]) == (0.9, 1.0)


def test_diffpipe_ti2v_5b_uses_the_wan22_vae_folder_and_24_fps(workspace, tmp_path):
    plan = rendered(workspace, tmp_path, job("diffpipe", "ti2v-5B", frames="[49]"))
    model = tomllib.loads(plan.files["diffpipe.toml"])["model"]
    assert model["ckpt_path"] == "/models/Wan2.2-TI2V-5B" and model["transformer_path"].endswith("wan2.2_ti2v_5B_fp16.safetensors")


def test_dataset_check_resamples_to_24_fps_for_ti2v_5b(cli, workspace):
    code, out, _ = cli("dataset", "check", workspace / "examples" / "data" / "clips", "--task", "ti2v-5B", "--trainer", "diffpipe", "--frames", "49")
    assert code == 0 and "at 24 fps" in out


# --- refused --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task,why", [("ti2v-5B", "no ti2v-5B task"), ("flf2v-14B", "one-frame mode")])
def test_musubi_refuses_what_it_cannot_train(cli, workspace, task, why):
    assert_refused(cli, workspace, job("musubi", task), "task", why, "use trainer: diffpipe", line=3)


def test_expert_on_a_model_without_experts(cli, workspace):
    assert_refused(cli, workspace, job("diffpipe", "t2v-14B", "expert: low\n"), "expert", "only Wan2.2 A14B", line=10)


def test_expert_value_outside_low_high_both(cli, workspace):
    assert_refused(cli, workspace, job("diffpipe", "t2v-A14B", "expert: middle\n"), "expert", "'low', 'high' or 'both'", line=10)


@pytest.mark.parametrize("trainer,field,given", [
    ("musubi", "dit", "wan2.2_t2v_high_noise_14B_fp16.safetensors"),
    ("diffpipe", "dit_high_noise", "wan2.2_t2v_low_noise_14B_fp16.safetensors"),
])
def test_an_expert_file_in_the_other_experts_place(cli, workspace, trainer, field, given):
    text = job(trainer, "t2v-A14B", "expert: both\nmemory: {dtype: float16}\n").replace("datasets:", f"  {field}: {COMFY_22}/{given}\ndatasets:")
    assert_refused(cli, workspace, text, f"models.{field}", "is named as the", "expert", line=7)


def test_high_expert_without_its_dit(cli, workspace):
    text = (f"name: w\ntrainer: diffpipe\ntask: t2v-A14B\nexpert: high\nmodels:\n  root: ../models\n  ckpt_dir: Wan2.2-T2V-A14B\n"
            f"  dit: {COMFY_22}/wan2.2_t2v_low_noise_14B_fp16.safetensors\ndatasets:\n  - path: data/clips\n")
    assert_refused(cli, workspace, text, "models.dit_high_noise", "is not set", "trains the high-noise expert")


@pytest.mark.parametrize("task,dit,words", [
    ("i2v-A14B", "wan2.1_i2v_480p_14B_bf16.safetensors", "a Wan2.1 I2V DiT but task is i2v-A14B, which needs a Wan2.2 I2V (A14B) DiT"),
    ("flf2v-14B", "wan2.1_i2v_720p_14B_bf16.safetensors", "a Wan2.1 I2V DiT but task is flf2v-14B, which needs an FLF2V DiT"),
    ("ti2v-5B", "wan2.1_t2v_14B_bf16.safetensors", "a Wan2.1-14B DiT but task is ti2v-5B"),
    ("t2v-14B", f"{COMFY_22}/wan2.2_ti2v_5B_fp16.safetensors", "a Wan2.2-5B DiT but task is t2v-14B"),
])
def test_dit_of_another_model(cli, workspace, task, dit, words):
    text = job("diffpipe", task).replace("datasets:", f"  dit: {dit}\ndatasets:")
    assert_refused(cli, workspace, text, "models.dit", words, line=7)


def test_flf2v_without_first_and_last_frames(cli, workspace):
    assert_refused(cli, workspace, job("diffpipe", "flf2v-14B", frames="[1]"), "datasets[0].frames", "the first and the last frame", line=9)


def test_flf2v_on_a_folder_of_images(cli, workspace):
    stills = workspace / "examples" / "data" / "stills"
    stills.mkdir()
    (stills / "a.png").write_bytes((workspace / "examples/data/mixed/still1.png").read_bytes())
    (stills / "a.txt").write_text("a still")
    text = job("diffpipe", "flf2v-14B").replace("data/clips", "data/stills")
    assert_refused(cli, workspace, text, "datasets[0].path", "trains on videos, and this folder has none", line=8)


def test_diffpipe_a14b_official_folder_without_expert_config(cli, workspace):
    (workspace / "models" / "Wan2.2-T2V-A14B" / "low_noise_model" / "config.json").unlink()
    assert_refused(cli, workspace, job("diffpipe", "t2v-A14B"), "models.ckpt_dir", "lacks low_noise_model/config.json")


def test_samples_of_a_wan22_job(cli, workspace):
    assert_refused(cli, workspace, job("diffpipe", "ti2v-5B", "samples: {prompts: ['a ball']}\n", frames="[49]"), "samples.prompts", "Wan2.2", line=10)


def test_resume_of_both_diffpipe_experts_is_refused(cli, workspace):
    out = workspace / "examples" / "outputs" / "w" / "high_noise" / "20260101_00-00-00" / "global_step2"
    out.mkdir(parents=True)
    (out.parent / "latest").write_text("global_step2")
    job_file = write_job(workspace / "examples", job("diffpipe", "t2v-A14B", "expert: both\n"))
    code, _, err = cli("render", job_file, "--out", workspace / "r", "--resume")
    assert code == 2 and "both A14B experts" in err and "--fresh" in err and not (workspace / "r").exists()


def test_presets_fetch_each_models_own_files():
    from runner.models.presets import Format, get_preset, wanted
    from runner.spec import Trainer

    a14b = {w.repo: w for w in wanted(get_preset("t2v-A14B"), Format.comfy, [Trainer.diffpipe])}
    official = a14b["Wan-AI/Wan2.2-T2V-A14B"]
    assert official.matches("low_noise_model/config.json") and official.matches("Wan2.1_VAE.pth")
    assert not official.matches("low_noise_model/diffusion_pytorch_model-00001-of-00006.safetensors")
    assert not official.matches("models_t5_umt5-xxl-enc-bf16.pth"), "diffusion-pipe loads ComfyUI's umT5"
    comfy = a14b["Comfy-Org/Wan_2.2_ComfyUI_Repackaged"]
    assert comfy.matches("split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors")
    five = wanted(get_preset("ti2v-5B"), Format.official, [Trainer.diffpipe])[0]
    assert five.matches("Wan2.2_VAE.pth") and not five.matches("Wan2.1_VAE.pth") and five.matches("diffusion_pytorch_model-00001-of-00003.safetensors")
    flf = wanted(get_preset("flf2v-14B"), Format.comfy, [Trainer.diffpipe])[0]
    assert flf.matches("models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth") and flf.matches("xlm-roberta-large/tokenizer.json")


@pytest.mark.parametrize("example", ["ti2v-5B-diffpipe", "t2v-A14B-musubi"])
def test_runner_sample_of_a_wan22_job_is_refused(cli, workspace, monkeypatch, example):
    monkeypatch.setenv("RUNNER_GPUS", "none")  # refused before any container or GPU is asked for
    job = workspace / "examples" / f"{example}.yaml"
    code, _, err = cli("sample", job, "--prompt", "a ball")
    assert code == 2 and "task" in err and "Wan2.2 needs both experts" in err and "Fix:" in err, err
    assert not (workspace / "examples" / "outputs").exists()


def test_dataset_prepare_takes_the_tasks_frame_rate(cli, workspace, tmp_path):
    import av

    out = tmp_path / "clips24"
    code, _, err = cli("dataset", "prepare", workspace / "examples" / "data" / "clips", "--out", out, "--task", "ti2v-5B", "--frames", "17")
    assert code == 0, err
    clip = sorted(out.glob("*.mp4"))[0]
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        assert float(s.average_rate) == 24 and sum(1 for _ in c.decode(s)) == 17


def test_both_experts_runs_are_watched_as_training():
    """The NaN and out-of-memory watchdogs read diffusion-pipe's train-high_noise / train-low_noise steps as training."""
    from runner.jobs import logwatch

    watch = logwatch.scan([f"{logwatch.STEP_MARK}2/2 train-low_noise: deepspeed --num_gpus=1 train.py"], "diffpipe")
    assert watch.step == logwatch.TRAIN and watch.phase() == logwatch.TRAIN
