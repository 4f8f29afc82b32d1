"""Resume and no overwrites (issue 11 item 1): a job whose output folder holds an earlier run's LoRAs or
checkpoints is refused without --resume or --fresh; --resume continues the latest run from its latest checkpoint
with the counters it had reached (musubi's saves named after the right epoch); --fresh keeps every earlier file.
Runs go through the stand-in trainers (tests/standin/) on this machine, as tests/test_standin.py does."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

from runner.job import render
from runner.job.resolve import here
from runner.trainers.resolved import Earlier
from tests import standin_harness as harness
from tests.test_standin import st

pytest.importorskip("av")

MUSUBI_JOB = "t2v-1.3B-musubi"  # ball-1p3b: 3 clips, 16 epochs of 3 steps, a LoRA and a state every epoch
DIFFPIPE_JOB = "t2v-1.3B-diffpipe"


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setenv("RUNNER_GPUS", "none")  # the stand-ins need none; the refusals come before any container


def tree(folder: Path) -> dict[str, str]:
    """Every file under folder → its sha256 (what a run must leave as it was)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_job(workspace: Path, name: str, earlier: Earlier, env: dict | None = None, tag: str = "run"):
    """Resolve the example job here as `runner train` does (with `earlier`), render it and run its plan."""
    r = render.load_checked(workspace / "examples" / f"{name}.yaml", here(), earlier=earlier)
    plan = dataclasses.replace(render.trainer_plan(r, workspace / tag), facts=render.facts(r))  # as launch records it
    render.write(plan, workspace / tag)
    host_plan = harness.host_plan(workspace / tag, workspace / f"{tag}-host")
    return r, host_plan, harness.run_plan(workspace / f"{tag}-host", env)


def output(workspace: Path, name: str) -> Path:
    return workspace / "examples" / "outputs" / {MUSUBI_JOB: "ball-1p3b", DIFFPIPE_JOB: "ball-1p3b-dp"}[name]


def test_second_train_without_resume_or_fresh_exits_2_and_touches_nothing(workspace: Path, cli):
    _, _, first = run_job(workspace, MUSUBI_JOB, Earlier.refuse, {"STANDIN_FAIL_AT_STEP": "8"})
    assert first.returncode != 0
    out = output(workspace, MUSUBI_JOB)
    before = tree(workspace)
    code, stdout, stderr = cli("train", str(workspace / "examples" / f"{MUSUBI_JOB}.yaml"))
    assert code == 2, stdout + stderr
    assert str(out) in stderr and "ball-1p3b-000002-state" in stderr
    assert "runner resume" in stderr and "--fresh" in stderr
    assert tree(workspace) == before


def test_resume_with_nothing_earlier_exits_2(workspace: Path, cli):
    code, stdout, stderr = cli("resume", str(workspace / "examples" / f"{MUSUBI_JOB}.yaml"))
    assert code == 2 and "nothing to resume" in stderr, stdout + stderr


def test_train_refuses_resume_with_fresh(workspace: Path, cli):
    code, _, stderr = cli("train", str(workspace / "examples" / f"{MUSUBI_JOB}.yaml"), "--resume", "--fresh")
    assert code == 2 and "--resume and --fresh" in stderr


