"""Slurm clusters against a real Slurm: slurmctld and munge on this machine, a slurmd in each fake host's network
namespace beside its own dockerd, a login node's sshd on 10.231.7.1:2222 (tests/infra/slurm-cluster.sh, started by
.ci/run). The stand-in trainers run in the jobs' containers (no GPU: RUNNER_GPUS=none)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.dockerfixtures import REPO, runner, runner_env
from tests.remotefixtures import CLIENT_KEY, require_remote, run_key
from tests.test_lifecycle import wait_for

LOGIN = "runnertest@10.231.7.1:2222"
LOGIN_KNOWN_HOSTS = Path("/var/lib/runner-test/slurm/known_hosts")
SHARED = Path("/srv/runner-test/slurm")
SLURM = REPO / "tests" / "infra" / "slurm-cluster.sh"
MUSUBI = "examples/t2v-1.3B-musubi.yaml"
DIFFPIPE = "examples/t2v-1.3B-diffpipe.yaml"


def slurm_missing_reason() -> str | None:
    try:
        socket.create_connection(("10.231.7.1", 2222), timeout=2).close()
    except OSError as e:
        return f"no Slurm login node on 10.231.7.1:2222 ({e}); run `bash tests/infra/slurm-cluster.sh up`"
    if subprocess.run(["scontrol", "ping"], capture_output=True, text=True).returncode != 0:
        return "slurmctld does not answer; run `bash tests/infra/slurm-cluster.sh up`"
    return None


def scontrol(*args: str) -> str:
    return subprocess.run(["scontrol", *args], capture_output=True, text=True, check=True, timeout=60).stdout


def job_state(job_id: str) -> dict[str, str]:
    return dict(f.split("=", 1) for f in scontrol("show", "job", "--oneliner", job_id).split() if "=" in f)


@pytest.fixture(scope="session")
def shared_models(tmp_path_factory) -> Path:
    """The stand-in images built here and the fixture models in a folder of the cluster's shared filesystem."""
    require_remote()
    reason = slurm_missing_reason()
    if reason:
        if os.environ.get("RUNNER_REQUIRE_REMOTE") == "1":
            pytest.fail(f"RUNNER_REQUIRE_REMOTE=1 but {reason}")
        pytest.skip(reason)
    from tests import modelfixtures

    tmp = tmp_path_factory.mktemp("slurm")
    for trainer in ("musubi", "diffpipe"):
        r = runner(["build", trainer], runner_env(tmp))
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    root = SHARED / f"t-{uuid.uuid4().hex[:8]}"
    modelfixtures.models_root(root / "models")
    subprocess.run(["chown", "-R", "runnertest:runnertest", root], check=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def env(shared_models, tmp_path) -> dict[str, str]:
    env = runner_env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "config"))
    yield env
    for r in _records(env):  # nothing left queued or running on the cluster
        if r["scheduler_id"]:
            subprocess.run(["scancel", r["scheduler_id"]], capture_output=True)


@pytest.fixture
def cluster(env, shared_models) -> dict[str, str]:
    """A cluster `hpc` with per-test shared folders (removed afterwards)."""
    tag = uuid.uuid4().hex[:8]
    dirs = {v: f"{shared_models}/{v}-{tag}" for v in ("data", "cache", "outputs")}
    r = runner(["clusters", "add", "hpc", "--slurm", "--login", LOGIN, "--key", CLIENT_KEY, "--known-hosts", LOGIN_KNOWN_HOSTS,
                "--models", f"{shared_models}/models", *[a for v, d in dirs.items() for a in (f"--{v}", d)]], env)
    assert r.returncode == 0, r.stderr
    assert "docker on gpu0" in r.stdout, r.stdout
    yield dirs
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)


def _records(env) -> list[dict]:
    return [json.loads(p.read_text()) for p in (Path(env["RUNNER_STATE"]) / "jobs").glob("*/record.json")]


def _job(workspace: Path, name: str, base: str = MUSUBI, extra: str = "") -> Path:
    job = workspace / "examples" / f"{name}.yaml"
    job.write_text((workspace / base).read_text() + extra)
    return job


