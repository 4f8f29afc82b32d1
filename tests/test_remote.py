"""Remote GPU hosts over SSH with real parts: OpenSSH servers in network namespaces (gpu01, gpu02), each with its
own dockerd, the stand-in trainer images sent from the local engine, and the `runner` command as users run it.

Stood in: the GPU (RUNNER_GPUS=none) and the trainers (tests/standin/). Faults are real: sshd sessions killed,
the host's link taken down, a 4 MiB tmpfs filling up, a known_hosts file with the wrong key.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from runner.executors.container import LABEL_PORT
from tests.dockerfixtures import runner, runner_env
from tests.remotefixtures import ADDRESS, CLIENT_KEY, KNOWN_HOSTS, SRV, add_host, engine, host_dirs, netns, require_remote, run_key

MUSUBI = "examples/t2v-1.3B-musubi.yaml"


@pytest.fixture(scope="session")
def remote_models(tmp_path_factory) -> str:
    """Stand-in images built here, and the fixture models on both hosts (copied with scp, as a user would)."""
    require_remote()
    from tests import modelfixtures

    tmp = tmp_path_factory.mktemp("remote")
    for trainer in ("musubi", "diffpipe"):
        r = runner(["build", trainer], runner_env(tmp))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    local = modelfixtures.models_root(tmp / "models")
    tag = uuid.uuid4().hex[:8]
    for host, addr in ADDRESS.items():
        dest = f"{SRV}/{host}/models/t-{tag}"
        subprocess.run(["ssh", "-i", CLIENT_KEY, "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", f"runnertest@{addr}", "mkdir", "-p", dest], check=True)
        subprocess.run(["scp", "-q", "-r", "-i", CLIENT_KEY, "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", f"{local}/.", f"runnertest@{addr}:{dest}/"], check=True)
    yield f"{SRV}/{{host}}/models/t-{tag}"
    for host in ADDRESS:
        shutil.rmtree(f"{SRV}/{host}/models/t-{tag}", ignore_errors=True)


@pytest.fixture
def env(remote_models, tmp_path) -> dict[str, str]:
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    yield env
    names = {r["container"] for r in _records(env)}
    for host in ADDRESS:
        for c in engine(host).containers.list(all=True):
            if c.name in names:
                c.remove(force=True)


@pytest.fixture
def on_host(env, remote_models):
    """add(name, host, **dirs): an inventory entry with per-test folders on the host; removed afterwards."""
    made: list[dict[str, str]] = []

    def add(name: str = "gpu01", host: str = "gpu01", **over: str) -> dict[str, str]:
        dirs = {**host_dirs(host), **over}
        add_host(env, name, host, remote_models.format(host=host), dirs)
        made.append(dirs)
        return dirs

    yield add
    for dirs in made:
        for d in dirs.values():
            if "/t-" in d:
                shutil.rmtree(d, ignore_errors=True)


def _containers(host: str) -> set[str]:
    return {c.name for c in engine(host).containers.list(all=True)}


def _records(env) -> list[dict]:
    return [json.loads(p.read_text()) for p in (Path(env["RUNNER_STATE"]) / "jobs").glob("*/record.json")]


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- inventory ----------------------------------------------------------------------------------


def test_hosts_add_list_rm_and_errors(tmp_path):
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    assert runner(["hosts", "add", "box", "--ssh", "me@10.231.7.11:2222", "--models", "/srv/m"], env).returncode == 0
    listing = runner(["hosts", "list"], env)
    assert "box" in listing.stdout and "me@10.231.7.11:2222" in listing.stdout
    saved = (tmp_path / "config" / "runner" / "hosts.yaml").read_text()
    assert "me@10.231.7.11:2222" in saved and "/srv/m" in saved and "~/runner/data" in saved
    bad = runner(["hosts", "add", "x", "--ssh", "me@h", "--data", "/srv/a:b"], env)
    assert bad.returncode == 2 and "without ':'" in bad.stderr
    assert runner(["hosts", "add", "local", "--ssh", "me@h"], env).returncode == 2
    assert runner(["hosts", "rm", "box"], env).returncode == 0
    gone = runner(["train", MUSUBI, "--host", "box"], env)
    assert gone.returncode == 2 and "runner hosts add box" in gone.stderr


# --- end to end ---------------------------------------------------------------------------------


def test_train_on_a_host_then_pull(workspace, env, on_host):
    """The whole path, with a dataset folder and caption built to inject shell if anything were unquoted."""
    dirs = on_host()
    nasty = "it's a \"clip\" $(touch PWNED-dir) `touch PWNED-tick`"
    data = workspace / "examples" / "data" / nasty
    shutil.copytree(workspace / "examples" / "data" / "clips", data)
    caption = next(data.glob("*.txt"))
    caption.write_text("a ball; $(touch /tmp/PWNED-caption) `id` ' \" \\")
    job = workspace / "examples" / "nasty.yaml"
    job.write_text((workspace / MUSUBI).read_text().replace("path: data/clips", f"path: {json.dumps('data/' + nasty)}"))
    before = _tree(data)
    secret = f"hf_{uuid.uuid4().hex}"

    r = runner(["train", job, "--host", "gpu01"], {**env, "HF_TOKEN": secret}, cwd=workspace)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert "STAND-IN" in r.stdout and "[runner] done" in r.stdout
    assert _tree(data) == before, "local data is only read"
    remote_caption = Path(dirs["data"]) / run_key(env, "ball-1p3b") / "0-it_s_a_clip_touch_PWNED-dir_touch_PWNED-tick" / caption.name
    assert remote_caption.read_text() == caption.read_text()
    assert int(remote_caption.stat().st_mtime) == int(caption.stat().st_mtime), "mtimes are preserved"
    for root in (workspace, Path("/home/runnertest"), Path(dirs["data"]), Path("/tmp")):
        assert not list(root.glob("PWNED*")) and not (root / "ball-1p3b" / "PWNED-dir").exists()

    (record,) = _records(env)
    assert record["host"] == "gpu01" and record["status"] == "exited" and record["exit_code"] == 0
    assert secret not in json.dumps(record) and "HF_TOKEN" not in record["env_names"]
    assert record["container"] not in {c.name for c in engine("gpu01").containers.list(all=True)}, "a finished job frees its container"
    for f in Path(env["RUNNER_STATE"]).rglob("*"):
        assert not f.is_file() or secret not in f.read_text(errors="replace"), f"{f} holds the secret"

    out = workspace / "examples" / "outputs" / "ball-1p3b"
    assert not out.exists(), "outputs stay on the host until pulled"
    pulled = runner(["pull", "ball-1p3b"], env)
    assert pulled.returncode == 0, pulled.stderr
    assert (out / "ball-1p3b.safetensors").is_file()
    again = runner(["pull", "ball-1p3b"], env)
    assert "pulled 0 of" in again.stdout, again.stdout

    refused = runner(["train", job, "--host", "gpu01"], env, cwd=workspace)  # the host's outputs hold the first run's LoRAs
    assert refused.returncode == 2 and dirs["outputs"] in refused.stderr and "runner resume" in refused.stderr, refused.stderr
    resync = runner(["train", job, "--host", "gpu01", "--detach", "--fresh"], {**env, "HF_TOKEN": secret}, cwd=workspace)
    assert resync.returncode == 0 and "0 of 6 files sent" in resync.stderr.replace("\n", " "), resync.stderr
    detached = max(_records(env), key=lambda r: r["started"])
    container = engine("gpu01").containers.get(detached["container"])  # kept until someone collects the job
    assert not any(e.startswith("HF_TOKEN") for e in container.attrs["Config"]["Env"]), "containers never get secrets"
    assert container.attrs["Config"]["User"] == "{}:{}".format(*_ids("runnertest"))
    assert runner(["logs", "ball-1p3b", "-f"], env).returncode == 0


def test_a_remote_plan_json_lists_the_hosts_paths_and_no_secret(workspace, env, on_host, remote_models):
    """plan.json, here and on the host, is what runs there: the host's folders, secrets by name only. The values
    reach the container on its stdin, not its configuration (tests/test_secrets.py follows them to the trainer)."""
    dirs = on_host()
    token, password = f"wandb-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    job = workspace / "examples" / "secret.yaml"
    job.write_text((workspace / MUSUBI).read_text() + f"env:\n  WANDB_API_KEY: {token}\n")
    r = runner(["train", job, "--host", "gpu01", "--detach"], {**env, "PIP_INDEX_URL": f"https://me:{password}@pypi.example/simple"}, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (record,) = _records(env)
    here = Path(env["RUNNER_STATE"]) / "jobs" / record["id"] / "job" / "plan.json"
    run = run_key(env, "ball-1p3b")
    there = Path(dirs["cache"]) / run / "jobs" / record["container"] / "plan.json"
    assert there.read_text() == here.read_text(), "the host runs the plan.json kept here"
    plan = json.loads(here.read_text())
    hosts_side = {m["volume"]: m["host"] for m in plan["mounts"]}
    assert hosts_side == {"models": remote_models.format(host="gpu01"), "data/0": f"{dirs['data']}/{run}/0-clips", "cache": f"{dirs['cache']}/{run}/cache",
                          "outputs": f"{dirs['outputs']}/{run}", "hf-cache": f"{dirs['cache']}/{run}/hf",
                          "job": f"{dirs['cache']}/{run}/jobs/{record['container']}"}
    assert plan["container"]["secret_env"] == ["PIP_INDEX_URL", "WANDB_API_KEY"] and plan["facts"]["host"] == "gpu01"
    assert plan["container"]["user"] == "{}:{}".format(*_ids("runnertest"))
    for f in [*Path(env["RUNNER_STATE"]).rglob("*"), *Path(dirs["cache"]).rglob("*"), Path("/var/log/runner-test-gpu01-sshd.log")]:
        if f.is_file():
            assert token not in f.read_text(errors="replace") and password not in f.read_text(errors="replace"), f"{f} holds a secret"
    started = engine("gpu01").containers.get(record["container"]).attrs["Config"]["Env"]
    assert "RUNNER_SECRET_ENV=PIP_INDEX_URL WANDB_API_KEY" in started and not any(token in e or password in e for e in started)
    assert runner(["logs", record["id"], "-f"], env).returncode == 0


def _ids(user: str) -> tuple[int, int]:
    import pwd

    p = pwd.getpwnam(user)
    return p.pw_uid, p.pw_gid


def test_ssh_config_alias(env, tmp_path, remote_models):
    """`--ssh gpu01` resolves through ~/.ssh/config: HostName, User, IdentityFile and UserKnownHostsFile."""
    from runner.executors.remote import RemoteDocker
    from runner.remote.hosts import Host

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy("/var/lib/runner-test/ssh_config", home / ".ssh" / "config")
    mp = pytest.MonkeyPatch()
    mp.setenv("HOME", str(home))
    try:
        ex = RemoteDocker(Host(name="a", ssh="gpu01"))
        assert ex.shell.run(["hostname"]).stdout.strip() == "gpu01" and ex.home == "/home/runnertest"
    finally:
        mp.undo()


# --- faults -------------------------------------------------------------------------------------


def test_dropped_connection_job_keeps_running_and_logs_reattach(workspace, env, on_host):
    on_host()
    job = workspace / "examples" / "slow.yaml"
    job.write_text((workspace / MUSUBI).read_text() + "schedule:\n  epochs: 2\nenv:\n  STANDIN_STEP_SECONDS: '0.5'\n")
    train = subprocess.Popen(["runner", "train", job, "--host", "gpu01"], env=env, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        seen = ""
        while "step 3/3 train start" not in seen:
            line = train.stdout.readline()
            assert line and time.monotonic() < deadline, seen[-3000:] + train.stderr.read()
            seen += line
        netns("kill-sessions", "gpu01")
        _, err = train.communicate(timeout=60)
    finally:
        train.kill()
    assert train.returncode == 2 and "SSH connection was lost" in err and "runner logs -f" in err, err
    (record,) = _records(env)
    assert record["status"] == "running"
    assert engine("gpu01").containers.get(record["container"]).status == "running", "the job outlives the SSH session"

    logs = runner(["logs", "ball-1p3b", "-f"], env, timeout=300)
    assert logs.returncode == 0, logs.stderr
    assert "[runner] done" in logs.stdout and "[runner] step 1/3" in logs.stdout, "reattached from the start of the log"
    (record,) = _records(env)
    assert record["status"] == "exited" and record["exit_code"] == 0


def test_failing_job_exit_code_reaches_the_laptop(workspace, env, on_host):
    on_host()
    job = workspace / "examples" / "failing.yaml"
    job.write_text((workspace / MUSUBI).read_text() + "env:\n  STANDIN_FAIL_AT_STEP: '2'\n")
    r = runner(["train", job, "--host", "gpu01"], env, cwd=workspace)
    assert r.returncode not in (0, 2), r.stdout[-2000:] + r.stderr[-2000:]
    assert "failed" in runner(["ps", "--host", "gpu01"], env).stdout


def test_resume_on_a_host_counts_on(workspace, env, on_host):
    """A job that failed on the host is resumed there, from the state on the host; its saves are numbered on."""
    dirs = on_host()
    job = workspace / "examples" / "resumed.yaml"
    text = (workspace / MUSUBI).read_text()
    job.write_text(text + "env:\n  STANDIN_FAIL_AT_STEP: '8'\n")
    assert runner(["train", job, "--host", "gpu01"], env, cwd=workspace).returncode not in (0, 2)
    job.write_text(text)
    r = runner(["resume", job, "--host", "gpu01"], env, cwd=workspace)
    assert r.returncode == 0 and "resuming from ball-1p3b-000002-state (epoch 2, step 6)" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    saved = {p.name for p in (Path(dirs["outputs"]) / run_key(env, "ball-1p3b") / "ball-1p3b").iterdir()}
    assert {f"ball-1p3b-{e:06d}.safetensors" for e in range(1, 16)} | {"ball-1p3b.safetensors"} <= saved


def test_a_job_hung_after_cuda_out_of_memory_on_a_host_is_stopped_there(workspace, env, on_host):
    """The stand-in diffusion-pipe hangs after torch's OOM while caching, as the real one does; runner stops it over SSH."""
    on_host()
    job = workspace / "examples" / "oom.yaml"
    job.write_text((workspace / "examples" / "t2v-1.3B-diffpipe.yaml").read_text() + "env:\n  STANDIN_OOM_IN: cache-text-encoder\n")
    r = runner(["train", job, "--host", "gpu01"], env, cwd=workspace)
    said = " ".join(r.stdout.split())
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "CUDA ran out of GPU memory in cache-text-encoder: GPU 0 has 11.50 GiB" in said and "runner stopped its container" in said
    (record,) = _records(env)
    assert record["status"] == "failed" and record["failure"].startswith("CUDA out of memory in cache-text-encoder")
    assert record["container"] not in _containers("gpu01")