def test_musubi_resume_counts_on_and_overwrites_nothing(workspace: Path):
    _, _, first = run_job(workspace, MUSUBI_JOB, Earlier.refuse, {"STANDIN_FAIL_AT_STEP": "20"})
    assert first.returncode != 0  # died in epoch 7, after the saves of epochs 1..6
    out = output(workspace, MUSUBI_JOB)
    earlier = tree(out)
    assert "ball-1p3b-000006.safetensors" in earlier and "ball-1p3b-000007.safetensors" not in earlier

    r, plan, second = run_job(workspace, MUSUBI_JOB, Earlier.resume, tag="resumed")
    assert second.returncode == 0, second.stdout + second.stderr
    assert (r.start.checkpoint, r.start.epoch, r.start.step) == ("ball-1p3b-000006-state", 6, 18)
    train = plan["steps"][-1]["argv"]
    assert train[train.index("--max_train_epochs") + 1] == "10" and train[train.index("--resume") + 1] == str(out / "ball-1p3b-000006-state")
    assert "resume training from local state" in second.stdout + second.stderr
    files = {p.name for p in out.iterdir()}
    assert {f"ball-1p3b-{e:06d}.safetensors" for e in range(1, 16)} <= files and "ball-1p3b.safetensors" in files
    assert {f"ball-1p3b-{e:06d}-state" for e in range(1, 16)} <= files
    _, meta = st(out / "ball-1p3b-000010.safetensors")
    assert (meta["ss_epoch"], meta["ss_steps"]) == ("10", "30")  # the run's own counters, not the resumed run's 4 and 12
    _, meta = st(out / "ball-1p3b.safetensors")
    assert (meta["ss_epoch"], meta["ss_steps"]) == ("16", "48")
    assert {k: v for k, v in tree(out).items() if k in earlier} == earlier  # nothing of the first run overwritten
    recorded = json.loads((workspace / "resumed" / "plan.json").read_text())
    assert recorded["facts"]["start"] == {"run_folder": "", "checkpoint": "ball-1p3b-000006-state", "epoch": 6, "step": 18}
    script = recorded["steps"][-1]["argv"].index("/job/resume_counters.py")
    assert recorded["steps"][-1]["argv"][script + 1:script + 4] == ["6", "18", "src/musubi_tuner/wan_train_network.py"]


def test_musubi_resume_refuses_loras_newer_than_the_state(workspace: Path, cli):
    run_job(workspace, MUSUBI_JOB, Earlier.refuse, {"STANDIN_FAIL_AT_STEP": "8"})
    out = output(workspace, MUSUBI_JOB)
    (out / "ball-1p3b-000002.safetensors").rename(out / "ball-1p3b-000009.safetensors")  # a LoRA without its state
    before = tree(workspace)
    code, stdout, stderr = cli("resume", str(workspace / "examples" / f"{MUSUBI_JOB}.yaml"))
    assert code == 2 and "ball-1p3b-000009.safetensors" in stderr and "move them out" in stderr, stdout + stderr
    assert tree(workspace) == before


def test_musubi_fresh_keeps_earlier_files(workspace: Path):
    run_job(workspace, MUSUBI_JOB, Earlier.refuse, {"STANDIN_FAIL_AT_STEP": "8"})
    out = output(workspace, MUSUBI_JOB)
    earlier = tree(out)
    r, plan, fresh = run_job(workspace, MUSUBI_JOB, Earlier.fresh, tag="fresh")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert re.fullmatch(r"\d{8}_\d{2}-\d{2}-\d{2}", r.start.run_folder) and r.start.checkpoint is None
    assert {k: v for k, v in tree(out).items() if k in earlier} == earlier
    assert (out / r.start.run_folder / "ball-1p3b.safetensors").is_file()


def test_diffpipe_resume_continues_its_run_folder(workspace: Path):
    _, _, first = run_job(workspace, DIFFPIPE_JOB, Earlier.refuse, {"STANDIN_FAIL_AT_STEP": "8"})
    assert first.returncode != 0
    out = output(workspace, DIFFPIPE_JOB)
    (run,) = [p.name for p in out.iterdir() if p.is_dir()]
    earlier = tree(out)
    r, plan, second = run_job(workspace, DIFFPIPE_JOB, Earlier.resume, tag="resumed")
    assert second.returncode == 0, second.stdout + second.stderr
    assert r.start.checkpoint == run and r.start.step == 6
    train = plan["steps"][-1]["argv"]
    assert train[train.index("--resume_from_checkpoint") + 1] == run  # the run folder by name, never the bare flag
    assert "Resuming at epoch: 3, step: 7" in second.stdout
    assert [p.name for p in out.iterdir() if p.is_dir()] == [run]  # the same run folder, no new one
    assert {k: v for k, v in tree(out).items() if k in earlier and "/epoch" in k} == {k: v for k, v in earlier.items() if "/epoch" in k}