def _log(cluster: dict[str, str], record: dict) -> str:
    path = Path(cluster["cache"]) / "slurm" / record["container"] / "log"
    return path.read_text() if path.is_file() else ""


def _node_back(node: str) -> bool:
    """The node is up again: its slurmd re-registered (ReturnToService=2), or a RESUME took once its jobs' processes ended."""
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], capture_output=True)
    state = subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"], capture_output=True, text=True).stdout.strip()
    return not state.startswith(("down", "drain"))


def _containers(name: str) -> list[str]:
    found = []
    for host in ("gpu01", "gpu02"):
        r = subprocess.run(["docker", "-H", f"unix:///run/runner-test/{host}/docker.sock", "ps", "-aq", "--filter", f"name=^{name}$"],
                           capture_output=True, text=True)
        found += r.stdout.split()
    return found


# --- the inventory and what is refused ------------------------------------------------------------


def test_clusters_add_list_remove(env, cluster, shared_models):
    listing = runner(["clusters", "list", "--json"], env)
    (entry,) = json.loads(listing.stdout)["clusters"]
    assert entry["name"] == "hpc" and entry["ssh"] == LOGIN and entry["runtime"] == "docker" and entry["scheduler"] == "slurm"
    saved = (Path(env["XDG_CONFIG_HOME"]) / "runner" / "clusters.yaml").read_text()
    assert LOGIN in saved and cluster["cache"] in saved
    again = runner(["clusters", "add", "hpc", "--slurm", "--login", "runnertest@10.231.7.9"], env)
    assert again.returncode == 2 and "--replace" in again.stderr
    assert runner(["clusters", "remove", "hpc"], env).returncode == 0
    assert "hpc" not in runner(["clusters", "list"], env).stdout


@pytest.mark.parametrize("args, message", [
    (["--partition", "-x"], "--partition"),
    (["--runtime", "podman"], "--runtime"),
    (["--login", "-oProxyCommand=x"], "--login"),
])
def test_clusters_add_refuses_bad_options(env, args, message):
    base = {"--login": LOGIN}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    r = runner(["clusters", "add", "hpc", "--slurm", *[a for kv in base.items() for a in kv]], env)
    assert r.returncode == 2 and message in r.stderr and "Fix:" in r.stderr, r.stderr
    assert not (Path(env["XDG_CONFIG_HOME"]) / "runner" / "clusters.yaml").exists()


def test_clusters_add_needs_slurm_and_a_runtime_the_nodes_have(env, shared_models):
    plain = runner(["clusters", "add", "hpc", "--login", LOGIN], env)
    assert plain.returncode == 2 and "--slurm" in plain.stderr
    enroot = runner(["clusters", "add", "hpc", "--slurm", "--login", LOGIN, "--key", CLIENT_KEY, "--known-hosts", LOGIN_KNOWN_HOSTS,
                     "--runtime", "enroot"], env)
    assert enroot.returncode == 2, enroot.stderr
    assert "--runtime enroot: is not on the compute node gpu0" in enroot.stderr and "it has: docker" in enroot.stderr, enroot.stderr
    assert "use --runtime docker" in enroot.stderr
    assert not (Path(env["XDG_CONFIG_HOME"]) / "runner" / "clusters.yaml").exists(), "nothing stored"


def test_clusters_add_refuses_a_partition_the_cluster_lacks(env, shared_models):
    r = runner(["clusters", "add", "hpc", "--slurm", "--login", LOGIN, "--key", CLIENT_KEY, "--known-hosts", LOGIN_KNOWN_HOSTS,
                "--partition", "nosuch"], env)
    assert r.returncode == 2 and "srun on a compute node failed" in r.stderr and "nosuch" in r.stderr, r.stderr
    assert not (Path(env["XDG_CONFIG_HOME"]) / "runner" / "clusters.yaml").exists(), "nothing stored"