def test_host_unreachable(workspace, env, on_host):
    on_host("gpu02", "gpu02")
    before = _containers("gpu02")
    netns("link-down", "gpu02")
    try:
        started = time.monotonic()
        r = runner(["train", MUSUBI, "--host", "gpu02"], env, cwd=workspace)
        took = time.monotonic() - started
    finally:
        netns("link-up", "gpu02")
    assert r.returncode == 2 and "did not answer" in r.stderr and "Nothing was started" in r.stderr, r.stderr
    assert took < 30
    assert _records(env) == [] and _containers("gpu02") == before


def test_refused_port_is_a_clear_error(workspace, env, on_host):
    add_host(env, "closed", "gpu01", "/srv", host_dirs("gpu01"), ssh=f"runnertest@{ADDRESS['gpu01']}:2222")
    r = runner(["train", MUSUBI, "--host", "closed"], env, cwd=workspace)
    assert r.returncode == 2 and "cannot be reached" in r.stderr and "Fix:" in r.stderr


def test_disk_full_during_sync(workspace, env, on_host):
    """gpu02's data folder is a 4 MiB tmpfs. Tiny files pass the byte count but take a page each: it fills mid-sync."""
    small = SRV / "gpu02" / "small" / f"t-{uuid.uuid4().hex[:8]}"
    on_host("gpu02", "gpu02", data=str(small))
    data = workspace / "examples" / "data" / "clips"
    for i in range(1500):
        (data / "extra" / f"{i:04d}").parent.mkdir(exist_ok=True)
        (data / "extra" / f"{i:04d}").write_text("x")
    before, containers = _tree(data), _containers("gpu02")
    try:
        r = runner(["train", MUSUBI, "--host", "gpu02"], env, cwd=workspace)
        assert r.returncode == 2 and "disk filled up while syncing" in r.stderr and "local files are untouched" in r.stderr, r.stderr
        assert not list(small.rglob("*.runner-part")), "no partial file is left"

        (data / "big.bin").write_bytes(b"\0" * (6 << 20))
        big = runner(["train", MUSUBI, "--host", "gpu02"], env, cwd=workspace)
        assert big.returncode == 2 and "MiB free; syncing data/0" in big.stderr, big.stderr
    finally:
        shutil.rmtree(small, ignore_errors=True)
    (data / "big.bin").unlink()
    assert _tree(data) == before
    assert _records(env) == [] and _containers("gpu02") == containers