def test_diffpipe_resume_refuses_an_epoch_lora_saved_after_the_checkpoint(workspace: Path, cli):
    job = workspace / "examples" / f"{DIFFPIPE_JOB}.yaml"
    job.write_text(job.read_text() + "schedule:\n  save_every_epochs: 1\n  checkpoint_every_epochs: 2\n")
    _, _, first = run_job(workspace, DIFFPIPE_JOB, Earlier.refuse, {"STANDIN_FAIL_AT_STEP": "11"})  # 3 steps an epoch
    assert first.returncode != 0
    (run,) = [p.name for p in output(workspace, DIFFPIPE_JOB).iterdir() if p.is_dir()]
    assert (output(workspace, DIFFPIPE_JOB) / run / "latest").read_text() == "global_step6"
    before = tree(workspace)
    code, stdout, stderr = cli("resume", str(job))
    assert code == 2 and f"{run}/epoch3" in stderr and f"{run}/epoch2" not in stderr and "move them out" in stderr, stdout + stderr
    assert tree(workspace) == before


# ---------------------------------------------------------------- with the real Docker engine and the stand-in images


@pytest.mark.parametrize("how", ["docker kill", "runner stop"])
def test_resume_after_a_killed_or_stopped_container(workspace: Path, tmp_path: Path, how: str):
    import subprocess
    import time

    from tests.dockerfixtures import require_docker, runner, runner_env

    require_docker()
    env = runner_env(tmp_path)
    built = runner(["build", "musubi"], env)  # unchanged stand-in pins: the image is reused
    assert built.returncode == 0, built.stdout + built.stderr
    job = workspace / "examples" / f"{MUSUBI_JOB}.yaml"
    text = job.read_text()
    job.write_text(text + "env:\n  STANDIN_STEP_SECONDS: '0.3'\n")
    started = runner(["train", job, "-d"], env)
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = re.search(r"started (\S+) on", started.stdout)[1]
    out = output(workspace, MUSUBI_JOB)
    deadline = time.monotonic() + 120
    while not (out / "ball-1p3b-000002-state").is_dir() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert (out / "ball-1p3b-000002-state").is_dir(), runner(["logs", run_id], env).stdout
    if how == "docker kill":
        subprocess.run(["docker", "kill", f"runner-{run_id}"], check=True, capture_output=True)
    else:
        assert runner(["stop", run_id], env).returncode == 0
    earlier = tree(out)
    job.write_text(text)  # the rest at full speed
    refused = runner(["train", job], env)
    assert refused.returncode == 2 and "runner resume" in refused.stderr, refused.stdout + refused.stderr
    resumed = runner(["resume", job], env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from ball-1p3b-0000" in resumed.stdout
    assert "ball-1p3b.safetensors" in {p.name for p in out.iterdir()}
    assert {f"ball-1p3b-{e:06d}.safetensors" for e in range(1, 16)} <= {p.name for p in out.iterdir()}
    _, meta = st(out / "ball-1p3b.safetensors")
    assert (meta["ss_epoch"], meta["ss_steps"]) == ("16", "48")
    assert {k: v for k, v in tree(out).items() if k in earlier and not k.startswith("runner-")} == {
        k: v for k, v in earlier.items() if not k.startswith("runner-")}


def test_render_resume_previews_what_runner_resume_runs(workspace: Path, cli):
    """`runner render --resume` writes the plan `runner resume` would run (the wrapper, --resume DIR) and touches
    no earlier file; without --resume render looks at no earlier run."""
    _, _, first = run_job(workspace, MUSUBI_JOB, Earlier.refuse, {"STANDIN_FAIL_AT_STEP": "8"})
    assert first.returncode != 0
    job, out = workspace / "examples" / f"{MUSUBI_JOB}.yaml", output(workspace, MUSUBI_JOB)
    before = tree(out)
    code, stdout, stderr = cli("render", str(job), "--out", str(workspace / "preview"), "--resume")
    assert code == 0, stdout + stderr
    train = (workspace / "preview" / "command.sh").read_text().splitlines()[-1]
    assert "/job/resume_counters.py 2 6 " in train and "--resume /outputs/ball-1p3b/ball-1p3b-000002-state" in train
    assert (workspace / "preview" / "resume_counters.py").is_file() and tree(out) == before
    code, _, _ = cli("render", str(job), "--out", str(workspace / "plain"))
    assert code == 0 and "--resume" not in (workspace / "plain" / "command.sh").read_text()
    code, _, stderr = cli("render", str(job), "--out", str(workspace / "both"), "--resume", "--fresh")
    assert code == 2 and "--resume and --fresh" in stderr and not (workspace / "both").exists()
