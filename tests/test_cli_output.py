"""The output layer: --json documents, --version, --debug, and output that keeps paths, commands, URLs and image
names whole when piped or in a narrow terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import subprocess
import uuid
from importlib.metadata import version
from pathlib import Path

import pytest
from rich.console import Console

from runner import views
from runner.shell import LocalShell
from tests.conftest import write_job
from tests.dockerfixtures import BASE_IMAGE, require_docker
from tests.test_download import hub  # noqa: F401  (the fake Hugging Face hub fixture)

EXAMPLE = "examples/t2v-1.3B-musubi.yaml"


def piped(args: list, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """`runner ARGS` as a script sees it: stdout a pipe, and a 60-column terminal width in COLUMNS."""
    full = {**os.environ, "COLUMNS": "60", **env}
    return subprocess.run(["runner", *map(str, args)], cwd=cwd, env=full, capture_output=True, text=True, timeout=300)


def test_version_is_the_package_version(cli):
    code, stdout, _ = cli("--version")
    assert code == 0 and stdout.strip() == f"runner {version('runner')}"


# --- whole lines when piped ----------------------------------------------------------------------------------


def test_render_prints_each_command_and_path_whole_when_piped_at_60_columns(workspace):
    out = workspace / "a-folder-with-a-rather-long-name-for-the-rendered-job"
    r = piped(["render", EXAMPLE, "--out", out, "--vram", "24", "--ram", "64"], cwd=workspace)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    plan = json.loads((out / "plan.json").read_text())
    for step in plan["steps"]:
        command = shlex.join(step["argv"])
        assert len(command) > 60
        assert any(command in line for line in lines), f"{step['name']}'s command is split: {r.stdout}"
    for mount in plan["mounts"]:
        assert any(mount["host"] in line and mount["container"] in line for line in lines), mount


def test_doctor_prints_each_detail_and_fix_whole_when_piped_at_60_columns():
    checks = json.loads(piped(["doctor", "--json"]).stdout)["checks"]
    r = piped(["doctor"])
    lines = r.stdout.splitlines()
    for c in checks:
        assert any(c["name"] in line and c["detail"] in line for line in lines), c
        if not c["ok"] and c["fix"]:
            assert any(c["fix"] in line for line in lines), c
    assert any("https://" in c["fix"] for c in checks) or all(c["ok"] for c in checks), "this machine has no GPU: the toolkit fix has its URL"


@pytest.fixture
def long_named_image():
    """A runner-labelled image (the test base image plus labels) under a name far wider than 60 columns."""
    require_docker()
    import docker

    client = docker.from_env()
    tag = f"runner-cli-output-test-with-a-long-repository-name:{uuid.uuid4().hex}"
    labels = {"io.runner.trainer": "musubi", "io.runner.variant": "default", "io.runner.pins.commit": "30c658c4f4b0bf05038b3346eff9670259b10fc7",
              "io.runner.pins.base_image": "nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04@sha256:" + "ab" * 32}
    image, _ = client.images.build(fileobj=io.BytesIO(f"FROM {BASE_IMAGE}\n".encode()), tag=tag, labels=labels, rm=True)
    yield tag, labels
    client.images.remove(tag)  # the tag only: the layers are the base image's


def test_images_prints_names_and_base_images_whole_when_piped_at_60_columns(long_named_image):
    tag, labels = long_named_image
    r = piped(["images"])
    assert r.returncode == 0, r.stderr
    line = next((line for line in r.stdout.splitlines() if tag in line), None)
    assert line is not None, f"{tag} is cut or split: {r.stdout}"
    assert labels["io.runner.pins.base_image"] in line
    listed = json.loads(piped(["images", "--json"]).stdout)["images"]
    assert any(tag in row["tags"] and row["pins"]["base_image"] == labels["io.runner.pins.base_image"] for row in listed)


def test_a_narrow_terminal_folds_table_cells_instead_of_cutting_them():
    name = "runner-cli-output-test-with-a-long-repository-name:" + "f" * 40
    term = Console(file=io.StringIO(), force_terminal=True, width=60, color_system=None)
    term.print(views.images_table([{"id": "x", "tags": [name], "trainer": "musubi", "variant": "default", "size": 2**30, "pins": {}}]))
    text = term.file.getvalue()
    assert "…" not in text
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert name in cells, "the folded cell holds the whole name"


def test_piped_console_is_unlimited_and_a_terminal_keeps_its_width(monkeypatch):
    assert views.console().width == views.PIPED_WIDTH  # pytest captures stdout: not a terminal
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "60")
    forced = views.console()
    if forced.is_terminal:  # rich ≥ 14 honours TTY_COMPATIBLE
        assert forced.width == 60


# --- --json: one document on stdout, stable keys -------------------------------------------------------------


def _json(cli, *args) -> dict | list:
    code, stdout, stderr = cli(*args, "--json")
    assert code in (0, 1), stderr
    return json.loads(stdout)  # nothing but the one document


def test_every_data_command_prints_one_json_document(cli, workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("RUNNER_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    job = workspace / EXAMPLE
    assert _json(cli, "validate", job)["trainer"] == "musubi"
    rendered = _json(cli, "render", job, "--out", tmp_path / "r", "--vram", "24", "--ram", "64")
    assert rendered["plan"] == json.loads((tmp_path / "r" / "plan.json").read_text()) and "command.sh" in rendered["files"]
    plan = _json(cli, "plan", job, "--vram", "24", "--ram", "64")
    assert plan["fits"] is True and {"gpu_gib", "host_gib", "settings", "suggestions"} <= set(plan)
    assert {"name", "value", "reason", "source"} == set(_json(cli, "env", job)["variables"][0])
    doctor = _json(cli, "doctor")
    assert {"ready", "checks"} == set(doctor) and {"name", "ok", "detail", "fix", "required"} == set(doctor["checks"][0])
    assert _json(cli, "ps") == {"jobs": []}
    assert _json(cli, "hosts", "list") == {"hosts": []}
    checked = _json(cli, "dataset", "check", workspace / "examples" / "data" / "clips")
    assert {"files", "failed", "counts"} <= set(checked)
    assert [f["name"] for f in _json(cli, "fields")["fields"]][:3] == ["name", "trainer", "task"]


def test_download_dry_run_json_lists_the_files_and_fetches_nothing(cli, hub, tmp_path):  # noqa: F811
    doc = _json(cli, "download", "t2v-1.3B", "--to", tmp_path / "m", "--hf-home", tmp_path / "hf", "--trainer", "diffpipe", "--dry-run")
    assert doc["to_fetch"]["files"] == len(doc["files"]) == 6 and doc["result"] is None
    assert {"repo", "revision", "filename", "size", "dest", "state"} == set(doc["files"][0])
    assert not (tmp_path / "m").exists()


def test_an_error_with_json_is_one_json_object_on_stderr(cli, tmp_path):
    job = write_job(tmp_path, "name: x\ntrainer: musubi\ntask: t2v-9B\nmodels: {root: m}\ndatasets: [{path: d}]\nlora: {rnak: 4}\n")
    code, stdout, stderr = cli("validate", job, "--json")
    assert code == 2 and stdout == ""
    doc = json.loads(stderr)
    assert doc["exit_code"] == 2 and len(doc["errors"]) == 2, "every problem of the job, as the paragraphs list them"
    assert {e["where"] for e in doc["errors"]} == {f"{job}:3: task", f"{job}:6: lora.rnak"}
    assert all(e["problem"] and e["fix"] for e in doc["errors"])
    code, stdout, stderr = cli("validate", job)
    assert code == 2 and stderr.startswith("error: ") and f"{job}:3: task" in stderr, "without --json: the paragraphs"


# --- --debug -------------------------------------------------------------------------------------------------


def test_debug_logs_the_commands_runner_runs(workspace):
    r = piped(["--debug", "doctor"])
    assert "runner.shell: localhost: docker info" in r.stderr, r.stderr
    assert " → exit " in r.stderr
    assert "runner.shell" not in piped(["doctor"]).stderr, "no log without --debug"


def test_debug_logs_docker_api_calls(long_named_image):
    r = piped(["--debug", "images"])
    assert "GET /v" in r.stderr and "/images/json" in r.stderr, r.stderr


def test_local_shell_logs_argv_and_exit(caplog):
    with caplog.at_level(logging.DEBUG, logger="runner.shell"):
        LocalShell().run(["sh", "-c", "exit 3"])
    assert "localhost: sh -c 'exit 3' → exit 3 in" in caplog.text