def test_wrong_or_unknown_host_key_is_refused(workspace, env, on_host, tmp_path):
    wrong = tmp_path / "known_hosts"
    gpu02_key = next(line for line in KNOWN_HOSTS.read_text().splitlines() if line.startswith("gpu02")).split(" ", 1)[1]
    wrong.write_text(f"{ADDRESS['gpu01']} {gpu02_key}\n")
    add_host(env, "spoofed", "gpu01", "/srv", host_dirs("gpu01"), known_hosts=wrong)
    r = runner(["train", MUSUBI, "--host", "spoofed"], env, cwd=workspace)
    assert r.returncode == 2 and "refuses to connect" in r.stderr and f"-R {ADDRESS['gpu01']}" in r.stderr, r.stderr

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    add_host(env, "stranger", "gpu01", "/srv", host_dirs("gpu01"), known_hosts=empty)
    r = runner(["train", MUSUBI, "--host", "stranger"], env, cwd=workspace)
    assert r.returncode == 2 and "is unknown" in r.stderr and f"ssh-keyscan {ADDRESS['gpu01']} >> {empty}" in r.stderr, r.stderr
    assert empty.read_text() == "", "known_hosts is never written"
    assert _records(env) == []


def test_models_missing_on_the_host(workspace, env, on_host, tmp_path):
    empty = SRV / "gpu01" / "models" / f"t-empty-{uuid.uuid4().hex[:8]}"
    empty.mkdir()
    add_host(env, "bare", "gpu01", str(empty), host_dirs("gpu01"))
    try:
        r = runner(["train", MUSUBI, "--host", "bare"], env, cwd=workspace)
    finally:
        empty.rmdir()
    assert r.returncode == 2 and "lacks model files" in r.stderr and "wan2.1_t2v_1.3B_bf16.safetensors" in r.stderr and "scp -r" in r.stderr


