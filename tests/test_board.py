"""`runner board`: the real TensorBoard from the stand-in trainer images over the event files the stand-ins write where the
trainers do, on this machine's Docker engine and on an SSH test host (port forwarded over the SSH connection); asked
over HTTP for its runs and curves, then stopped with Ctrl-C (or its runner killed) and its container looked for."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from runner.jobs.board import LABEL_BOARD
from tests.dockerfixtures import require_docker, runner, runner_env
from tests.test_remote import on_host, remote_models  # noqa: F401  (fixtures: an inventory host with the fixture models)

MUSUBI = "examples/t2v-1.3B-musubi.yaml"
DIFFPIPE = "examples/t2v-1.3B-diffpipe.yaml"


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    require_docker()
    tmp = tmp_path_factory.mktemp("board-images")
    for trainer in ("musubi", "diffpipe"):
        r = runner(["build", trainer], runner_env(tmp))
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture
def env(images, tmp_path) -> dict[str, str]:
    return runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        return json.loads(r.read())


def start_board(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, dict]:
    """`runner board --json ARGS` running; its JSON document, printed once TensorBoard answers."""
    proc = subprocess.Popen(["runner", "board", "--json", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    text, deadline = b"", time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        chunk = os.read(proc.stdout.fileno(), 65536)
        text += chunk
        try:
            return proc, json.loads(text)
        except json.JSONDecodeError:
            continue
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"runner board printed no JSON (exit {proc.returncode}): {(text + out).decode()[-2000:]} {err.decode()[-3000:]}")


def runs_listed(url: str, expected: int, seconds: float = 60) -> list[str]:
    """TensorBoard's runs once it has found `expected` of them (it scans the logs in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        runs = get(url + "data/runs")
        if len(runs) >= expected or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def stop_board(proc: subprocess.Popen, sig: int = signal.SIGINT) -> tuple[int, str]:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err.decode()


