"""A job's lifecycle against the real Docker engine (and the SSH test hosts for the remote lock), with real faults:
a start the engine refuses, a container removed behind runner's back, `runner stop` racing `runner logs -f` and
`runner ps`, two `runner train` of one job, a full disk under the outputs, SIGTERM to `runner train`, and dockerd
going away mid-run (a private dockerd, so the shared engine is never touched). Issue 11 items 4, 9-13.

Stood in: the GPU (RUNNER_GPUS=none) and the trainers (tests/standin/).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.dockerfixtures import require_docker, runner, runner_env
from tests.remotefixtures import engine

MUSUBI = "examples/t2v-1.3B-musubi.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    require_docker()
    tmp = tmp_path_factory.mktemp("images")
    r = runner(["build", "musubi"], runner_env(tmp))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp


@pytest.fixture
def env(built, tmp_path) -> dict[str, str]:
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    yield env
    import docker

    for c in docker.from_env().containers.list(all=True, filters={"label": "io.runner.record"}):
        if c.labels["io.runner.record"] in {r["id"] for r in records(env)}:
            c.remove(force=True)  # only when a test failed: runner removes its containers


def job(workspace: Path, step_seconds: float = 0, extra: str = "") -> tuple[Path, str]:
    """The musubi example under a unique name (runs of other tests never match it), its steps `step_seconds` long."""
    name = f"lc-{uuid.uuid4().hex[:8]}"
    path = workspace / "examples" / f"{name}.yaml"
    text = (workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text().replace("name: ball-1p3b", f"name: {name}")
    path.write_text(text + f"env:\n  STANDIN_STEP_SECONDS: '{step_seconds}'\n" + extra)
    return path, name


def records(env) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(env["RUNNER_STATE"]) / "jobs").glob("*/record.json"))]


def containers(prefix: str) -> dict[str, str]:
    import docker

    return {c.name: c.status for c in docker.from_env().containers.list(all=True) if c.name.startswith(prefix)}


def no_traceback(*results) -> None:
    """runner crashed in none of these (its stderr; a trainer's own tracebacks are part of the job's log on stdout)."""
    for r in results:
        err = r.stderr if hasattr(r, "stderr") else r
        assert "Traceback" not in err, err[-3000:]


def started(env, workspace, path: Path) -> dict:
    """`runner train --detach`: the new run's record."""
    before = {r["id"] for r in records(env)}
    r = runner(["train", path, "--detach"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (record,) = [x for x in records(env) if x["id"] not in before]
    return record


def wait_for(predicate, seconds: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def popen(args: list, env, cwd=None) -> subprocess.Popen:
    return subprocess.Popen(["runner", *map(str, args)], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# --- 9: a start the engine refuses leaves no container ------------------------------------------


def test_three_refused_starts_leave_no_container(workspace, env):
    path, name = job(workspace)
    cfg = Path(env["RUNNER_CONFIG"])
    good = cfg.read_text()
    cfg.write_text(good.replace("  stack:", "  nofile: 99999999\n  stack:"))  # above the kernel's nr_open: runc refuses it at start
    for _ in range(3):
        r = runner(["train", path], env, cwd=workspace)
        assert r.returncode == 2 and "could not set its ulimits" in r.stderr and "Fix:" in r.stderr, r.stderr[-2000:]
        no_traceback(r)
    assert containers(f"runner-{name}-") == {}, "no container left in Created"
    assert records(env) == []
    cfg.write_text(good)
    assert runner(["train", path], env, cwd=workspace).returncode == 0, "the job's lock was given back each time"


# --- 10: a container removed outside runner ----------------------------------------------------


def test_a_container_removed_outside_runner_ends_its_record(workspace, env):
    import docker

    path, name = job(workspace, step_seconds=2)
    record = started(env, workspace, path)
    docker.from_env().containers.get(record["container"]).remove(force=True)

    logs = runner(["logs", name], env)
    assert logs.returncode == 1 and "removed outside runner" in logs.stderr, logs.stderr
    ps = runner(["ps", "--json"], env)
    (row,) = json.loads(ps.stdout)["jobs"]
    assert row["status"] == "lost" and "removed outside runner" in row["failure"]
    stop = runner(["stop", name], env)
    assert stop.returncode == 0 and "already ended: lost" in stop.stdout
    no_traceback(logs, ps, stop)
    assert started(env, workspace, path)["status"] == "running", "a lost run holds no lock"


def test_stop_of_a_vanished_container_says_so(workspace, env):
    import docker

    path, name = job(workspace, step_seconds=2)
    record = started(env, workspace, path)
    docker.from_env().containers.get(record["container"]).remove(force=True)
    stop = runner(["stop", name], env)  # before any `ps` saw it
    no_traceback(stop)
    assert stop.returncode == 0 and "had ended before the stop: lost" in stop.stdout and "removed outside runner" in stop.stdout
    (saved,) = records(env)
    assert saved["status"] == "lost" and saved["finished"]


# --- 11: commands that race -------------------------------------------------------------------


def test_stop_while_logs_follow_records_stopped_and_both_exit_0(workspace, env):
    path, name = job(workspace, step_seconds=2)
    record = started(env, workspace, path)
    follower = popen(["logs", "-f", name], env)
    copy = Path(record["output_dir"]) / f"runner-{record['id']}.log"
    wait_for(lambda: copy.is_file() and "[runner] step 1/3" in copy.read_text(), what="the follower's first step line")
    stop = runner(["stop", name], env)
    out, err = follower.communicate(timeout=120)
    no_traceback(stop, err)
    assert stop.returncode == 0 and f"stopped {record['id']}" in stop.stdout
    assert follower.returncode == 0, out[-2000:] + err[-2000:]
    assert "was stopped with `runner stop`" in " ".join(out.split())
    (saved,) = records(env)
    assert saved["status"] == "stopped" and saved["finished"] and containers(record["container"]) == {}


@pytest.mark.parametrize("attempt", range(3))
def test_parallel_ps_while_a_job_ends_never_crash_nor_change_its_exit(workspace, env, attempt):
    path, name = job(workspace, step_seconds=0.05)
    train = popen(["train", path], env, cwd=workspace)
    while train.poll() is None:
        for lister in [popen(["ps"], env) for _ in range(3)]:
            _, err = lister.communicate(timeout=60)
            assert lister.returncode == 0 and "Traceback" not in err, err[-3000:]
    out, err = train.communicate()
    no_traceback(err)
    assert train.returncode == 0, out[-2000:] + err[-2000:]
    (saved,) = records(env)
    assert saved["status"] == "exited" and saved["exit_code"] == 0


# --- 12: one run of a job at a time -------------------------------------------------------------


def test_a_second_train_of_a_running_job_is_refused_and_launches_nothing(workspace, env):
    path, name = job(workspace, step_seconds=2)
    first = started(env, workspace, path)
    again = runner(["train", path], env, cwd=workspace)
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr[-2000:]
    said = " ".join(again.stderr.split())
    assert f"is already running as run {first['id']}" in said and f"pid " in said and f"runner stop {first['id']}" in said
    assert [r["id"] for r in records(env)] == [first["id"]] and list(containers(f"runner-{name}-")) == [first["container"]]
    assert runner(["stop", name], env).returncode == 0
    assert started(env, workspace, path)["status"] == "running", "stopping gives the lock back"


def test_two_trains_started_at_once_run_one(workspace, env):
    path, name = job(workspace, step_seconds=2)
    both = [popen(["train", path, "--detach"], env, cwd=workspace) for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in both)
    assert [code for code, _ in results] == [0, 2], results
    assert "is already running as run" in " ".join(results[1][1].split())
    assert len(records(env)) == 1 and len(containers(f"runner-{name}-")) == 1


def test_a_stale_lock_is_taken_over(workspace, env):
    """The holder's container was removed and its runner is gone: the lock is stale, the next run takes it."""
    import docker

    path, name = job(workspace, step_seconds=2)
    first = started(env, workspace, path)
    docker.from_env().containers.get(first["container"]).remove(force=True)  # no runner saw it end: the lock stays
    lock = json.loads(Path(records(env)[0]["locked"]).read_text())
    assert lock["run"] == first["id"]
    second = started(env, workspace, path)
    assert second["id"] != first["id"] and json.loads(Path(second["locked"]).read_text())["run"] == second["id"]


def test_the_remote_lock_is_kept_on_the_host(workspace, tmp_path):
    from tests.remotefixtures import add_host, host_dirs, require_remote
    from tests import modelfixtures

    require_remote()
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    dirs = host_dirs("gpu01")
    models = dirs["data"].replace("/data/", "/models/")
    try:
        shutil.copytree(modelfixtures.models_root(tmp_path / "models"), models)
        add_host(env, "gpu01", "gpu01", models, dirs)
        path, name = job(workspace, step_seconds=2)
        r = runner(["train", path, "--host", "gpu01", "--detach"], env, cwd=workspace)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        (first,) = records(env)
        assert first["locked"].startswith(f"{dirs['cache']}/locks/")
        assert json.loads(Path(first["locked"]).read_text())["run"] == first["id"], "the lock file is on the host"
        again = runner(["train", path, "--host", "gpu01"], env, cwd=workspace)
        assert again.returncode == 2 and f"is already running as run {first['id']}" in " ".join(again.stderr.split())
        # the same job name from another job file with its own output folder here: the same folders on the host
        other = path.with_name(f"{name}-copy.yaml")
        other.write_text(path.read_text() + "output: elsewhere\n")
        again = runner(["train", other, "--host", "gpu01"], env, cwd=workspace)
        assert again.returncode == 2 and f"is already running as run {first['id']}" in " ".join(again.stderr.split()), again.stderr
        assert len(records(env)) == 1
        assert runner(["stop", name], env).returncode == 0
        assert not Path(first["locked"]).exists(), "stopping gives the host's lock back"
    finally:
        for c in engine("gpu01").containers.list(all=True):
            if c.name in {r["container"] for r in records(env)}:
                c.remove(force=True)
        for d in [*dirs.values(), models]:
            shutil.rmtree(d, ignore_errors=True)


# --- 4: runner's log copy on a full disk, and SIGTERM to `runner train` ----------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: the job's output folder on a disk that fills up."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): needs root")
    yield mnt
    subprocess.run(["umount", "-l", mnt], check=False)


def test_a_full_disk_under_the_outputs_ends_the_log_copy_not_runner(workspace, env, tiny_disk):
    path, name = job(workspace, extra=f"  STANDIN_LOG_LINE: '{'x' * 20000}'\noutput: {tiny_disk}\n")
    subprocess.run(["dd", "if=/dev/zero", f"of={tiny_disk}/filler", "bs=1k", "count=56"], check=True, capture_output=True)
    r = runner(["train", path], env, cwd=workspace)
    no_traceback(r)
    (saved,) = records(env)
    assert r.returncode == saved["exit_code"], "runner exits with the trainer's code"
    said = " ".join(r.stdout.split())
    copy = tiny_disk / name / f"runner-{saved['id']}.log"
    assert f"the log copy {copy} stopped at" in said and f"the whole log: `runner logs {saved['id']}`" in said
    whole = runner(["logs", saved["id"]], env).stdout
    assert copy.read_text() and whole.startswith(copy.read_text().rsplit("\n", 1)[0]), "the copy is the log's beginning"
    assert "[runner] step 1/3" in whole


def test_sigterm_to_train_keeps_the_log_copy_whole_and_the_job_running(workspace, env):
    path, name = job(workspace, step_seconds=1)
    train = popen(["train", path], env, cwd=workspace)
    wait_for(lambda: records(env) and records(env)[0]["status"] == "running", what="the job's start")
    (record,) = records(env)
    copy = Path(record["output_dir"]) / f"runner-{record['id']}.log"
    wait_for(lambda: copy.is_file() and "[runner] step 1/3" in copy.read_text(), what="the copy's first step line")
    train.send_signal(signal.SIGTERM)
    out, err = train.communicate(timeout=60)
    no_traceback(err)
    assert train.returncode == 143 and f"`runner logs -f {record['id']}` follows it again" in " ".join(err.split())
    text = copy.read_text()
    body, last = text.rstrip("\n").rsplit("\n", 1)
    assert last.startswith(f"runner: stopped following {record['id']} at ") and "(Terminated)" in last
    import docker

    container = docker.from_env().containers.get(record["container"])
    assert container.status == "running" and records(env)[0]["status"] == "running", "the job runs on, detached"
    assert container.logs().decode().startswith(body), "every line streamed before SIGTERM is in the copy, whole"
    assert runner(["stop", name], env).returncode == 0


# --- 13: dockerd going away mid-run: a private engine, so the shared one is never touched ------------


def _rootfs(tar: Path) -> None:
    """A tiny image: dash, sleep and the C library they link."""
    import tarfile

    programs = ["/usr/bin/dash", "/usr/bin/sleep"]
    libs = [word for word in subprocess.run(["ldd", *programs], capture_output=True, text=True).stdout.split() if word.startswith("/") and Path(word).exists()]
    with tarfile.open(tar, "w") as t:
        for f in dict.fromkeys(programs + libs):
            t.add(os.path.realpath(f), arcname=f.lstrip("/"))


class PrivateDockerd:
    def __init__(self, root: Path):
        self.root, self.run = root, Path(f"/run/lc-{uuid.uuid4().hex[:6]}")
        self.sock = f"unix://{self.run}/docker.sock"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        import docker

        self.run.mkdir(exist_ok=True)
        name = self.run.name
        self.proc = subprocess.Popen(
            ["dockerd", "--host", self.sock, "--pidfile", f"{self.run}/docker.pid", "--data-root", f"{self.root}/data",
             "--exec-root", f"{self.run}/exec", "--containerd-namespace", name, "--containerd-plugins-namespace", f"{name}-plugins",
             "--iptables=false", "--ip6tables=false", "--bridge=none", "--exec-opt", "native.cgroupdriver=cgroupfs",
             "--live-restore"],  # containers outlive a restart of the engine, as on hosts set up for it
            stdout=open(self.root / "dockerd.log", "a"), stderr=subprocess.STDOUT)
        wait_for(lambda: self._answers(docker), 60, "the private dockerd")

    def _answers(self, docker) -> bool:
        try:
            return docker.DockerClient(base_url=self.sock).ping()
        except Exception:  # not up yet
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def client(self):
        import docker

        return docker.DockerClient(base_url=self.sock)


@pytest.fixture
def private_engine(tmp_path):
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.skip("needs dockerd and root to start a private engine")
    engine = PrivateDockerd(tmp_path / "engine")
    engine.root.mkdir()
    engine.start()
    yield engine
    if engine.proc.poll() is not None:
        engine.start()  # its containers outlive it (live-restore): remove them through it
    for c in engine.client().containers.list(all=True):
        c.remove(force=True)
    engine.stop()
    for mounted in (f"{engine.run}/exec", f"{engine.root}/data"):
        subprocess.run(["umount", "-R", "-l", mounted], capture_output=True)
    shutil.rmtree(engine.run, ignore_errors=True)


def test_dockerd_going_away_mid_run_says_so_and_the_record_stays_true(private_engine, tmp_path):
    from runner.jobs.records import JobRecord

    env = runner_env(tmp_path, DOCKER_HOST=private_engine.sock)
    tar = tmp_path / "rootfs.tar"
    _rootfs(tar)
    subprocess.run(["docker", "-H", private_engine.sock, "import", str(tar), "lc-tiny:latest"], check=True, capture_output=True)
    rid = f"lc-{uuid.uuid4().hex[:8]}-20261130-000000-0000"
    private_engine.client().containers.run(
        "lc-tiny:latest", ["/usr/bin/dash", "-c", "i=0; while :; do echo line $i; i=$((i+1)); /usr/bin/sleep 0.2; done"],
        name=f"runner-{rid}", detach=True, network_mode="none", labels={"io.runner.record": rid})
    state = Path(env["RUNNER_STATE"])
    record = JobRecord(id=rid, name=rid.split("-2026")[0], trainer="musubi", host="local", image="lc-tiny:latest", container=f"runner-{rid}",
                       job_file=str(tmp_path / "job.yaml"), output_dir=str(tmp_path / "outputs" / "x"), status="running", started="now")
    folder = state / "jobs" / rid
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(record.model_dump_json())

    follower = popen(["logs", "-f", rid], env)
    copy = Path(record.output_dir) / f"runner-{rid}.log"
    wait_for(lambda: copy.is_file() and "line 3" in copy.read_text(), what="the follower's lines")
    private_engine.stop()  # dockerd goes away; with live-restore its containers run on
    out, err = follower.communicate(timeout=120)
    no_traceback(err)
    said = " ".join(err.split())
    assert follower.returncode == 75, out[-2000:] + err[-2000:]
    assert "Docker: stopped answering" in said and "`runner ps` shows how the run ended" in said
    assert copy.read_text().rstrip("\n").rsplit("\n", 1)[1].startswith(f"runner: stopped following {rid}")

    away = runner(["ps", "--json"], env)
    assert away.returncode == 0 and json.loads(away.stdout)["jobs"][0]["status"] == "running", "unknown while the engine is away"
    private_engine.start()
    back = runner(["ps", "--json"], env)
    assert json.loads(back.stdout)["jobs"][0]["status"] == "running", "the container ran on"
    stop = runner(["stop", rid], env)
    no_traceback(away, back, stop)
    assert stop.returncode == 0 and json.loads(runner(["ps", "--json"], env).stdout)["jobs"][0]["status"] == "stopped"
    assert "line 3" in runner(["logs", rid], env).stdout
