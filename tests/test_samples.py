"""Sample videos: the job's samples: section, musubi's sampling flags and prompt file, and `runner sample` against the
real Docker engine with the stand-in images (musubi's wan_generate_video.py and convert_lora.py stood in: they write a
real mp4 of the requested frames, size and fps, and merge only LoRA keys in musubi's format, as upstream does)."""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path

import pytest

from runner.job import render
from runner.jobs import sample as sampling
from runner.trainers import musubi
from tests.conftest import write_job
from tests.test_docker import built  # noqa: F401 (fixture: both stand-in images built once per session)
from tests.test_remote import env, on_host, remote_models  # noqa: F401 (fixtures of the SSH test hosts)

PROMPTS = ["a red ball bouncing on grass", "a blue ball rolling down a ramp"]
SAMPLES = """samples:
  prompts: ["a red ball bouncing on grass", "a blue ball rolling down a ramp"]
  width: 320
  height: 192
  frames: 9
  steps: 4
"""


def _resolved(workspace: Path, example: str, extra: str):
    text = (workspace / "examples" / f"{example}.yaml").read_text() + extra
    return render.load_checked(write_job(workspace / "examples", text, "sampled.yaml"))


# --- the job and musubi's render ------------------------------------------------------------------------------


def test_musubi_samples_while_training_with_its_own_flags_and_prompt_file(workspace):
    r = _resolved(workspace, "t2v-1.3B-musubi", SAMPLES + "schedule: {epochs: 4, save_every_epochs: 2}\n")
    plan = musubi.render(r, 29500)
    train = plan.steps[-1]
    args = train.argv
    assert args[args.index("--sample_prompts") + 1] == "/job/sample_prompts.txt"
    assert args[args.index("--sample_every_n_epochs") + 1] == "2"  # each saved epoch, by default
    assert "--sample_every_n_steps" not in args and "--sample_at_first" not in args
    assert args[args.index("--vae") + 1].endswith("Wan2.1_VAE.pth") and args[args.index("--t5") + 1].endswith("models_t5_umt5-xxl-enc-bf16.pth")
    assert train.env == {"HF_HUB_OFFLINE": "1"}  # sampling loads umT5's tokenizer from the image's cache
    lines = plan.files["sample_prompts.txt"].splitlines()
    assert lines == [f"{p} --w 320 --h 192 --f 9 --d 42 --s 4 --l 5" for p in PROMPTS]


def test_no_prompts_or_not_during_training_renders_no_sampling(workspace):
    for extra in ("", SAMPLES + "  during_training: false\n"):
        plan = musubi.render(_resolved(workspace, "t2v-1.3B-musubi", extra), 29500)
        assert "sample_prompts.txt" not in plan.files
        assert not any(a.startswith("--sample") for a in plan.steps[-1].argv) and plan.steps[-1].env == {}


def test_explicit_cadence_and_at_first(workspace):
    extra = SAMPLES + "  every_steps: 50\n  at_first: true\n"
    args = musubi.render(_resolved(workspace, "t2v-1.3B-musubi", extra), 29500).steps[-1].argv
    assert args[args.index("--sample_every_n_steps") + 1] == "50" and "--sample_at_first" in args
    assert "--sample_every_n_epochs" not in args


def test_generate_argv_is_height_then_width_and_converts_diffpipe_keys(workspace):
    r = sampling.as_musubi(_resolved(workspace, "t2v-1.3B-diffpipe", SAMPLES))
    argv = musubi.generate_argv(r, "/outputs/x/l.safetensors", PROMPTS[0], "/outputs/x/samples/e/p")
    assert argv[argv.index("--video_size") + 1: argv.index("--video_size") + 3] == ["192", "320"]
    assert argv[argv.index("--video_length") + 1] == "9" and argv[argv.index("--fps") + 1] == "16"
    # diffusion-pipe's job loads ComfyUI's umT5; musubi's script needs the official .pth
    assert argv[argv.index("--t5") + 1].endswith("models_t5_umt5-xxl-enc-bf16.pth")
    assert musubi.convert_lora_argv("a", "b")[-2:] == ["--target", "default"]