@pytest.mark.parametrize("args, message", [
    (["--cluster", "nowhere"], "is not in the clusters inventory"),
    (["--cluster", "hpc", "--nodes", "0"], "--nodes"),
    (["--cluster", "hpc", "--nodes", "two"], "--nodes"),
    (["--cluster", "hpc", "--nodes", "5000"], "--nodes"),
    (["--nodes", "2"], "no --cluster is given"),
    (["--cluster", "hpc", "--host", "gpu01"], "both given"),
])
def test_train_refuses_bad_cluster_options_and_submits_nothing(workspace, env, cluster, args, message):
    r = runner(["train", MUSUBI, *args], env, cwd=workspace)
    assert r.returncode == 2 and message in r.stderr and "Fix:" in r.stderr, r.stderr
    assert not _records(env) and not (Path(cluster["cache"]) / "slurm").exists()


@pytest.mark.parametrize("command", [["train"], ["resume"]])
def test_diffpipe_on_two_nodes_is_refused_with_the_reason(workspace, env, cluster, command):
    r = runner([*command, DIFFPIPE, "--cluster", "hpc", "--nodes", "2"], env, cwd=workspace)
    assert r.returncode == 2, r.stderr
    assert "--nodes: is 2, and diffusion-pipe 8f83dbf trains on one machine only" in r.stderr, r.stderr
    assert "deepspeed --num_gpus" in r.stderr and "Manager queue" in r.stderr and "Fix: use --nodes 1" in r.stderr
    assert not _records(env) and not (Path(cluster["cache"]) / "slurm").exists()


