"""The CI stand-in trainers (tests/standin/) run on this machine, without Docker: every example job renders,
every plan step runs, and the outputs have the upstream layout. Plus contract tests of the stand-ins
(flags, dataset rules, signal files, resume). STANDIN_STEP_SECONDS=0 keeps them fast."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.job import render
from tests import modelfixtures
from tests import standin_harness as harness

pytest.importorskip("av")

MUSUBI = harness.TRAINER_DIRS["musubi"]
DIFFPIPE = harness.TRAINER_DIRS["diffpipe"]
BANNER = re.compile(r"STAND-IN for .+ \(no GPU, no model math\): runner's CI test double")


def rendered(workspace: Path, name: str, edit=None) -> tuple[dict, Path]:
    job = workspace / "examples" / f"{name}.yaml"
    if edit:
        job.write_text(edit(job.read_text()))
    render.render(job, workspace / "rendered")
    plan = harness.host_plan(workspace / "rendered", workspace / "host")
    return plan, workspace / "host"


def st(path: Path) -> tuple[dict, dict]:
    sys.path.insert(0, str(MUSUBI / "src"))
    try:
        from musubi_tuner._standin import read_safetensors_header
    finally:
        sys.path.remove(str(MUSUBI / "src"))
    return read_safetensors_header(path)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def scalars(folder: Path) -> dict[str, list[int]]:
    """tag → steps of the scalars in the TensorBoard event files in `folder`, read with tensorboard's own loader."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    found: dict[str, list[int]] = {}
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(f)).Load():
            for value in event.summary.value:
                found.setdefault(value.tag, []).append(event.step)
    return found


# ---------------------------------------------------------------- every example, end to end


def test_musubi_t2v_example_runs_with_upstream_layout(workspace: Path):
    plan, host = rendered(workspace, "t2v-1.3B-musubi")
    r = harness.run_plan(host)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(BANNER.findall(r.stdout)) == 4  # two cache scripts, accelerate, the trainer
    cache = workspace / "examples" / "cache" / "ball-1p3b" / "musubi" / "0-clips" / "832x480-video"
    # clip2 is 49 frames: `head` cuts one 33-frame clip from the start
    assert names(cache) == [f"clip{i}_{s}" for i in (1, 2, 3) for s in ("00000-033_0800x0496_wan.safetensors", "wan_te.safetensors")]  # the bucket, as the real musubi names them
    out = Path(plan["output_dir"])
    saves = [f"ball-1p3b-{e:06d}{s}" for e in range(1, 16) for s in (".safetensors", "-state")]  # runner always renders --save_state
    assert names(out) == sorted(saves + ["ball-1p3b.safetensors", "ball-1p3b-state", "logs"])
    (run,) = (out / "logs").iterdir()  # accelerate's tracker: <logging_dir>/<%Y%m%d%H%M%S>/network_train/events.*
    assert re.fullmatch(r"\d{14}", run.name) and names(run) == ["network_train"]
    curves = scalars(run / "network_train")
    assert curves["loss/current"] == list(range(1, 49)) and curves["loss/epoch"] == list(range(1, 17)) and "lr/unet" in curves
    tensors, meta = st(out / "ball-1p3b.safetensors")
    assert meta["ss_network_dim"] == "32" and meta["ss_network_alpha"] == "32.0" and meta["ss_steps"] == "48"
    assert "lora_unet_blocks_29_cross_attn_o.lora_up.weight" in tensors and "lora_unet_blocks_30_self_attn_q.alpha" not in tensors
    assert "steps: 100%|##########| 48/48" in r.stderr and "epoch 16/16" in r.stdout