def test_two_jobs_at_once_on_one_host(workspace, env, on_host):
    on_host()
    text = (workspace / "examples" / "t2v-1.3B-diffpipe.yaml").read_text() + "env:\n  STANDIN_STEP_SECONDS: '0.2'\n"
    for name in ("dp-a", "dp-b"):  # two jobs: a second run of one job is refused while it runs (test_lifecycle.py)
        job = workspace / "examples" / f"{name}.yaml"
        job.write_text(text.replace("name: ball-1p3b-dp", f"name: {name}"))
        r = runner(["train", job, "--host", "gpu01", "--detach"], env, cwd=workspace)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    a, b = sorted(_records(env), key=lambda r: r["id"])
    assert a["container"] != b["container"] and a["master_port"] != b["master_port"]
    running = {c.name: c for c in engine("gpu01").containers.list()}
    assert {a["container"], b["container"]} <= set(running), "both run at the same time"
    for rec in (a, b):
        assert f"--master_port {rec['master_port']}" in (Path(env["RUNNER_STATE"]) / "jobs" / rec["id"] / "job" / "command.sh").read_text()
        assert running[rec["container"]].labels[LABEL_PORT] == str(rec["master_port"])
        logs = runner(["logs", rec["id"], "-f"], env, timeout=300)
        assert logs.returncode == 0, logs.stdout[-2000:] + logs.stderr[-2000:]


