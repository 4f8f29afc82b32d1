"""Images, local launch and compose with a real Docker engine and the stand-in trainers (tests/standin/).

What is stood in: the GPU (containers start with RUNNER_GPUS=none), the upstream trainer source and the
CUDA-only wheels (torch, and the accelerate/deepspeed launchers that need it). Everything else is real:
the Dockerfiles, builds through the Docker SDK behind this machine's TLS-intercepting proxy, containers,
mounts, logs and exit codes.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.dockerfixtures import REPO, STANDIN_PINS, require_docker, runner, runner_env


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """Both images built once for the session; returns a folder whose runner env the tests reuse."""
    require_docker()
    tmp = tmp_path_factory.mktemp("images")
    for trainer in ("musubi", "diffpipe"):
        r = runner(["build", trainer], runner_env(tmp))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp


@pytest.fixture
def env(built, tmp_path) -> dict[str, str]:
    return runner_env(tmp_path)


def test_build_is_content_addressed_and_labelled(built, env):
    r = runner(["build", "musubi"], env)
    assert r.returncode == 0 and "is up to date" in r.stdout
    listing = runner(["images"], env)
    assert "musubi" in listing.stdout and "diffpipe" in listing.stdout and "30c658c4f4b0" in listing.stdout


def test_a_second_build_of_an_image_waits_for_the_first_then_reuses_it(built, env):
    """.ci/run builds the images ahead of the tests; a test's build meanwhile must not build the same image again."""
    import docker

    from runner.images import builder

    ref = builder.image_ref(builder.load_pins("musubi", pins_file=STANDIN_PINS), Path(env["RUNNER_CA_BUNDLE"]) if "RUNNER_CA_BUNDLE" in env else None)
    with builder.one_build_at_a_time(docker.from_env(), ref, print):
        second = subprocess.Popen(["runner", "build", "musubi"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        said, deadline = "", time.monotonic() + 60
        while "waiting for another build" not in said and time.monotonic() < deadline and second.poll() is None:
            if select.select([second.stdout], [], [], 1)[0]:
                said += second.stdout.readline()
        time.sleep(1)
        assert second.poll() is None, "it waits while the first build holds the lock"
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert f"waiting for another build of {ref} on this engine" in said and f"{ref} is up to date" in out


def test_image_trusts_the_configured_ca_bundle(built, env):
    """An up-to-date build points :latest (what compose runs) at the image of this CA bundle, even after another
    bundle's build moved it."""
    import docker

    r = runner(["build", "musubi"], env)
    assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr
    img = next(i for i in docker.from_env().images.list(name="runner-musubi") if "runner-musubi:latest" in i.tags)
    out = docker.from_env().containers.run(img.id, ["cat", "/usr/local/share/ca-certificates/runner/runner-extra.crt"], remove=True, entrypoint=[])
    assert out.strip() == Path(env["RUNNER_CA_BUNDLE"]).read_bytes().strip()


@pytest.mark.parametrize("example,final", [
    ("t2v-1.3B-musubi", "ball-1p3b/ball-1p3b.safetensors"),
    ("t2v-1.3B-diffpipe", "ball-1p3b-dp/*/epoch16/adapter_model.safetensors"),
])
def test_train_runs_the_example_end_to_end(workspace, env, example, final):
    r = runner(["train", f"examples/{example}.yaml"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    outputs = workspace / "examples" / "outputs"
    produced = list(outputs.glob(final))
    assert produced, f"no {final} under {outputs}: {sorted(p.relative_to(outputs) for p in outputs.rglob('*'))[:40]}"
    assert produced[0].stat().st_uid == os.getuid(), "outputs belong to the user who ran runner"
    logs = list(outputs.glob(f"{final.split('/')[0]}/runner-*.log"))
    assert logs and "[runner] done" in logs[0].read_text()
    assert "STAND-IN" in r.stdout


def test_train_exits_with_the_trainers_exit_code(workspace, env):
    job = workspace / "examples" / "failing.yaml"
    job.write_text((workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text() + "env:\n  STANDIN_FAIL_AT_STEP: '2'\n")
    r = runner(["train", job], env, cwd=workspace)
    assert r.returncode not in (0, 2), r.stdout[-2000:]
    ps = runner(["ps"], env)
    assert "failed" in ps.stdout


def test_detach_logs_ps_and_stop(workspace, env):
    env = {**env}
    job = workspace / "examples" / "slow.yaml"
    job.write_text((workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text() + "env:\n  STANDIN_STEP_SECONDS: '2'\n")
    assert runner(["train", job, "--detach"], env, cwd=workspace).returncode == 0
    assert "running" in runner(["ps"], env).stdout
    stopped = runner(["stop", "ball-1p3b"], env)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in runner(["ps"], env).stdout
    assert "[runner] step 1/3" in runner(["logs", "ball-1p3b"], env).stdout


def test_up_shell_down(built, env):
    env = {**env, "HF_ENDPOINT": "https://hf-mirror.example"}  # a mirror set once reaches the containers
    up = runner(["up", "musubi"], env)
    assert up.returncode == 0, up.stderr
    try:
        sh = runner(["shell", "musubi", "--", "sh", "-c", "pwd; id -u; test -d /models && test -w /outputs && echo mounts-ok; echo $HF_ENDPOINT"], env)
        assert sh.returncode == 0, sh.stderr
        assert sh.stdout.split() == ["/opt/musubi-tuner", str(os.getuid()), "mounts-ok", "https://hf-mirror.example"]
    finally:
        down = runner(["down", "musubi"], env)
    assert down.returncode == 0 and "runner-musubi" in down.stdout
    assert runner(["shell", "musubi", "--", "true"], env).returncode == 2


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed (CI installs Debian's)")
def test_docker_compose_run_musubi_from_the_repository_root(built, env, tmp_path):
    for sub in ("models", "data", "cache", "outputs"):
        (tmp_path / sub).mkdir()
    compose_env = {**env, "COMPOSE_FILE": "compose/compose.yaml", "RUNNER_UID": str(os.getuid()), "RUNNER_GID": str(os.getgid()),
                   "RUNNER_MODELS": str(tmp_path / "models"), "RUNNER_DATA": str(tmp_path / "data"),
                   "RUNNER_CACHE": str(tmp_path / "cache"), "RUNNER_OUTPUTS": str(tmp_path / "outputs"),
                   "RUNNER_MEMLOCK": str(__import__("yaml").safe_load(Path(env["RUNNER_CONFIG"]).read_text())["ulimits"]["memlock"])}
    r = subprocess.run(["docker-compose", "run", "--rm", "-T", "musubi", "sh", "-c", "pwd; touch /outputs/made-here; echo $HF_HOME"],
                       cwd=REPO, env=compose_env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/opt/musubi-tuner", "/hf-cache"]
    assert (tmp_path / "outputs" / "made-here").stat().st_uid == os.getuid()


# --- errors, each with its fix; nothing is started -----------------------------------------------


def _no_new_containers(before: set[str]) -> None:
    import docker

    assert {c.name for c in docker.from_env().containers.list(all=True)} <= before | {"runner-musubi"}


def _containers() -> set[str]:
    import docker

    return {c.name for c in docker.from_env().containers.list(all=True)}


def test_daemon_unreachable(workspace, env, tmp_path):
    r = runner(["train", "examples/t2v-1.3B-musubi.yaml"], {**env, "DOCKER_HOST": f"unix://{tmp_path}/no.sock"}, cwd=workspace)
    assert r.returncode == 2 and "Docker daemon is unreachable" in r.stderr and "Fix:" in r.stderr


def test_nvidia_toolkit_missing_is_found_before_starting(workspace, env):
    before = _containers()
    r = runner(["train", "examples/t2v-1.3B-musubi.yaml"], {**env, "RUNNER_GPUS": "all"}, cwd=workspace)
    assert r.returncode == 2 and "NVIDIA Container Toolkit" in r.stderr and "nvidia-ctk" in r.stderr
    _no_new_containers(before)


def edited_pins(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the stand-in pins with one edit; its relative paths made absolute so they still resolve."""
    text = STANDIN_PINS.read_text().replace(old, new, 1)
    for rel in ("diffusion-pipe", "musubi-tuner", "requirements.lock"):
        text = text.replace(f'"{rel}"', f'"{STANDIN_PINS.parent / rel}"')
    pins = tmp_path / "pins.toml"
    pins.write_text(text)
    return pins


def test_image_absent(workspace, env, tmp_path):
    pins = edited_pins(tmp_path, "30c658c4f4b0bf05038b3346eff9670259b10fc7", "0" * 40)
    before = _containers()
    r = runner(["train", "examples/t2v-1.3B-musubi.yaml"], {**env, "RUNNER_PINS": str(pins)}, cwd=workspace)
    assert r.returncode == 2 and "is not built on this machine" in r.stderr and "runner build musubi" in r.stderr
    _no_new_containers(before)


def test_model_file_absent_here(workspace, env):
    from runner.job.render import load_checked

    load_checked(workspace / "examples" / "t2v-1.3B-musubi.yaml").files.t5.unlink()
    before = _containers()
    r = runner(["train", "examples/t2v-1.3B-musubi.yaml"], env, cwd=workspace)
    assert r.returncode == 2 and "this machine:" in r.stderr and "lacks model files the job uses: models.t5" in r.stderr, r.stderr
    assert "runner download" in r.stderr and not list((Path(env["RUNNER_STATE"]) / "jobs").glob("*"))
    _no_new_containers(before)


def test_too_little_disk_for_a_build(env, tmp_path):
    pins = edited_pins(tmp_path, '[musubi]\nbase_image = "runner-test-base:bookworm"\npython = "3.11"\nbuild_disk_gb = 4', '[musubi]\nbase_image = "runner-test-base:bookworm"\npython = "3.11"\nbuild_disk_gb = 1000000')
    r = runner(["build", "musubi", "--pins", pins], env)
    assert r.returncode == 2 and "needs about 1000000 GiB" in r.stderr and "docker system prune" in r.stderr


def test_mount_path_missing(built, tmp_path):
    from runner.errors import UserError
    from runner.executors.container import ContainerSpec
    from runner.executors.local import LocalDocker
    from runner.mounts import Mount

    spec = ContainerSpec(image="x", name="x", command=[], mounts=[Mount("models", str(tmp_path / "gone"), "/models", True)],
                         env={}, user="0:0", workdir="/")
    with pytest.raises(UserError, match="gone does not exist on this machine"):
        LocalDocker().prepare_mounts(spec, sources=spec.mounts)


def test_a_valid_cache_is_reused_and_a_stale_one_rebuilt(workspace, env):
    def train(example: str, *fresh: str) -> str:
        r = runner(["train", f"examples/{example}.yaml", *fresh], env, cwd=workspace)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        return r.stdout

    first = train("t2v-1.3B-musubi")
    assert "cache-latents start" in first
    second = train("t2v-1.3B-musubi", "--fresh")  # a new run beside the first one's LoRAs
    assert "the caches match the datasets' fingerprints" in second and "cache-latents" not in second
    (workspace / "examples" / "data" / "clips" / "clip1.txt").write_text("a blue ball rolls across a stone floor\n")
    third = train("t2v-1.3B-musubi", "--fresh")
    assert "cache-latents start" in third and "re-caching" in third

    train("t2v-1.3B-diffpipe")
    clip = workspace / "examples" / "data" / "clips" / "clip3.mp4"
    clip.write_bytes(clip.read_bytes() + b"\0")  # same paths and captions: only runner's fingerprint sees it
    assert "--regenerate_cache" in train("t2v-1.3B-diffpipe", "--fresh")


def test_a_nan_loss_is_called_out_while_the_job_runs(workspace, env):
    job = workspace / "examples" / "nan.yaml"
    job.write_text((workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text() + "env:\n  STANDIN_NAN_AT_STEP: '3'\n")
    r = runner(["train", job], env, cwd=workspace)
    assert "the loss is NaN" in r.stdout and "runner stop ball-1p3b-" in r.stdout


# --- CUDA out of memory: the stand-ins raise torch's error where STANDIN_OOM_IN says ---------------------


def _oom_job(workspace: Path, example: str, phase: str) -> Path:
    job = workspace / "examples" / f"oom-{phase}.yaml"
    job.write_text((workspace / "examples" / f"{example}.yaml").read_text() + f"env:\n  STANDIN_OOM_IN: {phase}\n")
    return job


def _says(r: subprocess.CompletedProcess, code: int, *texts: str) -> str:
    """Assert the exit code and that runner said each text (its paragraphs unwrapped from the terminal width)."""
    said = " ".join(r.stdout.split())
    assert r.returncode == code, r.stdout[-3000:] + r.stderr[-2000:]
    for text in texts:
        assert text in said, f"{text!r} not in: {said[-3000:]}"
    return said


def _record(env: dict[str, str]) -> dict:
    """The one job record of this test; its container must be gone (stopped, log archived, removed)."""
    (record,) = [__import__("json").loads(p.read_text()) for p in (Path(env["RUNNER_STATE"]) / "jobs").glob("*/record.json")]
    assert record["container"] not in _containers()
    return record


def test_diffpipe_hanging_after_out_of_memory_is_stopped_and_reported(workspace, env):
    r = runner(["train", _oom_job(workspace, "t2v-1.3B-diffpipe", "cache-text-encoder")], env, cwd=workspace)
    _says(r, 1, "runner: CUDA ran out of GPU memory in cache-text-encoder: GPU 0 has 11.50 GiB in all, 0.02 GiB was free",
          "The trainer did not exit after the error, so runner stopped its container.",
          # the planner plans caching (umT5 bf16 ~12.6 GiB on the device): for 11.5 GiB it caches with the fp8 umT5
          "--vram 11.5` picks memory.transformer_dtype: bfloat16", "memory.text_encoder_dtype: float8",
          "set these in the job (or write `memory: auto`)")
    record = _record(env)
    assert record["status"] == "failed" and record["failure"] == "CUDA out of memory in cache-text-encoder (GPU 0: 11.5 GiB)"
    assert "CUDA out of memory in cache-text-encoder (GPU 0: 11.5 GiB)" in runner(["ps"], {**env, "COLUMNS": "400"}).stdout
    _says(runner(["logs", "ball-1p3b-dp"], env), 1, "torch.OutOfMemoryError: CUDA out of memory.",
          "runner: CUDA ran out of GPU memory in cache-text-encoder")


def test_logs_follow_reattaching_to_a_hung_job_reports_the_same(workspace, env):
    before = _containers()
    try:
        assert runner(["train", _oom_job(workspace, "t2v-1.3B-diffpipe", "cache-latents"), "--detach"], env, cwd=workspace).returncode == 0
        _says(runner(["logs", "-f", "ball-1p3b-dp"], env), 1, "CUDA ran out of GPU memory in cache-latents: GPU 0 has 11.50 GiB",
              "runner stopped its container")
        assert _record(env)["status"] == "failed"
    finally:
        import docker

        for c in docker.from_env().containers.list(all=True):
            if c.name not in before and c.name.startswith("runner-ball-1p3b-dp-"):
                c.remove(force=True)  # only if the test failed: runner removes it


@pytest.mark.parametrize("example,phase", [("t2v-1.3B-musubi", "cache-text-encoder"), ("t2v-1.3B-diffpipe", "train")])
def test_a_trainer_that_exits_after_out_of_memory_is_reported_the_same(workspace, env, example, phase):
    r = runner(["train", _oom_job(workspace, example, phase)], env, cwd=workspace)
    said = _says(r, 1, f"runner: CUDA ran out of GPU memory in {phase}: GPU 0 has 11.50 GiB in all", "--vram 11.5`")
    assert "stopped its container" not in said
    assert _record(env)["failure"] == f"CUDA out of memory in {phase} (GPU 0: 11.5 GiB)"


def test_a_log_line_that_merely_mentions_memory_stops_nothing(workspace, env):
    job = workspace / "examples" / "memory-note.yaml"
    note = "INFO: a CUDA out of memory error is likely at batch size 16 on 12 GB; use --fp8_t5"
    job.write_text((workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text() + f"env:\n  STANDIN_LOG_LINE: '{note}'\n")
    said = _says(runner(["train", job], env, cwd=workspace), 0, note)
    assert "ran out of GPU memory" not in said
    assert _record(env)["failure"] == ""


class CountingShell:
    """The executor's own Shell, with every command it runs kept."""

    def __init__(self, shell):
        self.inner, self.name, self.calls = shell, shell.name, []

    def run(self, argv, timeout=60, **options):
        self.calls.append(list(argv))
        return self.inner.run(argv, timeout, **options)


def test_one_train_gathers_each_fact_once_on_its_target(workspace, env, monkeypatch):
    from collections import Counter

    from rich.console import Console

    from runner import config
    from runner.executors.local import LocalDocker
    from runner.jobs import launch
    from runner.models import weights

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    listed: Counter = Counter()
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path=".": (listed.update([str(path)]), scandir(path))[1])
    monkeypatch.setattr(weights, "read_header", lambda path: pytest.fail(f"{path} read on this machine, not through the target's Shell"))
    job = workspace / "examples" / "t2v-1.3B-musubi.yaml"
    job.write_text(job.read_text() + "memory:\n  transformer_dtype: float8\n")
    executor = LocalDocker()
    executor.shell = shell = CountingShell(executor.shell)
    monkeypatch.chdir(workspace)
    console = Console(width=200)
    record = launch.start(job, executor, config.load(), console, launch.Run())
    assert launch.follow(record, executor, console) == 0

    folder = str((workspace / "examples" / "data" / "clips").resolve())
    assert {p: n for p, n in listed.items() if Path(p).resolve() == Path(folder)} == {folder: 1}, "the dataset folder is listed once"
    headers = Counter(argv[4] for argv in shell.calls if argv[:3] == ["sh", "-c", weights.HEADER_COMMAND])
    dit = workspace / "models" / "Wan_2.1_ComfyUI_repackaged/split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"
    assert headers == {str(dit.resolve()): 1}, shell.calls
    argv = json_argv(record)
    assert "--fp8_scaled" in argv, "the bf16 DiT read on the target is quantized at load"


def json_argv(record) -> list[str]:
    import json

    plan = json.loads((record.job_dir / "plan.json").read_text())
    return next(s["argv"] for s in plan["steps"] if s["name"] == "train")