def test_musubi_mixed_example_caches_images_and_videos_per_resolution(workspace: Path):
    plan, host = rendered(workspace, "mixed-image-video-musubi")
    r = harness.run_plan(host)
    assert r.returncode == 0, r.stdout + r.stderr
    cache = workspace / "examples" / "cache" / "beach-mixed" / "musubi"
    assert names(cache / "0-mixed" / "480x480-image") == sorted(
        ["still1_0160x0096_wan.safetensors", "still1_wan_te.safetensors", "still2_0160x0096_wan.safetensors", "still2_wan_te.safetensors"]
    )
    assert names(cache / "0-mixed" / "832x480-video") == ["walk_00000-033_0800x0496_wan.safetensors", "walk_wan_te.safetensors"]
    # (2 images + 1 video) x 2 resolutions x 2 repeats = 12 items, 16 epochs
    assert "total optimization steps / 学習ステップ数: 192" in r.stdout
    assert (Path(plan["output_dir"]) / "beach-mixed.safetensors").is_file()


def test_musubi_i2v_example_runs_and_writes_states(workspace: Path):
    plan, host = rendered(workspace, "i2v-14B-480P-musubi")
    argv = plan["steps"][2]["argv"]
    assert argv[argv.index("--task") + 1] == "i2v-14B", "musubi's --task has one I2V config for 480P and 720P"
    r = harness.run_plan(host)
    assert r.returncode == 0, r.stdout + r.stderr
    latent = workspace / "examples" / "cache" / "shore-i2v" / "musubi" / "0-clips" / "832x480-video" / "clip1_00000-033_0800x0496_wan.safetensors"
    # 160x96 in an 832x480 area: bucket 800x496 -> latent 9x62x100
    assert sorted(st(latent)[0]) == ["clip_fp16", "latents_9x62x100_bf16", "latents_image_9x62x100_bf16"]
    out = Path(plan["output_dir"])
    expected = [f"shore-i2v-{e:06d}{s}" for e in range(2, 20, 2) for s in (".safetensors", "-state")] + ["shore-i2v.safetensors", "shore-i2v-state", "logs"]
    assert names(out) == sorted(expected)
    assert names(out / "shore-i2v-state") == ["model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin"]
    assert "lora_unet_blocks_39_cross_attn_k_img.lora_down.weight" in st(out / "shore-i2v.safetensors")[0]


@pytest.mark.parametrize("name", ["t2v-1.3B-diffpipe", "i2v-14B-480P-diffpipe", "t2v-14B-24gb-diffpipe"])
def test_diffpipe_examples_run_with_upstream_layout(workspace: Path, name: str):
    plan, host = rendered(workspace, name)
    r = harness.run_plan(host)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TRAINING COMPLETE!" in r.stdout and "--local_rank=0" in r.stdout and "MASTER_PORT=29500" in r.stdout
    assert "is being skipped" not in r.stdout, "every example clip fits a frame bucket"
    model = "wan_i2v" if "i2v" in name else "wan"
    cache = workspace / "examples" / "data" / "clips" / "cache" / model
    assert (cache / "metadata" / "metadata.json").is_file() and list(cache.glob("cache_*/latents/metadata.db"))
    (run,) = Path(plan["output_dir"]).iterdir()
    assert re.fullmatch(r"\d{8}_\d{2}-\d{2}-\d{2}", run.name)
    config = (host / "diffpipe.toml").read_text()
    epochs = int(re.search(r"^epochs = (\d+)", config, re.M).group(1))
    every = int(re.search(r"^save_every_n_epochs = (\d+)", config, re.M).group(1))
    steps = epochs * 3  # three clips, batch 1
    # runner renders a checkpoint with every epoch LoRA (checkpoint_every_n_epochs), so a run can be resumed
    cadence = re.search(r"^checkpoint_every_n_epochs = (\d+)", config, re.M)
    checkpoints = {f"global_step{e * 3}" for e in range(every, epochs + 1, every) if cadence} | {f"global_step{steps}"}
    events = [p.name for p in run.glob("events.out.tfevents.*")]
    assert names(run) == sorted(["dataset.toml", "diffpipe.toml", "latest", *checkpoints, *events] + [f"epoch{e}" for e in range(every, epochs + 1, every)])
    curves = scalars(run)  # train.py's SummaryWriter(log_dir=run_dir)
    assert len(events) == 1 and curves["train/loss"] == list(range(1, steps + 1)) and curves["train/epoch_loss"] == list(range(1, epochs + 1))
    assert (run / "latest").read_text() == f"global_step{steps}"
    layers = 40 if "14B" in name else 30
    assert names(run / f"global_step{steps}") == sorted(["mp_rank_00_model_states.pt"] + [f"layer_{i:02d}-model_states.pt" for i in range(layers + 2)])
    final = run / f"epoch{epochs}"
    assert names(final) == ["adapter_config.json", "adapter_model.safetensors", "diffpipe.toml"]
    tensors, meta = st(final / "adapter_model.safetensors")
    assert meta == {"format": "pt"} and f"diffusion_model.blocks.{layers - 1}.ffn.2.lora_B.weight" in tensors
    assert ("diffusion_model.blocks.0.cross_attn.k_img.lora_A.weight" in tensors) == ("i2v" in name)
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 32