def board_containers(client, name: str, seconds: float = 30) -> list:
    """Containers of that name still on the engine after `seconds` (runner's own removal waits; a killed runner's
    container removes itself once TensorBoard sees its stdin end)."""
    deadline = time.monotonic() + seconds
    while (left := client.containers.list(all=True, filters={"name": name})) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def train(job: str, env, workspace, *extra: str) -> None:
    r = runner(["train", job, *extra], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_board_shows_each_run_of_each_job_locally_and_ctrl_c_removes_it(workspace, env):
    import docker

    train(MUSUBI, env, workspace)
    time.sleep(1.1)  # musubi names a run's log folder by the second it started
    train(MUSUBI, env, workspace, "--fresh")  # a second run of the same job (its saves in a subfolder): its own labelled run
    train(DIFFPIPE, env, workspace)
    port = free_port()
    proc, shown = start_board(["ball-1p3b", "ball-1p3b-dp", "--port", str(port)], env)
    try:
        outputs = workspace / "examples" / "outputs"
        assert shown["url"] == f"http://127.0.0.1:{port}/" and shown["host"] == "local"
        assert shown["jobs"] == {"ball-1p3b": str(outputs / "ball-1p3b" / "logs"), "ball-1p3b-dp": str(outputs / "ball-1p3b-dp")}
        runs = runs_listed(shown["url"], 3)
        musubi_runs = sorted(r for r in runs if r.startswith("ball-1p3b/"))
        assert len(runs) == 3 and len(musubi_runs) == 2, runs
        assert all(r.endswith("/network_train") for r in musubi_runs)  # <job>/<run started>/network_train
        (dp_run,) = [r for r in runs if r.startswith("ball-1p3b-dp/")]
        assert (outputs / dp_run).is_dir()  # <job>/<the run folder>
        curve = get(f"{shown['url']}data/plugin/scalars/scalars?run={musubi_runs[0]}&tag=loss/current")
        assert [step for _, step, _ in curve] == list(range(1, 49))  # 16 epochs × 3 clips
        epochs = get(f"{shown['url']}data/plugin/scalars/scalars?run={dp_run}&tag=train/epoch_loss")
        assert [step for _, step, _ in epochs] == list(range(1, 17))
        client = docker.from_env()
        (container,) = client.containers.list(filters={"name": shown["container"]})
        assert container.labels[LABEL_BOARD] == "ball-1p3b,ball-1p3b-dp"
    finally:
        code, err = stop_board(proc)
    assert code == 0 and "TensorBoard stopped" in err, err
    assert not board_containers(docker.from_env(), shown["container"], seconds=0)


def test_a_killed_board_leaves_no_container(workspace, env):
    """kill -9: runner cannot clean up, the container's stdin ends and TensorBoard stops; the container removes itself."""
    import docker

    train(MUSUBI, env, workspace)
    proc, shown = start_board(["--port", str(free_port())], env)  # every job of this machine
    assert shown["jobs"] == {"ball-1p3b": str(workspace / "examples" / "outputs" / "ball-1p3b" / "logs")}
    assert len(runs_listed(shown["url"], 1)) == 1
    proc.kill()
    proc.wait(30)
    assert not board_containers(docker.from_env(), shown["container"])


def test_board_bad_inputs(workspace, env):
    no_job = runner(["board", "nosuch"], env)
    assert no_job.returncode == 2 and "matches no job record" in no_job.stderr
    nothing = runner(["board"], env)
    assert nothing.returncode == 2 and "no job has run on this machine" in nothing.stderr and "runner train" in nothing.stderr
    # a run that failed while caching never trained: no event file
    job = workspace / "examples" / "oom.yaml"
    job.write_text((workspace / MUSUBI).read_text() + "env:\n  STANDIN_OOM_IN: cache-latents\n")
    assert runner(["train", job], env, cwd=workspace).returncode == 1
    empty = runner(["board", "ball-1p3b"], env)
    assert empty.returncode == 2 and "has no TensorBoard logs yet" in empty.stderr and "runner logs -f ball-1p3b" in empty.stderr
    train(MUSUBI, env, workspace)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = runner(["board", "ball-1p3b", "--port", str(port), "--json"], env)
    assert busy.returncode == 2 and busy.stdout == ""
    (error,) = json.loads(busy.stderr)["errors"]
    assert error["where"] == "--port" and "is taken on this machine" in error["problem"] and "--port" in error["fix"]
    bad_port = runner(["board", "--port", "70000"], env)
    assert bad_port.returncode == 2 and "--port" in bad_port.stderr


def test_board_on_a_host_forwards_its_port_over_ssh(workspace, env, on_host):
    on_host()
    train(MUSUBI, env, workspace, "--host", "gpu01")
    from tests.remotefixtures import engine

    elsewhere = runner(["board", "ball-1p3b", "--host", "local"], env)
    assert elsewhere.returncode == 2 and "has not run on --host local" in elsewhere.stderr and "gpu01" in elsewhere.stderr
    port = free_port()
    proc, shown = start_board(["ball-1p3b", "--port", str(port)], env)  # the job's host, found from its record
    try:
        assert shown["host"] == "gpu01" and shown["url"] == f"http://127.0.0.1:{port}/"
        assert shown["jobs"]["ball-1p3b"].endswith("/ball-1p3b/logs") and shown["jobs"]["ball-1p3b"].startswith("/srv/runner-test/gpu01/outputs/")
        (run,) = runs_listed(shown["url"], 1)
        assert run.startswith("ball-1p3b/") and run.endswith("/network_train")
        curve = get(f"{shown['url']}data/plugin/scalars/scalars?run={run}&tag=loss/epoch")
        assert [step for _, step, _ in curve] == list(range(1, 17))
        assert engine("gpu01").containers.list(filters={"name": shown["container"]}), "TensorBoard runs on the host"
    finally:
        code, err = stop_board(proc)
    assert code == 0 and "TensorBoard stopped" in err, err
    assert not board_containers(engine("gpu01"), shown["container"], seconds=0)


def test_a_killed_board_leaves_no_container_on_the_host(workspace, env, on_host):
    """kill -9 here: the SSH connection drops, `docker run -i` on the host sees its stdin end, TensorBoard stops, --rm."""
    on_host()
    train(MUSUBI, env, workspace, "--host", "gpu01")
    from tests.remotefixtures import engine

    proc, shown = start_board(["--host", "gpu01", "--port", str(free_port())], env)
    assert list(shown["jobs"]) == ["ball-1p3b"] and len(runs_listed(shown["url"], 1)) == 1
    proc.kill()
    proc.wait(30)
    assert not board_containers(engine("gpu01"), shown["container"])


# musubi logs a resumed run in a folder of its own (a second labelled run) and counts its steps from 0 again: the 42
# left after the state of epoch 2 (step 6); diffusion-pipe resumes into its run folder, whose curve goes on to step 48
@pytest.mark.parametrize("example, job, resumed_runs, last_step", [(MUSUBI, "ball-1p3b", 2, 42), (DIFFPIPE, "ball-1p3b-dp", 1, 48)])
def test_a_resumed_run_shows_as_its_trainer_logs_it(workspace, env, example, job, resumed_runs, last_step):
    path = workspace / example
    text = path.read_text()
    path.write_text(text + "env:\n  STANDIN_FAIL_AT_STEP: '8'\n")
    assert runner(["train", example], env, cwd=workspace).returncode == 1
    path.write_text(text)
    time.sleep(1.1)  # musubi names a run's log folder by the second it started
    r = runner(["resume", example], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    proc, shown = start_board([job, "--port", str(free_port())], env)
    try:
        runs = runs_listed(shown["url"], resumed_runs)
        assert len(runs) == resumed_runs and all(r.startswith(f"{job}/") for r in runs), runs
        tag = "loss/current" if example == MUSUBI else "train/loss"
        steps = [[step for _, step, _ in get(f"{shown['url']}data/plugin/scalars/scalars?run={run}&tag={tag}")] for run in sorted(runs)]
        assert steps[0][:7] == list(range(1, 8)), steps  # the first run, up to its failure
        assert steps[-1][-1] == last_step, steps  # the resumed run, to the end
    finally:
        code, err = stop_board(proc)
    assert code == 0, err


def test_a_connection_reset_inside_the_forward_does_not_fail_the_board():
    """Fabric re-raises a tunnel's error when its forward closes (seen in CI: ConnectionResetError after the test's
    HTTP client went away): a reset connection ends that connection only; any other error, and Ctrl-C, go on."""
    import contextlib as cl

    from invoke.exceptions import ThreadException
    from invoke.util import ExceptionWrapper

    from runner.jobs.board import forwarded

    class Conn:
        def __init__(self, error: BaseException):
            self.error = error

        @cl.contextmanager
        def forward_local(self, *args, **kwargs):
            try:
                yield
            finally:
                raise ThreadException([ExceptionWrapper({}, type(self.error), self.error, None)])

    with forwarded(Conn(ConnectionResetError(104, "Connection reset by peer")), 1, 2):
        pass
    with pytest.raises(KeyboardInterrupt), forwarded(Conn(ConnectionResetError(104, "reset")), 1, 2):
        raise KeyboardInterrupt
    with pytest.raises(ThreadException), forwarded(Conn(ValueError("a bug")), 1, 2):
        pass
