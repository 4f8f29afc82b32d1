"""plan.json is the record of what ran: the container started from it alone, with the real engine and the
stand-in image, makes the same run as `runner train` did (same steps, same commands, same outputs).

Stood in: the GPU (RUNNER_GPUS=none) and the trainers (tests/standin/).
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from pathlib import Path

import pytest

from tests.dockerfixtures import require_docker, runner, runner_env

# named by when and where they started: diffusion-pipe's run folder, musubi's log folder, TensorBoard event files
RUN_FOLDER = re.compile(r"\d{8}_\d{2}-\d{2}-\d{2}|(?<=logs/)\d{14}|(?<=events\.out\.tfevents\.).*")


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    require_docker()
    env = runner_env(tmp_path)
    for trainer in ("musubi", "diffpipe"):
        r = runner(["build", trainer], env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return env


def _markers(lines: list[str]) -> list[str]:
    """run_plan.py's lines: each step's start (with its argv and env), skip or exit code, and the end."""
    return [line for line in lines if line.startswith("[runner]")]


def _files(root: Path) -> set[str]:
    """Output files, with the names RUN_FOLDER matches as RUN; runner's log copy left out."""
    return {RUN_FOLDER.sub("RUN", str(p.relative_to(root))) for p in root.rglob("*") if p.is_file() and not p.name.startswith("runner-")}


@pytest.mark.parametrize("example", ["t2v-1.3B-musubi", "t2v-1.3B-diffpipe"])
def test_plan_json_alone_replays_the_run(workspace, env, example):
    from runner.executors import Executor
    from runner.executors.container import ContainerSpec
    from runner.executors.local import LocalDocker

    secret = f"wandb-{uuid.uuid4().hex}"
    job = workspace / "examples" / "replayed.yaml"
    job.write_text((workspace / "examples" / f"{example}.yaml").read_text() + f"env:\n  WANDB_API_KEY: {secret}\n  STANDIN_NOTE: kept\n")
    r = runner(["train", job], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    (folder,) = (Path(env["RUNNER_STATE"]) / "jobs").iterdir()
    ran = json.loads((folder / "record.json").read_text())
    text = (folder / "job" / "plan.json").read_text()
    assert secret not in text, "plan.json names secrets, never holds their values"
    plan = json.loads(text)
    assert plan["container"]["image"] == ran["image"] and plan["container"]["secret_env"] == ["WANDB_API_KEY"]
    assert plan["env"]["STANDIN_NOTE"] == "kept" and "WANDB_API_KEY" not in plan["env"]
    assert plan["facts"]["host"] == "local" and plan["facts"]["memory_planned_for_gib"] is None and plan["settings"]["name"] == ran["name"] and "env" not in plan["settings"]
    assert {m["volume"]: m["host"] for m in plan["mounts"]}["job"] == str(folder / "job")

    outputs = workspace / "examples" / "outputs"
    first = outputs.with_name("outputs-of-runner-train")
    outputs.rename(first)  # the replay writes into an empty outputs folder
    executor = LocalDocker()
    assert isinstance(executor, Executor)
    spec = ContainerSpec.from_record(plan, f"runner-replay-{uuid.uuid4().hex[:8]}", {"WANDB_API_KEY": secret})
    executor.prepare_mounts(spec, sources=spec.mounts)
    executor.start(spec)
    try:
        code = executor.wait(spec.name)
        replayed = list(executor.logs(spec.name, follow=False))
        env_seen = executor.client.containers.get(spec.name).attrs["Config"]["Env"]
    finally:
        executor.remove(spec.name)
    assert code == 0, "\n".join(replayed[-40:])
    # the value, from the replaying environment, went to the container's stdin (tests/test_secrets.py follows it to the trainer)
    assert "RUNNER_SECRET_ENV=WANDB_API_KEY" in env_seen and not any(secret in e for e in env_seen)
    assert _markers(replayed) == _markers((folder / "train.log").read_text().splitlines())
    assert _files(outputs) == _files(first) and _files(outputs)


def test_plan_json_names_a_secret_that_is_not_set(tmp_path):
    from runner.errors import UserError
    from runner.executors.container import ContainerSpec
    from runner.mounts import Mount

    spec = ContainerSpec(image="i", name="a", command=["true"], mounts=[Mount("job", "/j", "/job", True)], workdir="/",
                         env={"HF_TOKEN": "hf_x", "PIP_INDEX_URL": "https://me:pw@mirror/simple", "PIP_DEFAULT_TIMEOUT": "60"}, user="1:1")
    plan = json.loads(json.dumps(spec.record(), default=dataclasses.asdict))
    assert plan["env"] == {"PIP_DEFAULT_TIMEOUT": "60"} and plan["container"]["secret_env"] == ["HF_TOKEN", "PIP_INDEX_URL"]
    assert ContainerSpec.from_record(plan, "a", {"HF_TOKEN": "hf_x", "PIP_INDEX_URL": "https://me:pw@mirror/simple"}) == spec
    with pytest.raises(UserError, match="not set here: PIP_INDEX_URL"):
        ContainerSpec.from_record(plan, "a", {"HF_TOKEN": "hf_x"})
    assert "RUNNER_SECRET_ENV=HF_TOKEN PIP_INDEX_URL" in spec.cli_argv() and not any("hf_x" in a or "pw@" in a for a in spec.cli_argv())
    assert spec.secrets_on_stdin() == b"HF_TOKEN=hf_x\nPIP_INDEX_URL=https://me:pw@mirror/simple\n"


def test_render_names_secrets_without_their_values_and_records_what_it_resolved(workspace, cli, tmp_path, monkeypatch):
    """`runner render` writes plan.json with the job's secret variables by name only, like a run's, and the facts
    resolving the job on this machine gave: no GPU asked for, the caches to be made, the DiT's dtype from its header.
    Rendering asks no Docker engine."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    token, password = f"wandb-{uuid.uuid4().hex}", uuid.uuid4().hex
    job = workspace / "examples" / "secret.yaml"
    job.write_text((workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text()
                   + f"env:\n  WANDB_API_KEY: {token}\n  PIP_INDEX_URL: https://me:{password}@mirror/simple\n  STANDIN_NOTE: kept\n")
    code, _, stderr = cli("render", job, "--out", tmp_path / "r")
    assert code == 0, stderr
    for f in (tmp_path / "r").iterdir():
        assert token not in f.read_text() and password not in f.read_text(), f"{f.name} holds a secret"
    plan = json.loads((tmp_path / "r" / "plan.json").read_text())
    assert plan["container"]["secret_env"] == ["PIP_INDEX_URL", "WANDB_API_KEY"] and plan["env"]["STANDIN_NOTE"] == "kept"
    assert not {"WANDB_API_KEY", "PIP_INDEX_URL"} & set(plan["env"]) and plan["settings"]["name"] == "ball-1p3b"
    assert plan["facts"] == {"target": "this machine", "gpus": None, "host_ram_gib": None, "memory_planned_for_gib": None,
                             "caches": "make", "dit_dtype": "bfloat16",
                             "start": {"run_folder": "", "checkpoint": None, "epoch": 0, "step": 0}}  # render does not look at outputs
