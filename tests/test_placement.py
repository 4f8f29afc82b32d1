"""Several jobs at once on plain SSH hosts: `runner train a.yaml b.yaml --host g1 --host g2` places each on a host with
free GPUs, or refuses before anything starts.

Real parts: the two SSH test hosts (tests/infra/), their dockerds, the stand-in trainer images, the `runner` command.
Stood in: the GPUs. Each test host gets a second sshd of this test's own (same network namespace, host key and Docker
engine) whose sessions find the STAND-IN `nvidia-smi` (tests/standin/nvidia-smi/) first on their PATH, beside the
recorded outputs of tests/fixtures/nvidia-smi/ it answers with (gpu01: two RTX 4090, gpu02: one H200). The containers
still start without GPUs (RUNNER_GPUS=none): no GPU runtime exists here.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from runner.errors import JobInvalid
from runner.executors.container import ContainerSpec
from runner.gpu.inventory import gather
from runner.jobs.placement import HostGpus, Wanted, place
from tests.conftest import write_job
from tests.dockerfixtures import BASE_IMAGE, require_docker, runner
from tests.fakeshell import FIXTURES, SMI_FILES, FakeShell
from tests.remotefixtures import ADDRESS, INFRA, SRV, add_host, engine, host_dirs
from tests.test_remote import _records, env, remote_models  # noqa: F401  (fixtures)

CARDS = {"gpu01": "rtx4090x2", "gpu02": "h200"}
STANDIN_SMI = Path(__file__).parent / "standin" / "nvidia-smi" / "nvidia-smi"


def _inventory(card: str, host: str):
    return gather(FakeShell(host, card))


# --- placement itself ------------------------------------------------------------------------------------------


def test_each_job_goes_to_the_first_host_with_enough_free_gpus():
    two, one = HostGpus("g1", _inventory("rtx4090x2", "g1"), {}), HostGpus("g2", _inventory("h200", "g2"), {})
    placed = place([Wanted(Path(f"{n}.yaml"), n, 1) for n in "abc"], [two, one])
    assert [(p.name, p.host, p.gpu_ids) for p in placed] == [("a", "g1", (0,)), ("b", "g1", (1,)), ("c", "g2", (0,))]
    placed = place([Wanted(Path("one.yaml"), "one", 1), Wanted(Path("pair.yaml"), "pair", 2)], [one, two])
    assert [(p.name, p.host, p.gpu_ids) for p in placed] == [("one", "g2", (0,)), ("pair", "g1", (0, 1))]


def test_gpus_held_by_runs_are_not_free_and_a_job_that_fits_nowhere_refuses_all():
    busy = HostGpus("g1", _inventory("rtx4090x2", "g1"), {0: "old-run"})
    one = HostGpus("g2", _inventory("h200", "g2"), {})
    assert busy.free == [1]
    with pytest.raises(JobInvalid) as e:
        place([Wanted(Path("a.yaml"), "a", 1), Wanted(Path("big.yaml"), "big", 2), Wanted(Path("b.yaml"), "b", 1), Wanted(Path("c.yaml"), "c", 1)],
              [busy, one])
    (refused, third) = e.value.errors
    assert refused.where == "big.yaml" and "needs 2 GPUs" in refused.problem and "Nothing was started" in refused.problem
    assert "g1: 0 of 2 free (GPU 0 held by old-run, GPU 1 held by a (this submission))" in refused.problem
    assert third.where == "c.yaml" and "g2: 0 of 1 free (GPU 0 held by b (this submission))" in third.problem
    none = HostGpus("cpu", gather(FakeShell("cpu")), {})
    with pytest.raises(JobInvalid) as e:
        place([Wanted(Path("a.yaml"), "a", 1)], [none])
    assert "cpu: no GPU (no NVIDIA GPU/driver visible on cpu: nvidia-smi is not installed)" in e.value.errors[0].problem


def test_a_container_gets_only_its_gpus():
    spec = ContainerSpec(image="img", name="n", command=["true"], mounts=[], env={}, user="1:1", workdir="/", gpu_ids=(0, 1))
    argv = spec.cli_argv()
    assert argv[argv.index("--gpus") + 1] == '"device=0,1"'
    assert spec.sdk_kwargs()["device_requests"][0]["DeviceIDs"] == ["0", "1"]
    whole = ContainerSpec(image="img", name="n", command=["true"], mounts=[], env={}, user="1:1", workdir="/")
    assert whole.cli_argv()[whole.cli_argv().index("--gpus") + 1] == "all"
    assert ContainerSpec.from_record({**spec.record(), "env": {}}, "n", {}).gpu_ids == (0, 1)


def test_the_docker_cli_reads_the_device_list_as_two_gpus():
    """The real docker CLI parses --gpus as CSV: the argv runner gives it must come out as both ids, not a parse error."""
    require_docker()
    spec = ContainerSpec(image=BASE_IMAGE, name=f"runner-test-gpus-{uuid.uuid4().hex[:8]}", command=["true"], mounts=[], env={},
                         user="0:0", workdir="/", gpu_ids=(0, 1))
    argv = spec.cli_argv()
    create = ["docker", "create", *argv[argv.index("--name"):]]
    r = subprocess.run(create, capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        inspect = subprocess.run(["docker", "inspect", spec.name, "--format", "{{json .HostConfig.DeviceRequests}}"], capture_output=True, text=True)
        assert json.loads(inspect.stdout)[0]["DeviceIDs"] == ["0", "1"]
    finally:
        subprocess.run(["docker", "rm", "--force", spec.name], capture_output=True)


# --- on the SSH test hosts -----------------------------------------------------------------------------------


def _free_port(address: str) -> int:
    for port in range(2200, 2300):
        with socket.socket() as s:
            if s.connect_ex((address, port)) != 0:
                return port
    raise RuntimeError("no free port 2200-2299")


@pytest.fixture
def gpu_hosts(env, remote_models, tmp_path):  # noqa: F811
    """add(name, host): an inventory entry for `host` reached through a test sshd whose PATH has the stand-in nvidia-smi."""
    started: list[tuple[subprocess.Popen | None, Path, list[str]]] = []

    def add(name: str, host: str) -> None:
        tag = uuid.uuid4().hex[:8]
        bin_dir = SRV / host / "cache" / f"t-smi-{tag}"
        bin_dir.mkdir(parents=True)
        for suffix in ["query.csv", *SMI_FILES.values()]:
            if (FIXTURES / f"{CARDS[host]}-{suffix}").exists():
                shutil.copy(FIXTURES / f"{CARDS[host]}-{suffix}", bin_dir / suffix)
        shutil.copy(STANDIN_SMI, bin_dir / "nvidia-smi")
        address, port = ADDRESS[host], _free_port(ADDRESS[host])
        cfg, pid = tmp_path / f"sshd-{name}.conf", tmp_path / f"sshd-{name}.pid"
        cfg.write_text(f"ListenAddress {address}:{port}\nHostKey {INFRA / host / 'ssh_host_ed25519_key'}\nPidFile {pid}\nAllowUsers runnertest\n"
                       "AuthenticationMethods publickey\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM no\n"
                       f"SetEnv DOCKER_HOST=unix:///run/runner-test/{host}/docker.sock RUNNER_TEST_HOST={host} PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin\n"
                       "Subsystem sftp internal-sftp\nMaxStartups 64\nMaxSessions 64\n")
        subprocess.run(["nsenter", f"--net=/run/netns/{host}", "/usr/sbin/sshd", "-f", cfg, "-E", tmp_path / f"sshd-{name}.log"], check=True)
        for _ in range(50):
            if pid.exists():
                break
            time.sleep(0.1)
        key = " ".join((INFRA / host / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        known = tmp_path / f"known_hosts-{name}"
        known.write_text(f"[{address}]:{port} {key}\n")
        dirs = host_dirs(host)
        started.append((pid, bin_dir, list(dirs.values())))
        add_host(env, name, host, remote_models.format(host=host), dirs, known_hosts=known, ssh=f"runnertest@{address}:{port}")

    yield add
    for pid, bin_dir, dirs in started:
        if pid.exists():
            subprocess.run(["kill", pid.read_text().strip()])
        for d in [bin_dir, *dirs]:
            shutil.rmtree(d, ignore_errors=True)


def _job(workspace: Path, name: str, gpus: int) -> Path:
    """A diffusion-pipe job slow enough (5 s a step) to hold its GPUs while the test looks; the test stops it."""
    text = (workspace / "examples" / "t2v-1.3B-diffpipe.yaml").read_text().replace("name: ball-1p3b-dp", f"name: {name}")
    job = workspace / "examples" / f"{name}.yaml"
    job.write_text(text + f"gpus: {gpus}\nenv:\n  STANDIN_STEP_SECONDS: '5'\n")
    return job


def test_jobs_are_placed_on_hosts_with_free_gpus_and_refused_when_none_fits(workspace, env, gpu_hosts):  # noqa: F811
    gpu_hosts("g1", "gpu01")
    gpu_hosts("g2", "gpu02")
    pair, single, third = _job(workspace, "pl-pair", 2), _job(workspace, "pl-one", 1), _job(workspace, "pl-three", 1)

    refused = runner(["train", pair, single, third, "--host", "g1", "--host", "g2"], env, cwd=workspace)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "job pl-three needs 1 GPU, and no host has that many free" in refused.stderr
    assert "g1: 0 of 2 free (GPU 0 held by pl-pair (this submission), GPU 1 held by pl-pair (this submission))" in refused.stderr
    assert _records(env) == [] and not any(c.name.startswith("runner-pl-") for h in ADDRESS for c in engine(h).containers.list(all=True))

    r = runner(["train", pair, single, "--host", "g1", "--host", "g2"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = {rec["name"]: rec for rec in _records(env)}
    assert (records["pl-pair"]["host"], records["pl-pair"]["gpu_ids"]) == ("g1", [0, 1])
    assert (records["pl-one"]["host"], records["pl-one"]["gpu_ids"]) == ("g2", [0])
    assert "placing pl-pair" in r.stdout and f"`runner logs -f {records['pl-one']['id']}`" in r.stdout
    assert {records["pl-pair"]["container"]} <= {c.name for c in engine("gpu01").containers.list()}, "started, detached"
    plan = json.loads((Path(env["RUNNER_STATE"]) / "jobs" / records["pl-pair"]["id"] / "job" / "plan.json").read_text())
    assert plan["container"]["gpu_ids"] == [0, 1]

    ps = runner(["ps", "--json"], env)
    assert {(j["name"], j["host"], j["status"]) for j in json.loads(ps.stdout)["jobs"]} == {("pl-pair", "g1", "running"), ("pl-one", "g2", "running")}

    full = runner(["train", third, "--host", "g1", "--host", "g2"], env, cwd=workspace)
    assert full.returncode == 2 and f"GPU 0 held by {records['pl-one']['id']}" in full.stderr, full.stderr

    assert runner(["stop", records["pl-one"]["id"]], env).returncode == 0
    after = runner(["train", third, "--host", "g1", "--host", "g2"], env, cwd=workspace)
    assert after.returncode == 0, after.stdout[-3000:] + after.stderr[-3000:]
    placed = next(rec for rec in _records(env) if rec["name"] == "pl-three")
    assert (placed["host"], placed["gpu_ids"]) == ("g2", [0]), "the stopped run's GPU is free again"
    for rec in _records(env):
        runner(["stop", rec["id"]], env)


def test_one_job_on_one_host_runs_as_before(workspace, env, gpu_hosts):  # noqa: F811
    gpu_hosts("g1", "gpu01")
    r = runner(["train", _job(workspace, "pl-alone", 1), "--host", "g1", "--detach"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (rec,) = _records(env)
    assert rec["gpu_ids"] == [] and "placing" not in r.stdout, "no placement: the container gets every GPU, as before"
    runner(["stop", rec["id"]], env)


def test_a_sweep_is_placed_as_its_jobs(workspace, env, gpu_hosts):  # noqa: F811
    gpu_hosts("g1", "gpu01")
    gpu_hosts("g2", "gpu02")
    job = _job(workspace, "pl-sweep", 1)
    job.write_text(job.read_text() + "sweep:\n  lora.rank: [4, 8, 16]\n")
    r = runner(["train", job, "--host", "g1", "--host", "g2"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "a sweep of 3 jobs: pl-sweep-rank4 (lora.rank=4); pl-sweep-rank8 (lora.rank=8); pl-sweep-rank16 (lora.rank=16)" in " ".join(r.stdout.split())
    placed = {rec["name"]: (rec["host"], rec["gpu_ids"]) for rec in _records(env)}
    assert placed == {"pl-sweep-rank4": ("g1", [0]), "pl-sweep-rank8": ("g1", [1]), "pl-sweep-rank16": ("g2", [0])}, placed
    for rec in _records(env):
        plan = json.loads((Path(env["RUNNER_STATE"]) / "jobs" / rec["id"] / "job" / "plan.json").read_text())
        assert plan["settings"]["lora"]["rank"] == int(rec["name"].removeprefix("pl-sweep-rank"))
        assert Path(rec["job_file"]).parent.parent == Path(env["RUNNER_STATE"]) / "sweeps"
    for rec in _records(env):
        runner(["stop", rec["id"]], env)


def test_a_job_file_given_twice_or_a_bad_one_is_refused_before_any_host_is_asked(cli, workspace, tmp_path):
    job = workspace / "examples" / "t2v-1.3B-musubi.yaml"
    code, _, err = cli("train", job, str(job), "--host", "nosuch", "--host", "other")
    assert code == 2 and f"error: {job}: is given twice" in err, err
    bad = tmp_path / "b.yaml"
    bad.write_text("name: b\ntrainer: nosuch\n")
    code, _, err = cli("train", job, bad, "--host", "nosuch")
    assert code == 2 and str(bad) in err and "nosuch" in err and "hosts inventory" not in err, err
    code, _, err = cli("train", job, "--host", "nosuch", "--host", "other")
    assert code == 2 and "host 'nosuch': is not in the hosts inventory" in err, err


@pytest.mark.parametrize("gpus", ["all", "[0, 1]"])
def test_a_job_that_names_its_gpus_is_refused_in_a_placed_submission(cli, workspace, gpus):
    job = workspace / "examples" / "t2v-1.3B-musubi.yaml"
    named = write_job(workspace / "examples", job.read_text() + f"gpus: {gpus}\n", "named.yaml")
    code, _, err = cli("train", job, named, "--host", "nosuch")
    assert code == 2 and f"{named}: gpus" in err and "give a count" in err, err
