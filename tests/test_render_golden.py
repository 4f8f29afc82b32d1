"""Rendered trainer files for the example jobs, compared with files checked by hand against the trainers
at the pinned commits (diffusion-pipe 8f83dbf, musubi-tuner 30c658c). UPDATE_GOLDEN=1 rewrites them."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest
import toml
import yaml

from runner.job import render
from tests.conftest import EXAMPLES

GOLDEN = Path(__file__).parent / "golden"
JOBS = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("name", JOBS)
def test_example_renders_as_golden(workspace: Path, tmp_path: Path, name: str):
    out = tmp_path / "rendered"
    plan = render.render(workspace / "examples" / f"{name}.yaml", out)
    expected_dir = GOLDEN / name
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted([*plan.files, "plan.json", "command.sh", render.MARKER])
    for file in [*plan.files, "command.sh"]:
        text = (out / file).read_text()
        if os.environ.get("UPDATE_GOLDEN"):
            expected_dir.mkdir(parents=True, exist_ok=True)
            (expected_dir / file).write_text(text)
        assert text == (expected_dir / file).read_text(), f"{name}/{file} differs from the golden file"


@pytest.mark.parametrize("name", JOBS)
def test_rendered_tomls_parse_and_plan_json_holds_the_plan(workspace: Path, tmp_path: Path, name: str):
    out = tmp_path / "rendered"
    plan = render.render(workspace / "examples" / f"{name}.yaml", out)
    for file in plan.files:
        text = (out / file).read_text()
        if file.endswith(".toml"):
            assert tomllib.loads(text)
            if plan.trainer == "diffpipe":
                assert toml.loads(text) == tomllib.loads(text), "diffusion-pipe parses its TOMLs with toml 0.10.2"
        else:
            assert yaml.safe_load(text)
    data = json.loads((out / "plan.json").read_text())
    assert [s["name"] for s in data["steps"]] == [s.name for s in plan.steps]
    assert {m["container"] for m in data["mounts"]} >= {"/models", "/cache", "/outputs", "/hf-cache", "/job"}
    assert [s["argv"] for s in data["steps"]] == [s.argv for s in plan.steps]
    assert data["env"] == plan.env and data["workdir"] == plan.workdir and data["files"] == sorted(plan.files)


def test_one_job_renders_for_either_trainer(workspace: Path, tmp_path: Path):
    src = (workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text()
    as_diffpipe = workspace / "examples" / "switched.yaml"
    as_diffpipe.write_text(src.replace("trainer: musubi", "trainer: diffpipe"))
    plan = render.render(as_diffpipe, tmp_path / "dp")
    assert plan.trainer == "diffpipe" and "diffpipe.toml" in plan.files
