"""musubi on two machines without Slurm: the multi-node plan (runner.job.render.trainer_plan with nodes=2) run in two
containers of the stand-in musubi image on the real Docker engine, with host networking, started as Slurm starts
one task per node (SLURM_NODEID 0 and 1, the same compressed SLURM_JOB_NODELIST, whose hosts name this machine).
The caching steps run once first, as the Slurm executor runs them; then both machines train, meet at the
rendezvous, and only rank 0 saves (accelerate's is_main_process in musubi). Machine 1 gets an output folder of its
own, so that "it saved nothing" is a fact about files, not only about its log."""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

import pytest

from runner.images import builder
from runner.job import render
from runner.mounts import docker_volumes
from runner.trainers.multinode import PORT_BASE, PORT_SPAN
from tests.conftest import write_job
from tests.dockerfixtures import HOST_CA, STANDIN_PINS, require_docker, runner, runner_env
from tests.test_validation import job_text


@pytest.fixture(scope="module")
def musubi_image(tmp_path_factory) -> str:
    require_docker()
    r = runner(["build", "musubi"], runner_env(tmp_path_factory.mktemp("build")))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return builder.image_ref(builder.load_pins("musubi", pins_file=STANDIN_PINS), HOST_CA if HOST_CA.is_file() else None)


def run_container(client, image: str, name: str, plan_file: str, mounts, env: dict[str, str]):
    return client.containers.run(
        image, ["python", "/opt/runner/run_plan.py", f"/job/{plan_file}"], name=name, detach=True,
        user=f"{os.getuid()}:{os.getgid()}", working_dir="/opt/musubi-tuner", volumes=docker_volumes(mounts),
        environment=env, network_mode="host", extra_hosts={"node01": "127.0.0.1", "node02": "127.0.0.1"},
    )


def finished(container, timeout: float = 300) -> tuple[int, str]:
    code = container.wait(timeout=timeout)["StatusCode"]
    return code, container.logs().decode(errors="replace")


def test_two_containers_meet_and_only_rank_0_saves(musubi_image, workspace, tmp_path):
    import docker

    client = docker.from_env()
    job = write_job(workspace / "examples", job_text(extra="gpus: 1\nhf_cache: ../hf\nschedule:\n  epochs: 2\n"))
    (workspace / "hf").mkdir()
    job_dir = tmp_path / "job"
    plan = render.trainer_plan(render.load_checked(job), job_dir, nodes=2)
    render.write(plan, job_dir)
    once, every = render.node_plans(plan)
    (job_dir / "once.json").write_text(once.to_json())
    (job_dir / "node.json").write_text(every.to_json())
    own_outputs = tmp_path / "node1-outputs"
    own_outputs.mkdir()
    node1_mounts = [m if m.volume != "outputs" else type(m)(m.volume, str(own_outputs), m.container, m.read_only) for m in plan.mounts]

    suffix = uuid.uuid4().hex[:8]
    job_id = random.randrange(10**6)
    slurm = {"SLURM_JOB_NODELIST": "node[01-02]", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": str(job_id), "STANDIN_RDZV_TIMEOUT": "120"}
    env = {**plan.env, "STANDIN_STEP_SECONDS": "0"}
    started = []
    try:
        cache = run_container(client, musubi_image, f"runner-test-mn-{suffix}-cache", "once.json", plan.mounts, {**env, **slurm, "SLURM_NODEID": "0"})
        started.append(cache)
        code, log = finished(cache)
        assert code == 0, log
        # machine 1 first: it connects to node01 (this machine) and retries until machine 0 listens
        one = run_container(client, musubi_image, f"runner-test-mn-{suffix}-1", "node.json", node1_mounts, {**env, **slurm, "SLURM_NODEID": "1"})
        started.append(one)
        zero = run_container(client, musubi_image, f"runner-test-mn-{suffix}-0", "node.json", plan.mounts, {**env, **slurm, "SLURM_NODEID": "0"})
        started.append(zero)
        (code0, log0), (code1, log1) = finished(zero), finished(one)
    finally:
        for c in started:
            c.remove(force=True)
    assert code0 == 0 and code1 == 0, log0[-3000:] + log1[-3000:]
    port = PORT_BASE + job_id % PORT_SPAN
    for machine, log in ((0, log0), (1, log1)):
        assert f"runner: machine {machine} of 2, main process node01:{port}" in log
        assert "STAND-IN rendezvous: ranks met: world size 2, machine ranks [0, 1]" in log, log[-3000:]
        assert f"this machine's process rank {machine}" in log
    assert "saving checkpoint" in log0 and "saving checkpoint" not in log1
    assert "process rank 1 of 2: not the main process" in log1
    outputs = Path(next(m.host for m in plan.mounts if m.volume == "outputs"))
    saved = sorted(p.name for p in (outputs / "t").iterdir())
    assert {"t.safetensors", "t-000001.safetensors", "t-000001-state"} <= set(saved), saved
    assert not any(own_outputs.rglob("*")), "rank 1 wrote into its output folder"
