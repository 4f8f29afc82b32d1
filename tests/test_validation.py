"""Every bad job exits 2 with one paragraph naming the field, the problem and the fix; nothing is written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests import modelfixtures
from tests.conftest import write_job

BASE = """\
name: t
trainer: {trainer}
task: {task}
models:
  root: ../models
  ckpt_dir: {ckpt}
  dit: {dit}
datasets:
  - path: data/clips
"""
T2V = dict(task="t2v-1.3B", ckpt="Wan2.1-T2V-1.3B", dit="wan2.1_t2v_1.3B_bf16.safetensors")
I2V = dict(task="i2v-14B-480P", ckpt="Wan2.1-I2V-14B-480P", dit="wan2.1_i2v_480p_14B_bf16.safetensors")


def job_text(trainer: str = "musubi", extra: str = "", **fields: str) -> str:
    return BASE.format(trainer=trainer, **{**T2V, **fields}) + extra


def assert_refused(cli, workspace: Path, text: str, *expected: str, line: int | None = None) -> str:
    job = write_job(workspace / "examples", text)
    before = hashlib.sha256(job.read_bytes()).hexdigest()
    out = workspace / "rendered"
    code, stdout, stderr = cli("render", job, "--out", out)
    assert code == 2, stderr
    for piece in expected:
        assert piece in stderr, f"{piece!r} not in {stderr!r}"
    assert "Fix:" in stderr
    if line is not None:
        assert f"{job}:{line}:" in stderr
    assert not out.exists(), "a refused job must write nothing"
    assert not list(out.parent.glob(".rendered.*")), "no staging folder left behind"
    assert hashlib.sha256(job.read_bytes()).hexdigest() == before
    return stderr


def test_a_good_job_renders(cli, workspace):
    job = write_job(workspace / "examples", job_text())
    code, stdout, stderr = cli("render", job, "--out", workspace / "r")
    assert code == 0, stderr
    assert (workspace / "r" / "musubi_dataset.toml").is_file()


# --- schema: syntax, unknown keys, types ---------------------------------------------------------


def test_yaml_syntax_error_gives_file_and_line(cli, workspace):
    assert_refused(cli, workspace, job_text() + "lora: {rank: 32\n", "is not valid YAML", line=11)


def test_unknown_key_gives_line_and_key_path(cli, workspace):
    text = job_text(extra="lora:\n  rank: 16\n  alpah: 16\n")
    assert_refused(cli, workspace, text, "lora.alpah", "unknown key", line=12)


def test_wrong_type_gives_key_path(cli, workspace):
    text = job_text(extra="schedule:\n  epochs: many\n")
    assert_refused(cli, workspace, text, "schedule.epochs", "valid integer", line=11)


def test_unknown_trainer(cli, workspace):
    assert_refused(cli, workspace, job_text(trainer="kohya"), "trainer", "'diffpipe' or 'musubi'", line=2)


def test_bad_resolution(cli, workspace):
    text = job_text().replace("  - path: data/clips\n", "  - path: data/clips\n    resolutions: [[832, 480, 3]]\n")
    assert_refused(cli, workspace, text, "datasets[0].resolutions[0]", "[width, height]", line=10)


def test_job_file_missing(cli, workspace):
    code, _, stderr = cli("validate", workspace / "nope.yaml")
    assert code == 2 and "does not exist (no job file there)" in stderr


# --- one test per trainer pitfall ------------------------------------------------------------------


def test_frames_not_4k_plus_1(cli, workspace):
    text = job_text().replace("  - path: data/clips\n", "  - path: data/clips\n    frames: [32, 81]\n")
    assert_refused(cli, workspace, text, "datasets[0].frames", "32 is not of the form 4k+1", "use 29 or 33", line=10)


def test_alpha_for_diffpipe(cli, workspace):
    text = job_text("diffpipe", extra="lora:\n  rank: 32\n  alpha: 16\n")
    assert_refused(cli, workspace, text, "lora.alpha", "NotImplementedError", "remove lora.alpha", line=12)


def test_alpha_equal_to_rank_is_fine_for_diffpipe(cli, workspace):
    job = write_job(workspace / "examples", job_text("diffpipe", extra="lora:\n  rank: 32\n  alpha: 32\n"))
    assert cli("validate", job)[0] == 0


def test_no_save_cadence(cli, workspace):
    text = job_text(extra="schedule:\n  save_every_epochs: null\n")
    assert_refused(cli, workspace, text, "schedule.save_every_epochs", "no save cadence", line=11)


def test_comfyui_fp8_scaled_dit(cli, workspace):
    modelfixtures.dit(workspace / "models" / "wan2.1_t2v_1.3B_fp8_scaled.safetensors", dtype="F8_E4M3", fp8_scaled=True)
    text = job_text(dit="wan2.1_t2v_1.3B_fp8_scaled.safetensors")
    assert_refused(cli, workspace, text, "models.dit", "fp8_scaled", "use the bf16 or fp16 DiT", line=7)


def test_i2v_with_image_only_frames(cli, workspace):
    text = job_text(**I2V).replace("  - path: data/clips\n", "  - path: data/clips\n    frames: [1]\n")
    assert_refused(cli, workspace, text, "datasets[0].frames", "need videos for I2V", line=10)


def test_i2v_with_a_folder_of_images(cli, workspace):
    images = workspace / "examples" / "data" / "stills"
    images.mkdir()
    (images / "a.png").write_bytes((workspace / "examples/data/mixed/still1.png").read_bytes())
    text = job_text(**I2V).replace("data/clips", "data/stills")
    assert_refused(cli, workspace, text, "datasets[0].path", "trains on videos, and this folder has none", "folder of video clips", line=9)


def test_musubi_i2v_without_official_clip(cli, workspace):
    modelfixtures.write_safetensors_header(workspace / "models" / "clip_vision_h.safetensors", {})
    text = job_text(**I2V).replace("datasets:", "  clip: clip_vision_h.safetensors\ndatasets:")
    assert_refused(cli, workspace, text, "models.clip", "clip_vision_h.safetensors", "#152", line=8)


def test_musubi_with_comfyui_t5(cli, workspace):
    modelfixtures.write_safetensors_header(workspace / "models" / "umt5_xxl_fp16.safetensors", {})
    text = job_text().replace("datasets:", "  t5: umt5_xxl_fp16.safetensors\ndatasets:")
    assert_refused(cli, workspace, text, "models.t5", "ComfyUI/Hugging Face text encoder", "models_t5_umt5-xxl-enc-bf16.pth", line=8)


def test_musubi_accepts_a_wan_native_t5_safetensors(cli, workspace):
    modelfixtures.write_safetensors_header(workspace / "models" / "t5_wan.safetensors", {"token_embedding.weight": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 0]}})
    job = write_job(workspace / "examples", job_text().replace("datasets:", "  t5: t5_wan.safetensors\ndatasets:"))
    assert cli("validate", job)[0] == 0


def test_dit_dtype_does_not_match_mixed_precision(cli, workspace):
    modelfixtures.dit(workspace / "models" / "wan2.1_t2v_1.3B_fp16.safetensors", dtype="F16")
    text = job_text(dit="wan2.1_t2v_1.3B_fp16.safetensors")
    assert_refused(cli, workspace, text, "memory.dtype", "stores float16 weights", "set memory.dtype: float16", line=1)


def test_dit_of_the_wrong_size(cli, workspace):
    text = job_text(dit="wan2.1_t2v_14B_bf16.safetensors")
    assert_refused(cli, workspace, text, "models.dit", "Wan2.1-14B DiT but task is t2v-1.3B", line=7)


@pytest.mark.parametrize("trainer,limit", [("diffpipe", 28), ("musubi", 29)])
def test_blocks_to_swap_over_the_limit(cli, workspace, trainer, limit):
    text = job_text(trainer, extra=f"memory:\n  blocks_to_swap: {limit + 1}\n")
    assert_refused(cli, workspace, text, "memory.blocks_to_swap", f"use at most {limit}", line=11)


def test_blocks_to_swap_at_the_limit_is_fine(cli, workspace):
    job = write_job(workspace / "examples", job_text(extra="memory:\n  blocks_to_swap: 29\n"))
    assert cli("validate", job)[0] == 0


def test_more_than_three_diffpipe_resolutions(cli, workspace):
    text = job_text("diffpipe").replace("  - path: data/clips\n", "  - path: data/clips\n    resolutions: [256, 384, 512, 640]\n")
    assert_refused(cli, workspace, text, "datasets[0].resolutions", "more than 3", line=10)


def test_colliding_stems_in_one_musubi_dataset(cli, workspace):
    clips = workspace / "examples" / "data" / "clips"
    (clips / "clip1.mov").write_bytes((clips / "clip1.mp4").read_bytes())
    assert_refused(cli, workspace, job_text(), "datasets[0].path", "clip1.mov, clip1.mp4 share the stem 'clip1'", "rename", line=9)


def test_a_video_and_an_image_may_share_a_stem_for_musubi(cli, workspace):
    # runner gives a mixed folder's images and videos separate musubi cache folders, so they cannot collide
    clips = workspace / "examples" / "data" / "clips"
    (clips / "clip1.png").write_bytes((workspace / "examples/data/mixed/still1.png").read_bytes())
    assert cli("validate", write_job(workspace / "examples", job_text()))[0] == 0


def test_fps_and_frames_that_drop_a_video_out_of_every_bucket(cli, workspace, tmp_path):
    # the seed's case: 57 frames at 30 fps are 30 frames at 16 fps, shorter than the 33-frame bucket
    from runner.data.synth import write_caption, write_video

    write_caption(write_video(workspace / "examples" / "data" / "clips" / "seed.mp4", frames=57, fps=30))
    text = job_text("diffpipe").replace("  - path: data/clips\n", "  - path: data/clips\n    frames: [33]\n")
    assert_refused(cli, workspace, text, "datasets[0].path", "seed.mp4", "57 frames at 30 fps = 30 frames at 16 fps", "smaller 4k+1", line=9)


@pytest.mark.parametrize("missing", ["config.json", "Wan2.1_VAE.pth", "google/umt5-xxl"])
def test_diffpipe_ckpt_dir_lacking_a_file(cli, workspace, missing):
    import shutil

    target = workspace / "models" / "Wan2.1-T2V-1.3B" / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert_refused(cli, workspace, job_text("diffpipe"), "models.ckpt_dir", f"lacks {missing}", "runner download", line=6)


def test_musubi_with_checkpoint_minutes(cli, workspace):
    text = job_text(extra="schedule:\n  checkpoint_every_minutes: 60\n")
    assert_refused(cli, workspace, text, "schedule.checkpoint_every_minutes", "checkpoint_every_epochs", line=11)


@pytest.mark.parametrize(
    "trainer,name,expected",
    [
        ("musubi", "AdamW8bitKahan", "optimizer.type: adamw8bit"),  # the 24 GB diffusion-pipe example switched to musubi
        ("musubi", "adamw_optimi", "optimizer.type: adamw ("),
        ("musubi", "automagic", "musubi has no Automagic"),
        ("musubi", "Lion", "a torch.optim class"),
        ("diffpipe", "torch.optim.AdamW", "adamw8bitkahan"),
        ("diffpipe", "adafactor", "optimizer.type: AdaFactor"),
    ],
)
def test_optimizer_the_trainer_cannot_load(cli, workspace, trainer, name, expected):
    text = job_text(trainer, extra=f"optimizer:\n  type: {name}\n")
    assert_refused(cli, workspace, text, "optimizer.type", f"'{name}'", expected, line=11)


@pytest.mark.parametrize("trainer,name", [("musubi", "adamw8bit"), ("musubi", "sgd"), ("musubi", "bitsandbytes.optim.Lion8bit"),
                                          ("diffpipe", "AdamW8bitKahan"), ("diffpipe", "adamw8bit"), ("diffpipe", "Prodigy")])
def test_optimizer_names_each_trainer_loads(cli, workspace, trainer, name):
    assert cli("validate", write_job(workspace / "examples", job_text(trainer, extra=f"optimizer:\n  type: {name}\n")))[0] == 0


def test_musubi_with_both_epochs_and_max_steps(cli, workspace):
    text = job_text(extra="schedule:\n  epochs: 4\n  max_steps: 300\n")
    assert_refused(cli, workspace, text, "schedule.max_steps", "whichever comes first", "only one of", line=12)


def test_diffpipe_with_both_epochs_and_max_steps_stops_at_the_first(cli, workspace):
    assert cli("validate", write_job(workspace / "examples", job_text("diffpipe", extra="schedule:\n  epochs: 4\n  max_steps: 300\n")))[0] == 0


@pytest.mark.parametrize("schedule,saves", [("  checkpoint_every_epochs: 4\n", "every 1 epochs"),
                                            ("  checkpoint_every_epochs: 1\n  save_every_steps: 50\n", "every 50 steps")])
def test_musubi_checkpoints_only_with_each_save(cli, workspace, schedule, saves):
    text = job_text(extra="schedule:\n" + schedule)
    assert_refused(cli, workspace, text, "schedule.checkpoint_every_epochs", saves, "equal to save_every_epochs", line=11)


def test_musubi_checkpoint_at_each_epoch_save_is_fine(cli, workspace):
    text = job_text(extra="schedule:\n  save_every_epochs: 2\n  checkpoint_every_epochs: 2\n")
    assert cli("validate", write_job(workspace / "examples", text))[0] == 0


def test_diffpipe_swaps_blocks_with_several_gpus(cli, workspace):
    # runner renders pipeline_stages = 1, all that diffusion-pipe's block swap asks for
    text = job_text("diffpipe", extra="gpus: 2\nmemory:\n  blocks_to_swap: 20\n")
    assert cli("validate", write_job(workspace / "examples", text))[0] == 0


def test_dataset_folder_missing(cli, workspace):
    assert_refused(cli, workspace, job_text().replace("data/clips", "data/nothing"), "datasets[0].path", "does not exist", line=9)


def test_every_problem_is_reported_at_once(cli, workspace):
    text = job_text("diffpipe", extra="lora:\n  alpha: 8\nmemory:\n  blocks_to_swap: 40\n")
    stderr = assert_refused(cli, workspace, text, "lora.alpha", "memory.blocks_to_swap")
    assert stderr.count("Fix:") == 2


def test_a_job_cannot_set_runners_cache_switch(cli, workspace):
    # images/run_plan.py skips the caching steps when it is set: a job that set it would train on stale caches
    assert_refused(cli, workspace, job_text(extra="env:\n  RUNNER_CACHE_FRESH: '1'\n"), "env.RUNNER_CACHE_FRESH", "is runner's own", line=11)