def test_musubi_on_two_nodes_meets_at_the_rendezvous_and_only_rank_0_saves(workspace, env, cluster):
    """One Slurm job of both nodes: the caching steps once, on one node, then a training task on each node; the two
    stand-in accelerate launches meet at rank 0's port on the first node (torch's static rendezvous: each waits
    for the other), and only machine 0 saves, as musubi saves on accelerate's main process only."""
    job = _job(workspace, "sl-2n", extra="gpus: 1\nenv:\n  STANDIN_RDZV_TIMEOUT: '120'\n")
    r = runner(["train", job, "--cluster", "hpc", "--nodes", "2"], env, cwd=workspace, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert "(2 nodes each)" in r.stderr, r.stderr
    (record,) = _records(env)
    assert record["status"] == "exited" and record["nodes"] == 2
    state = job_state(record["scheduler_id"])
    assert state["JobState"] == "COMPLETED" and state["NumNodes"] == "2" and state["NodeList"] == "gpu[01-02]", state
    job_folder = next((Path(cluster["cache"]) / run_key(env, "ball-1p3b") / "jobs").glob("runner-*"))
    assert {"plan.json", "plan-once.json", "plan-every-node.json", "multinode_launch.py"} <= {p.name for p in job_folder.iterdir()}
    log = _log(cluster, record)
    assert log.count("[runner] step 1/2 cache-latents start") == 1 and log.count("[runner] step 1/1 train start") == 2, log[-4000:]
    port = 29600 + int(record["scheduler_id"]) % 3000  # runner.trainers.multinode: PORT_BASE + SLURM_JOB_ID % PORT_SPAN
    for machine in (0, 1):
        assert f"runner: machine {machine} of 2, main process gpu01:{port}" in log, log[-4000:]
        assert f"this machine's process rank {machine}" in log
    assert log.count("STAND-IN rendezvous: ranks met: world size 2, machine ranks [0, 1]") == 2, log[-4000:]
    assert log.count("STAND-IN: process rank 1 of 2: not the main process") == 1
    saves = [line.split(": ", 1)[1] for line in log.splitlines() if line.startswith("saving checkpoint: ")]
    assert saves and len(saves) == len(set(saves)), "each LoRA is saved once, by machine 0"
    outputs = Path(cluster["outputs"]) / run_key(env, "ball-1p3b") / "ball-1p3b"
    assert {Path(s).name for s in saves} <= {p.name for p in outputs.iterdir()} and (outputs / "ball-1p3b.safetensors").is_file()
    assert log.count("[runner] done") == 3  # the steps run once, then each node's training


# --- jobs on the cluster ------------------------------------------------------------------------------


def test_submit_follow_pull_and_no_secret_anywhere(workspace, env, cluster):
    secret = f"hf_{uuid.uuid4().hex}"
    job = _job(workspace, "sl-run", extra="env:\n  HF_TOKEN: " + secret + "\n")
    r = runner(["train", job, "--cluster", "hpc"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "submitted Slurm job" in r.stderr and "STAND-IN" in r.stdout and "[runner] done" in r.stdout
    (record,) = _records(env)
    assert record["host"] == "slurm:hpc" and record["status"] == "exited" and record["exit_code"] == 0
    assert record["scheduler_id"].isdigit() and job_state(record["scheduler_id"])["JobState"] == "COMPLETED"
    run = Path(cluster["cache"]) / "slurm" / record["container"]
    assert {"batch.sh", "node.sh", "log", "job-id"} <= {p.name for p in run.iterdir()}
    assert "HF_TOKEN" in (Path(env["RUNNER_STATE"]) / "jobs" / record["id"] / "job" / "plan.json").read_text()
    for root in (run, Path(cluster["data"]), Path(cluster["outputs"]), Path(env["RUNNER_STATE"])):
        for f in root.rglob("*"):
            assert not f.is_file() or secret not in f.read_text(errors="replace"), f"{f} holds the secret"
    assert secret not in scontrol("show", "job", "--details", record["scheduler_id"])
    assert not _containers(record["container"]), "the node's container removed itself"

    pulled = runner(["pull", "ball-1p3b"], env)
    assert pulled.returncode == 0, pulled.stderr
    assert (workspace / "examples" / "outputs" / "ball-1p3b" / "ball-1p3b.safetensors").is_file()
    shown = runner(["logs", "ball-1p3b"], env)
    assert shown.returncode == 0 and "[runner] done" in shown.stdout
    listed = runner(["ps", "--json"], env)
    assert [j["scheduler_id"] for j in json.loads(listed.stdout)["jobs"]] == [record["scheduler_id"]]


def test_the_secret_reaches_the_trainer_and_no_argv(workspace, env, cluster):
    """The namespaces share this machine's processes: while the job runs, no process's argv holds the value, and the
    trainer's environment does (sbatch's environment → node.sh → the container's stdin)."""
    secret = f"hf_{uuid.uuid4().hex}"
    job = _job(workspace, "sl-secret", extra="env:\n  HF_TOKEN: " + secret + "\n  STANDIN_STEP_SECONDS: '0.3'\n")
    tokens: set[str] = set()  # HF_TOKEN of every stand-in trainer seen (other tests' jobs may run meanwhile)
    argv_leaks: list[str] = []
    proc = subprocess.Popen(["runner", "train", job, "--cluster", "hpc"], env=env, cwd=workspace, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if secret in argv:
                    argv_leaks.append(argv)
                if "musubi_tuner/wan_" in argv:
                    environ = dict(e.decode(errors="replace").split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in e)
                    tokens.add(environ.get("HF_TOKEN", ""))
                    assert "RUNNER_SECRETS" not in environ
            except OSError:
                continue
        time.sleep(0.2)  # the trainer runs for seconds (48 steps of 0.3 s)
    out, err = proc.communicate()
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert secret in tokens
    assert not argv_leaks and secret not in out + err


def test_detached_job_logs_follow_and_stop(workspace, env, cluster):
    job = _job(workspace, "sl-stop", extra="env:\n  STANDIN_STEP_SECONDS: '1'\n")
    r = runner(["train", job, "--cluster", "hpc", "-d"], env, cwd=workspace)
    assert r.returncode == 0 and "runner logs -f" in r.stdout, r.stderr
    (record,) = _records(env)
    wait_for(lambda: "steps:" in _log(cluster, record), 120, "training steps in the Slurm log")
    follower = subprocess.Popen(["runner", "logs", "-f", record["id"]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    stopped = runner(["stop", record["id"]], env)
    assert stopped.returncode == 0 and f"stopped {record['id']}" in stopped.stdout, stopped.stdout + stopped.stderr
    out, err = follower.communicate(timeout=180)
    assert follower.returncode == 0 and "steps:" in out, out[-2000:] + err[-2000:]
    (record,) = _records(env)
    assert record["status"] == "stopped"
    assert job_state(record["scheduler_id"])["JobState"] == "CANCELLED"
    assert not _containers(record["container"]), "scancel stopped and removed the node's container"
    assert "STAND-IN" in runner(["logs", record["id"]], env).stdout


def test_failing_job_exit_code_comes_back(workspace, env, cluster):
    job = _job(workspace, "sl-fail", extra="env:\n  STANDIN_FAIL_AT_STEP: '4'\n")
    r = runner(["train", job, "--cluster", "hpc"], env, cwd=workspace)
    assert r.returncode not in (0, 2), r.stdout[-2000:]
    (record,) = _records(env)
    assert record["status"] == "failed" and record["exit_code"] == r.returncode


@pytest.mark.parametrize("fault, nodes", [("requeue", 1), ("node-down", 1), ("requeue", 2)])
def test_a_requeued_job_resumes_from_its_last_checkpoint(workspace, env, cluster, fault, nodes):
    """nodes 2: the resume is rendered for both nodes again (the run's record keeps its node count), and they meet again
    at the same port (the job id is the same) while the first start's connections may still be in TIME_WAIT."""
    job = _job(workspace, f"sl-{fault}-{nodes}", extra="gpus: 1\nenv:\n  STANDIN_STEP_SECONDS: '0.5'\n  STANDIN_RDZV_TIMEOUT: '120'\n")
    r = runner(["train", job, "--cluster", "hpc", "--nodes", str(nodes), "-d"], env, cwd=workspace)
    assert r.returncode == 0, r.stderr
    (record,) = _records(env)
    wait_for(lambda: "saving state at epoch 2" in _log(cluster, record), 120, "the second epoch's state")
    node = job_state(record["scheduler_id"])["NodeList"]
    if fault == "requeue":
        scontrol("requeue", record["scheduler_id"])
    else:
        scontrol("update", f"NodeName={node}", "State=DOWN", "Reason=runner-test")
    try:
        wait_for(lambda: job_state(record["scheduler_id"])["JobState"] == "PENDING", 120, "the job requeued")
        if fault == "node-down":
            wait_for(lambda: _node_back(node), 120, "the node back")
        followed = runner(["logs", "-f", record["id"]], env, timeout=300)
    finally:
        if fault == "node-down":
            subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], capture_output=True)
    assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr[-3000:]
    assert "runner: requeued;" in followed.stdout, followed.stdout[-5000:]
    said = followed.stdout + followed.stderr
    assert "continues from its last checkpoint" in said and "resuming from ball-1p3b-00000" in said, said[-5000:]
    (record,) = _records(env)
    assert record["status"] == "exited" and record["exit_code"] == 0
    assert int(job_state(record["scheduler_id"])["Restarts"]) >= 1
    resumed = followed.stdout.split("continues from its last checkpoint", 1)[-1]
    assert resumed.count("STAND-IN rendezvous: ranks met: world size 2") == (2 if nodes == 2 else 0), resumed[-4000:]
    saved = {p.name for p in (Path(cluster["outputs"]) / run_key(env, "ball-1p3b") / "ball-1p3b").iterdir()}
    epochs = int(re.search(r"num epochs / epoch数: (\d+)", _log(cluster, record)).group(1))  # fewer on 2 machines: their batches add up
    assert epochs > 3, epochs  # saves of the resumed start too
    assert {f"ball-1p3b-{e:06d}.safetensors" for e in range(1, epochs)} | {"ball-1p3b.safetensors"} <= saved


# --- job arrays -----------------------------------------------------------------------------------------


def _named(workspace: Path, base: str, name: str, extra: str = "") -> Path:
    job = workspace / "examples" / f"{name}.yaml"
    text = (workspace / base).read_text()
    job.write_text(text.replace(f"name: {text.split('name: ', 1)[1].split()[0]}", f"name: {name}", 1) + extra)
    return job


def test_several_jobs_are_one_job_array(workspace, env, cluster):
    jobs = [_named(workspace, MUSUBI, "sl-arr-m"), _named(workspace, DIFFPIPE, "sl-arr-d"),
            _named(workspace, MUSUBI, "sl-arr-s", "env:\n  HF_TOKEN: hf_arraysecret\n")]
    r = runner(["train", *jobs, "--cluster", "hpc"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "job array" in r.stderr and r.stdout.count("follow it with `runner logs -f") == 3, r.stdout + r.stderr
    by_name = {rec["name"]: rec for rec in _records(env)}
    assert set(by_name) == {"sl-arr-m", "sl-arr-d", "sl-arr-s"}
    array = {rec["scheduler_id"].split("_")[0] for rec in by_name.values()}
    assert len(array) == 1 and sorted(rec["scheduler_id"].split("_")[1] for rec in by_name.values()) == ["0", "1", "2"]
    for name, rec in by_name.items():
        followed = runner(["logs", "-f", rec["id"]], env, timeout=300)
        assert followed.returncode == 0 and "[runner] done" in followed.stdout, followed.stdout[-2000:] + followed.stderr[-2000:]
        assert job_state(rec["scheduler_id"])["ArrayJobId"] == next(iter(array))
        assert "hf_arraysecret" not in followed.stdout + _log(cluster, rec)
    assert {rec["status"] for rec in _records(env)} == {"exited"}
    assert (Path(cluster["outputs"]) / run_key(env, "sl-arr-d") / "sl-arr-d").is_dir()


def test_a_sweep_is_one_job_array(workspace, env, cluster):
    job = _named(workspace, MUSUBI, "sl-sweep", "sweep:\n  lora.rank: [4, 8]\n")
    r = runner(["train", job, "--cluster", "hpc"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "a sweep of 2 jobs" in r.stdout and "job array" in r.stderr, r.stdout + r.stderr
    by_name = {rec["name"]: rec for rec in _records(env)}
    assert set(by_name) == {"sl-sweep-rank4", "sl-sweep-rank8"}
    assert len({rec["scheduler_id"].split("_")[0] for rec in by_name.values()}) == 1
    for name, rec in by_name.items():
        followed = runner(["logs", "-f", rec["id"]], env, timeout=300)
        assert followed.returncode == 0 and "[runner] done" in followed.stdout, followed.stdout[-2000:] + followed.stderr[-2000:]
        assert f"--network_dim {name.removeprefix('sl-sweep-rank')} " in followed.stdout
        assert (Path(cluster["outputs"]) / run_key(env, name) / name / f"{name}.safetensors").is_file()


def test_an_array_with_one_bad_job_submits_nothing(workspace, env, cluster):
    good = _named(workspace, MUSUBI, "sl-arr-ok")
    bad = _named(workspace, MUSUBI, "sl-arr-bad")
    bad.write_text(bad.read_text().replace("frames: [33]", "frames: [32]"))
    r = runner(["train", good, bad, "--cluster", "hpc"], env, cwd=workspace)
    assert r.returncode == 2 and "frames" in r.stderr, r.stderr
    assert not _records(env) and not list((Path(cluster["cache"]) / "slurm").glob("*/job-id"))
    twice = runner(["train", good, good, "--cluster", "hpc"], env, cwd=workspace)
    assert twice.returncode == 2 and "twice" in twice.stderr
    two_nodes = runner(["train", _named(workspace, DIFFPIPE, "sl-arr-dp"), good, "--cluster", "hpc", "--nodes", "2"], env, cwd=workspace)
    assert two_nodes.returncode == 2 and "diffusion-pipe 8f83dbf trains on one machine only" in two_nodes.stderr
    assert not _records(env)