def test_doctor_env_and_plan_on_a_host(workspace, env, on_host):
    on_host()
    doctor = runner(["doctor", "--host", "gpu01"], env)
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr  # the host has Docker but no GPU: not ready, no crash
    assert "ok   docker" in doctor.stdout and "no NVIDIA GPU/driver visible on gpu01" in doctor.stdout
    assert "FAIL nvidia-container-toolkit" in doctor.stdout
    assert "CUDA_HOME" in runner(["env", "--host", "gpu01"], env).stdout
    plan = runner(["plan", "examples/t2v-1.3B-musubi.yaml", "--host", "gpu01"], env, cwd=workspace)
    assert plan.returncode == 2 and "--vram" in plan.stderr  # no GPU there to size the plan for


def test_validate_and_render_read_the_dit_on_the_host_with_host(workspace, env, on_host, tmp_path):
    """--host resolves the job there: a DiT whose copy here is float16 (musubi refuses it with memory.dtype bfloat16)
    and whose copy on the host is bfloat16 is refused without --host and validates and renders with it."""
    from tests import modelfixtures

    models = SRV / "gpu01" / "models" / f"t-dit-{uuid.uuid4().hex[:8]}"
    modelfixtures.models_root(models)
    modelfixtures.dit(models / "dit_there.safetensors", dtype="BF16")
    modelfixtures.dit(workspace / "models" / "dit_there.safetensors", dtype="F16")
    add_host(env, "dit", "gpu01", str(models), host_dirs("gpu01"))
    job = workspace / "examples" / "there.yaml"
    job.write_text("name: there\ntrainer: musubi\ntask: t2v-1.3B\nmodels:\n  root: ../models\n  preset: t2v-1.3B\n  format: official\n"
                   "  dit: dit_there.safetensors\ndatasets:\n  - path: data/clips\n")
    try:
        here = runner(["validate", job], env, cwd=workspace)
        there = runner(["validate", job, "--host", "dit"], env, cwd=workspace)
        rendered = runner(["render", job, "--host", "dit", "--out", tmp_path / "r", "--json"], env, cwd=workspace)
    finally:
        shutil.rmtree(models, ignore_errors=True)
    assert here.returncode == 2 and "memory.dtype" in here.stderr and "stores float16" in here.stderr, here.stderr
    assert there.returncode == 0, there.stderr
    assert rendered.returncode == 0, rendered.stderr
    facts = json.loads((tmp_path / "r" / "plan.json").read_text())["facts"]
    assert facts["target"] == "dit" and facts["dit_dtype"] == "bfloat16" and facts["caches"] == "make"