# ---------------------------------------------------------------- contract points


def test_unknown_flags_fail_like_argparse(tmp_path: Path):
    r = harness.run(["python", "src/musubi_tuner/wan_train_network.py", "--dit_dtype", "bfloat16"], MUSUBI)
    assert r.returncode == 2 and "unrecognized arguments: --dit_dtype" in r.stderr
    r = harness.run(["python", "train.py", "--config", "x.toml", "--frobnicate"], DIFFPIPE)
    assert r.returncode == 2 and "unrecognized arguments: --frobnicate" in r.stderr
    r = harness.run(["accelerate", "launch", "--num_proc", "1", "x.py"], MUSUBI)
    assert r.returncode == 2  # accelerate does not take abbreviations


def test_musubi_dataset_config_is_strict(workspace: Path):
    plan, host = rendered(workspace, "t2v-1.3B-musubi")
    toml = host / "musubi_dataset.toml"
    step = plan["steps"][0]["argv"]
    text = toml.read_text()
    toml.write_text(text.replace('frame_extraction = "head"', 'frame_extraction = "head"\nsource_fps = 30'))
    r = harness.run(step, MUSUBI)
    assert r.returncode == 1 and "expected float for dictionary value @ data['datasets'][0]['source_fps']" in r.stderr
    toml.write_text(text.replace('frame_extraction = "head"', 'frame_extraction = "head"\nshuffle = true'))
    assert "extra keys not allowed" in harness.run(step, MUSUBI).stderr
    # source_fps 30.0 drops frames of every video towards 16 fps: clip1 33 -> 17 frames and clip2 49 -> 26 (no clip),
    # clip3 81 -> 43; target 32 is rounded down to 29 with a warning
    toml.write_text(text.replace('frame_extraction = "head"', 'frame_extraction = "head"\nsource_fps = 30.0').replace("    33,", "    32,"))
    r = harness.run(step, MUSUBI)
    assert r.returncode == 0, r.stderr
    assert "target_frames are rounded to [29]" in r.stderr
    cache = Path(re.search(r'cache_directory = "([^"]+)"', toml.read_text()).group(1))
    assert sorted(p.name for p in cache.glob("*_wan.safetensors")) == ["clip3_00000-029_0800x0496_wan.safetensors"]


def test_musubi_training_checks(workspace: Path):
    plan, host = rendered(workspace, "t2v-1.3B-musubi")
    train = plan["steps"][2]["argv"]
    script = train.index("src/musubi_tuner/wan_train_network.py")
    base = ["python"] + train[script:]

    def run(args):
        return harness.run(args, MUSUBI)

    r = run(base)
    assert r.returncode == 1 and "No training items found" in r.stderr  # nothing cached yet
    no_mp = base[:]
    i = no_mp.index("--mixed_precision")
    del no_mp[i : i + 2]
    assert "DiT weights are in bf16, mixed precision must be bf16 or no" in run(no_mp).stderr
    assert "fp8_scaled requires fp8_base" in run(base + ["--fp8_scaled"]).stderr
    assert "SageAttention doesn't support training" in run(base + ["--sage_attn"]).stderr
    fp8 = modelfixtures.dit(workspace / "models" / "fp8.safetensors", "1.3B", dtype="F8_E4M3")
    r = run(base + ["--dit", str(fp8), "--fp8_base", "--fp8_scaled"])
    assert "already in fp8 format" in r.stderr