def test_memory_estimate_says_it_is_one(workspace):
    text = sampling.memory_estimate(_resolved(workspace, "t2v-1.3B-musubi", SAMPLES)).describe()
    peak = float(re.search(r"~([\d.]+) GiB peak", text)[1])
    assert "estimate" in text and 8 < peak < 20, text  # 1.3B bf16: umT5 (~11 GiB) is the largest phase


def test_losses_are_read_at_each_save(tmp_path, monkeypatch):
    from runner.jobs import records

    monkeypatch.setenv("RUNNER_STATE", str(tmp_path))
    rec = records.JobRecord(id="j-1", name="j", trainer="musubi", host="local", image="i", container="c", job_file="f",
                            output_dir="o", master_port=29500, started="2026-01-01T00:00:00")
    rec.log_file.parent.mkdir(parents=True)
    rec.log_file.write_text("steps: 50%|#| 1/2 [00:01<00:01, avr_loss=0.25]\n\nsaving checkpoint: /outputs/j/j-000001.safetensors\n"
                            "steps: 1 loss: 0.1250 iter time (s): 1\nSaving model to directory epoch2\n")
    rec.save()
    assert sampling.losses("j") == {"j-000001.safetensors": 0.25, "epoch2": 0.125}


@pytest.mark.parametrize("extra, names", [
    ("samples: {prompts: ['a ball --w 64']}", ["samples.prompts", "' --'"]),
    ("samples: {prompts: ['  ']}", ["samples.prompts", "empty"]),
    ("samples: {width: 330}", ["samples.width", "multiple of 16"]),
    ("samples: {frames: 10}", ["samples.frames", "4k+1"]),
    ("samples: {guidance: 0}", ["samples.guidance"]),
])
def test_bad_samples_fields_are_refused_at_their_line(cli, workspace, extra, names):
    job = write_job(workspace / "examples", (workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text() + extra + "\n", "bad.yaml")
    code, out, err = cli("validate", job)
    assert code == 2 and "bad.yaml:11:" in err and all(n in err for n in names), err


# --- `runner sample` against the real engine and the stand-in images -----------------------------------------


def _video(path: Path) -> tuple[int, int, int, float]:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sum(1 for _ in c.decode(s)), s.width, s.height, float(s.average_rate)


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


@pytest.mark.parametrize("example, name", [("t2v-1.3B-musubi", "ball-1p3b"), ("t2v-1.3B-diffpipe", "ball-1p3b-dp")])
def test_sample_makes_one_video_per_epoch_and_prompt_and_a_contact_sheet(built, workspace, tmp_path, example, name):
    from tests.dockerfixtures import runner, runner_env

    env = runner_env(tmp_path)
    suffix = os.urandom(3).hex()
    name = f"{name}-{suffix}"
    text = (workspace / "examples" / f"{example}.yaml").read_text().replace("name: ball-1p3b-dp", f"name: {name}").replace("name: ball-1p3b\n", f"name: {name}\n")
    job = write_job(workspace / "examples", text + SAMPLES + "  during_training: false\nschedule: {epochs: 3}\n", f"{name}.yaml")
    out = workspace / "examples" / "outputs" / name

    r = runner(["sample", job], env, cwd=workspace)  # nothing trained yet
    assert r.returncode == 2 and "no saved LoRA" in r.stderr and "runner train" in r.stderr, r.stderr
    assert not (out / "samples").exists()

    r = runner(["train", job], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    before = _tree(out)
    for bad, says in ((["--epochs", "7"], "no LoRA of epoch 7"), (["--prompt", "a ball --w 9"], "' --'"), (["--epochs", "x"], "--epochs")):
        r = runner(["sample", job, *bad], env, cwd=workspace)
        assert r.returncode == 2 and says in r.stderr and "Fix:" in r.stderr, r.stderr
    assert _tree(out) == before, "a refused sample run wrote nothing"

    r = runner(["sample", job, "--epochs", "1,3"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "STAND-IN" in r.stdout and "an estimate" in r.stdout
    merged = [int(n) for n in re.findall(r"merged (\d+) LoRA modules", r.stdout)]
    assert len(merged) == 2 * len(PROMPTS) and all(n > 0 for n in merged), "the LoRA's keys reached musubi in its own format"
    videos = sorted((out / "samples").glob("*/*/*.mp4"))
    assert len(videos) == 2 * len(PROMPTS)
    for v in videos:
        assert _video(v) == (9, 320, 192, 16.0), v
        assert v.stat().st_uid == os.getuid()
    sheet = (out / "samples" / "index.html").read_text()
    srcs = set(re.findall(r'<video src="([^"]+)"', sheet))
    assert srcs == {str(v.relative_to(out / "samples")) for v in videos}
    for p in PROMPTS:
        assert html.escape(p) in sheet
    assert "epoch 1" in sheet and "epoch 3" in sheet and re.search(r"loss \d", sheet), "the loss at each save is shown"

    # a second run adds videos beside the first ones and keeps the sheet's earlier columns
    r = runner(["sample", job, "--epochs", "2", "--prompt", PROMPTS[0]], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert all(v.exists() for v in videos) and len(list((out / "samples").glob("*/*/*.mp4"))) == len(videos) + 1
    sheet = (out / "samples" / "index.html").read_text()
    assert all(f"epoch {e}" in sheet for e in (1, 2, 3)) and sheet.count("<video ") == len(videos) + 1
    shutil.rmtree(out, ignore_errors=True)


def test_i2v_jobs_refuse_sample_prompts(cli, workspace):
    text = (workspace / "examples" / "i2v-14B-480P-musubi.yaml").read_text() + "samples: {prompts: ['a wave']}\n"
    code, out, err = cli("validate", write_job(workspace / "examples", text, "i2v.yaml"))
    assert code == 2 and "samples.prompts" in err and "start image" in err, err


def test_sample_on_the_jobs_host_then_pull(workspace, env, on_host):
    """Through the SSH test host: the LoRAs are found there, the videos and the sheet are made there, `runner pull`
    brings both back."""
    from tests.dockerfixtures import runner
    from tests.remotefixtures import run_key

    dirs = on_host()
    name = f"ball-remote-{os.urandom(3).hex()}"
    text = (workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text().replace("name: ball-1p3b\n", f"name: {name}\n")
    job = write_job(workspace / "examples", text + SAMPLES + "schedule: {epochs: 2}\n", f"{name}.yaml")
    r = runner(["train", job, "--host", "gpu01"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    r = runner(["sample", job, "--host", "gpu01", "--all"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    there = Path(dirs["outputs"]) / run_key(env, name) / name / "samples"  # the run's own folder there (runner.remote.layout)
    videos = sorted(there.glob("*/*/*.mp4"))
    assert len(videos) == 2 * len(PROMPTS) and all(_video(v) == (9, 320, 192, 16.0) for v in videos)
    assert "runner pull" in r.stdout
    local = workspace / "examples" / "outputs" / name / "samples"
    assert not local.exists(), "the videos stay on the host until pulled"
    assert runner(["pull", name], env).returncode == 0
    sheet = (local / "index.html").read_text()
    assert all((local / src).is_file() for src in re.findall(r'<video src="([^"]+)"', sheet)) and sheet.count("<video ") == len(videos)


def test_saved_loras_of_every_run_the_newest_run_winning(tmp_path):
    from runner.shell import LocalShell
    from runner.spec import Job

    job = Job.model_validate({"name": "j", "trainer": "musubi", "task": "t2v-1.3B", "models": {"preset": "t2v-1.3B"},
                              "datasets": [{"path": "d"}], "output": str(tmp_path), "schedule": {"epochs": 3}})
    names = ["j/j-000001.safetensors", "j/j-000002.safetensors", "j/20260102_00-00-00/j-000002.safetensors", "j/j.safetensors",
             "j/20260101_00-00-00/epoch1/adapter_model.safetensors", "j/j-000001-state/model.safetensors", "j/samples/loras/epoch0001.safetensors"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"")

    found = {lo.key: lo.path for lo in sampling.saved_loras(job, LocalShell(), str(tmp_path / "j"))}
    assert found == {"epoch0001": "20260101_00-00-00/epoch1/adapter_model.safetensors", "epoch0002": "20260102_00-00-00/j-000002.safetensors",
                     "final": "j.safetensors"}