def test_an_fp8_dit_only_on_the_host_renders_without_fp8_scaled(workspace, env, on_host, monkeypatch, tmp_path):
    """The DiT header is read on the host: an fp8 file there (absent here) gets --fp8_base alone, which musubi
    needs ("already in fp8 format" otherwise)."""
    from tests import modelfixtures

    models = SRV / "gpu01" / "models" / f"t-fp8-{uuid.uuid4().hex[:8]}"
    modelfixtures.models_root(models)
    modelfixtures.dit(models / "dit_fp8.safetensors", dtype="F8_E4M3")
    add_host(env, "fp8", "gpu01", str(models), host_dirs("gpu01"))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from runner.executors.remote import RemoteDocker
    from runner.job import render
    from runner.jobs import launch

    job = workspace / "examples" / "fp8.yaml"
    job.write_text("name: fp8\ntrainer: musubi\ntask: t2v-1.3B\nmodels:\n  root: ../models\n  preset: t2v-1.3B\n  format: official\n"
                   "  dit: dit_fp8.safetensors\ndatasets:\n  - path: data/clips\nmemory:\n  transformer_dtype: float8\n")
    assert not (workspace / "models" / "dit_fp8.safetensors").exists()
    executor = RemoteDocker.for_host("fp8")
    try:
        resolved = render.load_checked(job, launch.target_of(executor, False))
        train = next(s.argv for s in render.trainer_plan(resolved, tmp_path / "job").steps if s.name == "train")
    finally:
        executor.close()
        shutil.rmtree(models, ignore_errors=True)
    assert resolved.dit_dtype == "float8"
    assert "--fp8_base" in train and "--fp8_scaled" not in train
    here = render.trainer_plan(render.load_checked(job), tmp_path / "here").steps[-1].argv  # resolved here, the file is unknown
    assert "--fp8_scaled" in here
