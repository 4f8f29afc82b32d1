"""Each command that resolves a job reads its job file once: the CLI reads it first (a bad job is reported before
Docker or SSH is contacted) and passes what it read down to the resolving (runner.job.render.load_checked)."""

from __future__ import annotations

from collections import Counter

import pytest

from runner import inputs


@pytest.fixture
def reads(monkeypatch) -> Counter:
    counted: Counter = Counter()
    read_yaml = inputs.read_yaml

    def counting(path, what, *args, **kwargs):
        counted[what] += 1
        return read_yaml(path, what, *args, **kwargs)

    monkeypatch.setattr(inputs, "read_yaml", counting)
    return counted


@pytest.mark.parametrize("command", [["validate"], ["render", "--out", "{tmp}/rendered"], ["plan", "--vram", "24"]])
def test_a_command_reads_the_job_file_once(cli, workspace, tmp_path, reads, command):
    job = workspace / "examples" / "t2v-1.3B-musubi.yaml"
    code, out, err = cli(command[0], job, *[a.format(tmp=tmp_path) for a in command[1:]])
    assert code == 0, err
    assert reads["job file"] == 1, reads


@pytest.mark.parametrize("command, says", [
    (["train"], "--fresh"),  # the output folder holds an earlier run's LoRA: refused once resolved
    (["sample"], "the saved epochs are 1"),  # no LoRA of epoch 2: refused once the saved ones are listed
])
def test_train_and_sample_read_the_job_file_once(cli, workspace, tmp_path, monkeypatch, reads, command, says):
    from tests.dockerfixtures import require_docker, runner_env

    require_docker()
    for k, v in runner_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    job = workspace / "examples" / "t2v-1.3B-musubi.yaml"
    lora = workspace / "examples" / "outputs" / "ball-1p3b" / "ball-1p3b-000001.safetensors"
    lora.parent.mkdir(parents=True)
    lora.write_bytes(b"")
    code, out, err = cli(*command, job, *(["--epochs", "2", "--prompt", "a ball"] if command == ["sample"] else []))
    assert code == 2 and says in " ".join(err.split()), out + err
    assert reads["job file"] == 1, reads
