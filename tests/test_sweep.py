"""Sweeps (runner.sweep): a job file with a `sweep:` block is its jobs, one per combination of the values; every bad
sweep is refused at its line in the file (exit 2) before anything is written or started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner import sweep
from runner.spec import read_job
from tests.test_validation import job_text

BASE = job_text()  # 9 lines: a sweep block starts at line 10


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RUNNER_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("RUNNER_GPUS", "none")
    return tmp_path / "state"


def _sweep(workspace: Path, block: str, base: str = BASE) -> Path:
    job = workspace / "examples" / "sw.yaml"
    job.write_text(base + block)
    return job


GRID = "optimizer:\n  lr: 3e-4\nsweep:\n  optimizer.lr: [1e-4, 2e-4]\n  lora.rank: [16, 32]\n"


def test_a_sweep_is_the_grid_of_its_values_each_job_named_after_them(workspace, state):
    job = _sweep(workspace, GRID)
    points = sweep.expand(job)
    assert [p.name for p in points] == ["t-lr1e-4-rank16", "t-lr1e-4-rank32", "t-lr2e-4-rank16", "t-lr2e-4-rank32"]
    assert [(p.read[0].optimizer.lr, p.read[0].lora.rank) for p in points] == [(1e-4, 16), (1e-4, 32), (2e-4, 16), (2e-4, 32)]
    assert points[0].describe() == "t-lr1e-4-rank16 (optimizer.lr=1e-4, lora.rank=16)"
    (plain,) = sweep.expand(workspace / "examples" / "t2v-1.3B-musubi.yaml")
    assert (plain.name, plain.values) == ("ball-1p3b", {}), "a plain job file is its one job, named as it says"

    written = sweep.written(job, points)
    assert all(p.parent.parent == state / "sweeps" for p in written)
    for path, point in zip(written, points):
        assert read_job(path)[0] == point.read[0], "the written job file reads as the sweep's job, wherever it lies"
        assert str(job.resolve()) in path.read_text().splitlines()[0]
    assert read_job(written[0])[0].models.root == workspace / "models"


def test_a_dataset_field_and_values_that_name_alike_get_numbered_names(workspace, state):
    points = sweep.expand(_sweep(workspace, "sweep:\n  datasets[0].frames: [[33], [33, 49]]\n  memory.dtype: [bfloat16]\n"))
    assert [p.name for p in points] == ["t-frames33-dtypebfloat16", "t-frames33_49-dtypebfloat16"]
    assert [p.read[0].datasets[0].frames for p in points] == [[33], [33, 49]]
    alike = sweep.expand(_sweep(workspace, "sweep:\n  samples.prompts: [[a b], [a_b]]\n"))  # both: prompts + a_b
    assert [p.name for p in alike] == ["t-1", "t-2"]


def test_validate_and_render_show_every_job_of_a_sweep(cli, workspace, state, tmp_path):
    job = _sweep(workspace, GRID)
    code, out, err = cli("validate", job)
    assert code == 0, err
    assert out.count("ok ") == 4 and "t-lr2e-4-rank32 (optimizer.lr=2e-4, lora.rank=32): musubi t2v-1.3B" in out
    code, out, err = cli("validate", job, "--json")
    assert code == 0 and [j["name"] for j in json.loads(out)["jobs"]][0] == "t-lr1e-4-rank16"

    code, out, err = cli("render", job, "--out", tmp_path / "r", "--json")
    assert code == 0, err
    rendered = json.loads(out)["jobs"]
    assert [Path(r["out"]).name for r in rendered] == [p.name for p in sweep.expand(job)]
    train = next(s["argv"] for s in rendered[3]["plan"]["steps"] if s["name"] == "train")
    assert train[train.index("--learning_rate") + 1] == "0.0002" and train[train.index("--network_dim") + 1] == "32"
    assert train[train.index("--output_name") + 1] == "t-lr2e-4-rank32"
    assert all((tmp_path / "r" / r["plan"]["job"] / "plan.json").is_file() for r in rendered)
    assert not (state / "sweeps").exists(), "validate and render write no job file"


BAD = [
    ("sweep: [1, 2]\n", "sw.yaml:10: sweep: is [1, 2]; it should map each field"),
    ("sweep: {}\n", "sw.yaml:10: sweep: is {}"),
    ("sweep:\n  lora.rnk: [1, 2]\n", "sweep.lora.rnk: is not a job field. Fix: name `lora.rank`"),
    ("sweep:\n  optimizer..lr: [1]\n", "sweep.optimizer..lr: is not a field name"),
    ("sweep:\n  optimizer: [{lr: 1}]\n", "sweep.optimizer: is a group of fields"),
    ("sweep:\n  name: [a, b]\n", "sweep.name: cannot be swept"),
    ("sweep:\n  datasets[].frames: [[33]]\n", "sweep.datasets[].frames: names no dataset"),
    ("sweep:\n  datasets[2].frames: [[33]]\n", "sweep.datasets[2].frames: names item 2 of datasets, and the job has 1"),
    ("sweep:\n  datasets.frames: [[33]]\n", "sweep.datasets.frames: is not a job field. Fix: name `datasets[0].frames`"),
    ("sweep:\n  lora.rank: 16\n", "sweep.lora.rank: is 16; a swept field takes a list of one or more values"),
    ("sweep:\n  lora.rank: []\n", "sweep.lora.rank: is []"),
    ("sweep:\n  lora.rank: [16, 8, 16]\n", "sweep.lora.rank: lists the value 16 twice"),
    ("sweep:\n  env: [{A: b}]\n", "sweep.env: is a group of fields"),
    ("sweep:\n  lora.rank: [16, {a: 1}]\n", "sweep.lora.rank: lists a mapping"),
    ("sweep:\n  lora.rank:\n    - 16\n    - 0\n", "sw.yaml:13: lora.rank: Input should be greater than or equal to 1"),
    ("sweep:\n  seed: [" + ", ".join(map(str, range(1001))) + "]\n", "sweep: makes 1001 jobs"),
    ("memory: auto\nsweep:\n  memory.blocks_to_swap: [0, 4]\n", "sweep.memory.blocks_to_swap: has no place in the job: memory is 'auto' there"),
]


@pytest.mark.parametrize("block, message", BAD, ids=[m.split(": ")[1] if m.count(": ") > 1 else m[:20] for _, m in BAD])
@pytest.mark.parametrize("command", ["train", "render", "validate"])
def test_a_bad_sweep_is_refused_at_its_line_and_nothing_is_written(cli, workspace, state, tmp_path, block, message, command):
    job = _sweep(workspace, block)
    code, _, err = cli(command, job, *(["--out", tmp_path / "r"] if command == "render" else []))
    assert code == 2 and message in " ".join(err.split()) and "Fix:" in err, err
    assert not state.exists() and not (tmp_path / "r").exists()


def test_a_name_too_long_for_numbered_jobs_is_refused(cli, workspace, state):
    job = _sweep(workspace, "sweep:\n  lora.rank: [16, 32]\n", BASE.replace("name: t", "name: " + "b" * 63))
    code, _, err = cli("train", job)
    assert code == 2 and "sw.yaml:1: name: is too long to name the jobs of its sweep" in err, err
    assert not state.exists()


@pytest.mark.parametrize("command", [["plan"], ["env"], ["doctor"], ["sample"], ["dataset", "check", "examples/data/clips", "--job"]])
def test_commands_of_one_job_refuse_a_sweep_with_the_commands_that_take_one(cli, workspace, state, command, monkeypatch):
    monkeypatch.chdir(workspace)
    job = _sweep(workspace, GRID)
    code, _, err = cli(*command, job)
    assert code == 2 and "sweep: makes this file a sweep of several jobs, and this command takes one job" in " ".join(err.split()), err
    assert "runner render FILE --out DIR" in err
    assert not state.exists()