def test_musubi_train_rules_after_caching(workspace: Path):
    plan, host = rendered(workspace, "t2v-1.3B-musubi")
    for s in plan["steps"][:2]:
        assert harness.run(s["argv"], MUSUBI).returncode == 0
    train = plan["steps"][2]["argv"]
    base = ["python"] + train[train.index("src/musubi_tuner/wan_train_network.py") :]
    run = lambda extra: harness.run(base + extra, MUSUBI)  # noqa: E731
    assert "Cannot swap more than 29 blocks" in run(["--blocks_to_swap", "30"]).stderr
    assert "size mismatch" in run(["--dit", str(workspace / "models" / "wan2.1_t2v_14B_bf16.safetensors")]).stderr
    assert "constant does not require `num_warmup_steps`" in run(["--lr_scheduler", "constant", "--lr_warmup_steps", "5"]).stderr
    assert "has no attribute ''" in run(["--optimizer_type", ""]).stderr
    no_attn = [a for a in base if a != "--sdpa"]
    assert "either --sdpa" in harness.run(no_attn, MUSUBI).stderr
    # the official DiT: float32 shards, named by the first; musubi loads them all and keeps float32 without fp8
    shards = workspace / "models" / "official"
    first = modelfixtures.dit(shards / "diffusion_pytorch_model-00001-of-00002.safetensors", "1.3B", dtype="F32")
    assert "diffusion_pytorch_model-00002-of-00002.safetensors not found" in run(["--dit", str(first)]).stderr
    modelfixtures.write_safetensors_header(shards / "diffusion_pytorch_model-00002-of-00002.safetensors", {})
    r = run(["--dit", str(first), "--output_dir", str(shards / "out")])
    assert r.returncode == 0 and "00002-of-00002.safetensors']" in r.stderr, r.stderr
    out = Path(plan["output_dir"])
    r = run(["--max_train_epochs", "2", "--save_every_n_steps", "2", "--gradient_accumulation_steps", "2", "--save_state"])
    assert r.returncode == 0, r.stderr
    # 3 batches / accumulation 2 = 2 updates per epoch, 4 steps
    assert names(out) == sorted(["ball-1p3b-000001.safetensors", "ball-1p3b-000001-state", "ball-1p3b-step00000002.safetensors",
                                 "ball-1p3b-step00000002-state", "ball-1p3b-step00000004.safetensors", "ball-1p3b-step00000004-state",
                                 "ball-1p3b.safetensors", "ball-1p3b-state", "logs"])
    r = run(["--max_train_epochs", "1", "--resume", str(out / "ball-1p3b-state")])
    assert r.returncode == 0 and "resume training from local state" in r.stderr
    r = harness.run(base + ["--max_train_epochs", "1"], MUSUBI, {"STANDIN_FAIL_AT_STEP": "2", "STANDIN_NAN_AT_STEP": "1"})
    assert r.returncode == 1 and "avr_loss=nan" in r.stderr and "STANDIN_FAIL_AT_STEP=2" in r.stderr


def test_accelerate_passes_failure_as_exit_1(workspace: Path, tmp_path: Path):
    script = tmp_path / "boom.py"
    script.write_text("import os, sys\nprint(os.environ['ACCELERATE_MIXED_PRECISION'], os.environ['WORLD_SIZE'])\nsys.exit(3)\n")
    r = harness.run(["accelerate", "launch", "--num-processes", "2", "--mixed_precision", "bf16", "--multi_gpu", "--main_process_port", "29600", str(script)], tmp_path)
    assert r.returncode == 1 and "bf16 2" in r.stdout and "CalledProcessError" in r.stderr


