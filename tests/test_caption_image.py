"""`runner caption` end to end in the real captioner image (Dockerfile.caption, the real locks) on CI's Debian base.

What is stood in: the GPU (RUNNER_GPUS=none: transformers runs on the CPU) and the weights: a tiny Qwen2.5-VL with random
weights, built in the image from its config by images/caption/app/random_qwen.py with transformers' own classes and
saved with save_pretrained (no hub here). The processor, the video and image inputs, generate() and every step of runner
are the real ones, on real mp4 and png files. The captions are gibberish: the tests check the mechanics, not the words.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from runner.caption.work import BACKUP, State
from runner.data.synth import write_caption, write_image, write_video
from runner.images import builder
from tests.dockerfixtures import HOST_CA, STANDIN_PINS, require_docker, runner, runner_env

TRIGGER = "sks_ball"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The captioner image, built once, and a tiny random-weight Qwen2.5-VL saved by it."""
    require_docker()
    import docker

    tmp = tmp_path_factory.mktemp("caption")
    r = runner(["build", "caption"], runner_env(tmp), timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ref = builder.image_ref(builder.load_pins("caption", pins_file=STANDIN_PINS), HOST_CA if HOST_CA.is_file() else None)
    model = tmp / "tiny-qwen2.5-vl"
    model.mkdir()
    docker.from_env().containers.run(ref, ["python", "/opt/captioner/random_qwen.py", "--size", "tiny", "--out", "/model"],
                                     volumes={str(model): {"bind": "/model", "mode": "rw"}}, user=f"{os.getuid()}:{os.getgid()}", remove=True)
    assert (model / "config.json").is_file() and (model / "model.safetensors").is_file()
    return model


def clips(folder: Path, videos: int = 2) -> Path:
    folder.mkdir()
    for i in range(videos):
        write_video(folder / f"clip{i}.mp4", 33, 16, 96, 64)
    write_image(folder / "still.png", 80, 60)
    return folder


def caption(folder: Path, model: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return runner(["caption", folder, "--model", model, "--trigger", TRIGGER, *extra], runner_env(tmp))


def test_captions_written_for_files_without_one_and_others_kept(tiny_model, tmp_path):
    d = clips(tmp_path / "data")
    write_caption(d / "clip1.mp4", "my own caption")
    r = caption(d, tiny_model, tmp_path, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["written"] == ["clip0.mp4", "still.png"] and doc["kept"] == ["clip1.mp4"] and doc["exit_code"] == 0
    for name in ("clip0", "still"):
        text = (d / f"{name}.txt").read_text(encoding="utf-8")
        assert text.startswith(f"{TRIGGER}, ") or text == f"{TRIGGER}\n", "the trigger word first"
        assert text.endswith("\n") and text.count("\n") == 1
    assert (d / "clip1.txt").read_text() == "my own caption"
    assert "[1/2] clip0.mp4: caption written" in r.stderr and "[2/2] still.png" in r.stderr, "progress per file"
    assert not [p for p in d.iterdir() if p.name.startswith(".")], "no temporary file left in the folder"
    check = runner(["dataset", "check", d, "--json"], runner_env(tmp_path))
    assert json.loads(check.stdout)["captions"] == {"captioned": 3, "of": 3, "without": []}
    again = caption(d, tiny_model, tmp_path)
    assert again.returncode == 0 and "0 caption(s) written, 3 kept" in again.stdout, "nothing to do twice"


def test_a_file_that_does_not_decode_is_named_and_the_others_are_captioned(tiny_model, tmp_path):
    d = clips(tmp_path / "data", videos=1)
    (d / "broken.mp4").write_bytes(b"not a video at all" * 100)
    r = caption(d, tiny_model, tmp_path, "--json")
    assert r.returncode == 1, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["failed"] == ["broken.mp4"] and doc["written"] == ["clip0.mp4", "still.png"] and doc["exit_code"] == 1
    assert "broken.mp4" in r.stderr and not (d / "broken.txt").exists()


def test_overwrite_keeps_the_old_caption_as_runners_backup(tiny_model, tmp_path):
    d = clips(tmp_path / "data", videos=1)
    write_caption(d / "clip0.mp4", "hand written")
    r = caption(d, tiny_model, tmp_path, "--overwrite", "--style", "detailed")
    assert r.returncode == 0, r.stderr[-3000:]
    backups = sorted(d.glob(f"clip0.txt{BACKUP}*"))
    assert len(backups) == 1 and backups[0].read_text() == "hand written"
    assert (d / "clip0.txt").read_text().startswith(TRIGGER) and (d / "still.txt").is_file()
    assert "1 old one(s) kept" in r.stdout


def test_a_killed_container_leaves_whole_captions_and_the_next_run_finishes(tiny_model, tmp_path):
    import docker

    d = clips(tmp_path / "data", videos=12)
    label = f"io.runner.job=caption-{State('local', d).key}"
    proc = subprocess.Popen(["runner", "caption", str(d), "--model", str(tiny_model), "--trigger", TRIGGER, "--job", str(job(tmp_path, d))],
                            env=runner_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = docker.from_env()
    deadline = time.monotonic() + 600
    while not list(d.glob("*.txt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    killed = client.containers.list(filters={"label": label})
    assert killed, "the captioner was still running after its first caption"
    killed[0].kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 137, out + err
    first = {p.name: p.read_text() for p in d.glob("*.txt")}
    assert 0 < len(first) < 13, "killed mid-folder"
    assert all(t.startswith(TRIGGER) and t.endswith("\n") for t in first.values()), "no half-written caption"
    assert not [p for p in d.iterdir() if p.name.startswith(".")]
    r = caption(d, tiny_model, tmp_path, "--job", job(tmp_path, d))
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(d.glob("*.txt"))) == 13 and all((d / n).read_text() == t for n, t in first.items()), "resumed, earlier captions untouched"
    assert client.containers.list(all=True, filters={"label": label}) == [], "no container left behind"


def job(tmp: Path, data: Path) -> Path:
    """A job whose dataset is `data`: videos are sampled at its training fps (16)."""
    path = tmp / "job.yaml"
    path.write_text(f"name: cap\ntrainer: musubi\ntask: t2v-1.3B\nmodels: {{root: {tmp}/models, preset: t2v-1.3B}}\n"
                    f"datasets:\n  - path: {data}\n    frames: [33]\n")
    return path


def test_on_a_host_the_folder_is_synced_and_the_captions_come_back(tiny_model, tmp_path):
    """The tiny model stands in for the qwen2.5-vl-3b preset's weights in the host's models folder (no hub here)."""
    import shutil
    import uuid

    from tests.remotefixtures import SRV, add_host, engine, host_dirs, require_remote

    require_remote()
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    models = SRV / "gpu01" / "models" / f"t-cap-{uuid.uuid4().hex[:8]}"
    dirs = host_dirs("gpu01")
    shutil.copytree(tiny_model, models / "Qwen2.5-VL-3B-Instruct")
    subprocess.run(["chmod", "-R", "a+rX", str(models)], check=True)
    try:
        add_host(env, "gpu01", "gpu01", str(models), dirs)
        d = clips(tmp_path / "data", videos=1)
        write_caption(d / "still.png", "mine")
        r = runner(["caption", d, "--host", "gpu01", "--model", "qwen2.5-vl-3b", "--trigger", TRIGGER, "--json"], env, timeout=1800)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)["written"] == ["clip0.mp4"] and (d / "still.txt").read_text() == "mine"
        assert (d / "clip0.txt").read_text().startswith(TRIGGER)
        label = f"io.runner.job=caption-{State('gpu01', d).key}"
        assert engine("gpu01").containers.list(all=True, filters={"label": label}) == [], "its container is removed on the host"
        folder = tmp_path / "elsewhere"
        folder.mkdir()
        refused = runner(["caption", folder, "--host", "gpu01", "--model", tiny_model], env)
        assert refused.returncode == 2 and "not sent to hosts" in refused.stderr
    finally:
        shutil.rmtree(models, ignore_errors=True)
        for path in dirs.values():
            shutil.rmtree(path, ignore_errors=True)