def test_accelerate_takes_the_rendered_config_and_ignores_the_one_in_hf_home(workspace: Path, tmp_path: Path):
    _, host = rendered(workspace, "t2v-1.3B-musubi", lambda t: t + "gpus: 2\n")
    script = tmp_path / "show.py"
    script.write_text("import os\nprint('launched', os.environ['ACCELERATE_MIXED_PRECISION'], os.environ['WORLD_SIZE'], os.environ.get('MASTER_PORT'))\n")
    hf_home = tmp_path / "hf"
    (hf_home / "accelerate").mkdir(parents=True)
    # what `accelerate config` leaves in the user's cache, which runner mounts as HF_HOME
    (hf_home / "accelerate" / "default_config.yaml").write_text("distributed_type: 'NO'\nmixed_precision: fp16\nnum_processes: 1\n")
    launch = ["accelerate", "launch", "--num_cpu_threads_per_process", "1", str(script)]
    r = harness.run(launch[:2] + ["--config_file", str(host / "accelerate.yaml")] + launch[2:], tmp_path, {"HF_HOME": str(hf_home)})
    assert r.returncode == 0 and "launched bf16 2 29500" in r.stdout, r.stdout + r.stderr
    r = harness.run(launch, tmp_path, {"HF_HOME": str(hf_home)})
    assert r.returncode == 0 and "launched fp16 1" in r.stdout, "without --config_file the stray default config changes the launch"
    bad = tmp_path / "bad.yaml"
    bad.write_text((host / "accelerate.yaml").read_text() + "num_cpu_threads_per_process: 1\n")
    r = harness.run(launch[:2] + ["--config_file", str(bad)] + launch[2:], tmp_path)
    assert r.returncode == 1 and "had unknown keys (['num_cpu_threads_per_process'])" in r.stderr


def test_musubi_caching_steps_get_their_own_environment(workspace: Path):
    plan, host = rendered(workspace, "t2v-1.3B-musubi")
    plan["steps"][0]["argv"] = [sys.executable, "-c", "import os; print('offline', os.environ.get('HF_HUB_OFFLINE'))"]
    plan["steps"][1:] = [{**plan["steps"][0], "name": "after", "env": {}}]
    (host / "plan.json").write_text(json.dumps(plan))
    r = harness.run_plan(host)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "start: HF_HUB_OFFLINE=1 " in r.stdout and "\noffline 1\n" in r.stdout and "\noffline None\n" in r.stdout


def _diffpipe(workspace: Path, edit_toml=None, edit_dataset=None):
    plan, host = rendered(workspace, "t2v-1.3B-diffpipe")
    if edit_toml:
        (host / "diffpipe.toml").write_text(edit_toml((host / "diffpipe.toml").read_text()))
    if edit_dataset:
        (host / "dataset.toml").write_text(edit_dataset((host / "dataset.toml").read_text()))
    return plan, host, plan["steps"][0]["argv"]


def test_diffpipe_config_rules(workspace: Path):
    mixed = re.compile(r"^resolutions = \[.*?^\]", re.S | re.M)
    plan, host, argv = _diffpipe(workspace, edit_dataset=lambda t: mixed.sub("resolutions = [512, [624, 624]]", t))
    assert "Not a homogeneous array" in harness.run(argv, DIFFPIPE).stderr  # toml 0.10.2, as upstream parses it
    plan, host, argv = _diffpipe(workspace, edit_dataset=lambda t: t.replace("resolutions = [", "resolutions = [[256, 256], [320, 320], [384, 384],"))
    r = harness.run(argv, DIFFPIPE)
    assert r.returncode == 0 and "set a lot of resolutions" in r.stdout and "TRAINING COMPLETE!" not in r.stdout
    assert not Path(plan["output_dir"]).exists()
    r = harness.run(argv + ["--i_know_what_i_am_doing", "--cache_only"], DIFFPIPE)
    assert r.returncode == 0 and "[CACHE] Storing new fingerprint" in r.stdout and "TRAINING COMPLETE!" not in r.stdout
    r = harness.run(argv + ["--i_know_what_i_am_doing", "--cache_only"], DIFFPIPE)
    assert "[CACHE] Existing cache has fingerprint" in r.stdout and "Fingerprint changed" not in r.stdout
    plan, host, argv = _diffpipe(workspace, edit_toml=lambda t: t.replace('rank = 32', 'rank = 32\nalpha = 16'))
    assert "NotImplementedError: This script forces alpha=rank" in harness.run(argv, DIFFPIPE).stderr
    plan, host, argv = _diffpipe(workspace, edit_toml=lambda t: t.replace("save_every_n_epochs = 1\n", ""))
    assert "AssertionError" in harness.run(argv, DIFFPIPE).stderr
    plan, host, argv = _diffpipe(workspace, edit_toml=lambda t: t.replace("activation_checkpointing = true", "blocks_to_swap = 29"))
    assert "Cannot swap more than 28 blocks" in harness.run(argv, DIFFPIPE).stderr
    scaled = modelfixtures.dit(workspace / "models" / "scaled.safetensors", "1.3B", fp8_scaled=True)
    plan, host, argv = _diffpipe(workspace, edit_toml=lambda t: re.sub(r'transformer_path = ".*"', f'transformer_path = "{scaled}"', t))
    assert "fp8_scaled weights are not supported" in harness.run(argv, DIFFPIPE).stderr
    plan, host, argv = _diffpipe(workspace, edit_dataset=lambda t: t.replace("33,", "97,"))
    r = harness.run(argv, DIFFPIPE)
    assert r.returncode == 1 and "RuntimeError: Processed dataset was empty" in r.stderr


def test_diffpipe_save_quit_and_resume(workspace: Path):
    plan, host, argv = _diffpipe(workspace, edit_toml=lambda t: t.replace("epochs = 16", "epochs = 200"))
    p = subprocess.Popen(argv, cwd=DIFFPIPE, env=harness.env({"STANDIN_STEP_SECONDS": "0.01"}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Path(plan["output_dir"])
    deadline = time.monotonic() + 20
    while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    (run,) = out.iterdir()
    (run / "save_quit").write_text("")
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0, stderr
    assert "Manually quitting" in stdout and "TRAINING COMPLETE!" not in stdout and not (run / "save_quit").exists()
    tag = (run / "latest").read_text()
    saved = int(tag.removeprefix("global_step"))
    assert (run / tag / "mp_rank_00_model_states.pt").is_file() and saved < 600
    edited = (host / "diffpipe.toml").read_text().replace("epochs = 200", "epochs = 200\nmax_steps = %d" % (saved + 3))
    (host / "diffpipe.toml").write_text(edited)
    r = harness.run(argv + ["--resume_from_checkpoint"], DIFFPIPE)
    assert r.returncode == 0, r.stderr
    assert f"Resuming at epoch: {saved // 3 + 1}, step: {saved + 1}" in r.stdout
    assert (run / "latest").read_text() == f"global_step{saved + 3}" and (run / f"step{saved + 3}").is_dir()
    assert names(out) == [run.name]  # no new run folder


def test_diffpipe_sigterm_through_deepspeed_stops_the_trainer(workspace: Path):
    plan, host, argv = _diffpipe(workspace, edit_toml=lambda t: t.replace("epochs = 16", "epochs = 500"))
    p = subprocess.Popen(argv, cwd=DIFFPIPE, env=harness.env({"STANDIN_STEP_SECONDS": "0.01"}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = Path(plan["output_dir"])
    deadline = time.monotonic() + 20
    while not (out.exists() and any(out.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    stdout, _ = p.communicate(timeout=20)
    assert p.returncode == 1 and "TRAINING COMPLETE!" not in stdout


def test_standin_files_say_what_they_are():
    # one kit for both stand-ins: diffusion-pipe's is a link, which image builds copy as a file
    assert (DIFFPIPE / "utils" / "standin_kit.py").resolve() == (MUSUBI / "src" / "musubi_tuner" / "_standin.py").resolve()
    for f in [*MUSUBI.rglob("*.py"), *DIFFPIPE.rglob("*.py"), MUSUBI / "bin" / "accelerate", DIFFPIPE / "bin" / "deepspeed"]:
        head = f.read_text()[:400]
        assert "STAND-IN" in head or "stand-in" in head, f
    assert os.access(MUSUBI / "bin" / "accelerate", os.X_OK) and os.access(DIFFPIPE / "bin" / "deepspeed", os.X_OK)
    assert shutil.which("sh")
