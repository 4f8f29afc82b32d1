"""Runner never replaces or mounts a folder it must not (issue 11, items 2 and 3).

2. `runner render --out DIR` replaces only a folder it rendered before (its .runner-render marker lists the files),
   an empty one or a new one, and swaps the new render in whole.
3. Validate (and every command that resolves a job) refuses system folders mounted read-write and folders that
   overlap so that a container would write where it must not; the Docker mount list keeps every mount.
Each refusal exits 2 with a where/problem/fix paragraph and leaves every file as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from runner import files, mounts
from runner.errors import UserError
from runner.job import render
from tests.conftest import write_job
from tests.dockerfixtures import BASE_IMAGE, require_docker
from tests.test_validation import job_text


def tree(root: Path) -> dict[str, str]:
    """Every path under root (links not followed) with its content hash, link target or 'dir'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = str(p.relative_to(root))
            if p.is_symlink():
                out[key] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[key] = "dir"
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(cli, *args, where: str, says: str, untouched: Path | None = None) -> None:
    """The command exits 2 with one paragraph naming `where`, saying `says`, with a fix; every file under
    `untouched` is as it was."""
    before = tree(untouched) if untouched else None
    code, stdout, stderr = cli(*args)
    assert code == 2, stdout + stderr
    assert f"{where}: " in stderr and says in stderr and "Fix: " in stderr, stderr
    if untouched:
        assert tree(untouched) == before


# --- 2. render --out ------------------------------------------------------------------------------


@pytest.mark.parametrize("out,says", [
    (".", "is a folder that runner did not write (it holds data, flf2v-14B-diffpipe.yaml, i2v-14B-480P-diffpipe.yaml"),
    ("data/clips", "is a folder that runner did not write (it holds clip1.mp4"),
    ("data", "is a folder that runner did not write"),
    ("../models", "is a folder that runner did not write"),
])
def test_render_refuses_a_folder_it_did_not_write_and_touches_nothing(cli, workspace, monkeypatch, out, says):
    examples = workspace / "examples"
    write_job(examples, job_text())
    monkeypatch.chdir(examples)
    refused(cli, "render", "job.yaml", "--out", out, where="--out", says=says, untouched=workspace)


def test_render_refuses_a_file_as_out_with_a_json_error(cli, workspace, monkeypatch):
    examples = workspace / "examples"
    write_job(examples, job_text())
    (examples / "notes-link").symlink_to("job.yaml")
    monkeypatch.chdir(examples)
    before = tree(workspace)
    for out in ("job.yaml", "notes-link"):
        code, _, stderr = cli("render", "job.yaml", "--out", out, "--json")
        assert code == 2
        error = json.loads(stderr)["errors"][0]
        assert error["where"] == "--out" and "is a file" in error["problem"] and error["fix"]
    assert tree(workspace) == before


def test_render_refuses_a_link_to_the_data_folder(cli, workspace):
    job = write_job(workspace / "examples", job_text())
    link = workspace / "rendered"
    link.symlink_to(workspace / "examples" / "data" / "clips")
    refused(cli, "render", job, "--out", link, where="--out", says="clips is a folder that runner did not write", untouched=workspace)


def test_render_keeps_a_file_the_user_put_into_an_earlier_render(cli, workspace):
    job = write_job(workspace / "examples", job_text())
    out = workspace / "rendered"
    assert cli("render", job, "--out", out)[0] == 0
    (out / "my-notes.txt").write_text("mine")
    refused(cli, "render", job, "--out", out, where="--out", says="holds files that runner did not write there: my-notes.txt", untouched=workspace)


def test_render_writes_into_a_new_or_empty_folder_and_replaces_its_own(cli, workspace):
    job = write_job(workspace / "examples", job_text())
    empty = workspace / "empty"
    empty.mkdir()
    for out in (workspace / "new" / "render", empty):
        assert cli("render", job, "--out", out)[0] == 0
        assert (out / "plan.json").is_file() and (out / render.MARKER).is_file()
    write_job(workspace / "examples", job_text("diffpipe"))
    code, _, stderr = cli("render", job, "--out", empty)
    assert code == 0, stderr
    assert sorted(p.name for p in empty.iterdir()) == sorted(["command.sh", "dataset.toml", "diffpipe.toml", "plan.json", render.MARKER])


def test_a_crash_while_the_old_render_is_removed_leaves_a_whole_render(workspace, tmp_path, monkeypatch):
    job = write_job(workspace / "examples", job_text("diffpipe"))
    out = tmp_path / "out"
    render.render(job, out)
    old = tree(out)
    write_job(workspace / "examples", job_text())

    def crash_midway(path, *args, **kwargs):  # removes one file of the folder, then the process dies
        victims = sorted(p for p in Path(path).iterdir() if p.is_file())
        victims[0].unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(files.shutil, "rmtree", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        render.render(job, out)
    monkeypatch.undo()
    now = tree(out)
    whole_new = {"command.sh", "musubi_dataset.toml", "accelerate.yaml", "plan.json", ".runner-render"}
    assert now == old or set(now) == whole_new, f"half a render: {sorted(now)}"


def test_what_a_killed_render_left_beside_its_folder_goes_with_the_next_render_only_if_its_process_is_gone(workspace, tmp_path):
    job = write_job(workspace / "examples", job_text())
    out = tmp_path / "out"
    render.render(job, out)
    ended = subprocess.Popen(["true"])
    ended.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        prefix = files._staging_prefix(out)
        left = {pid: tmp_path / f"{prefix}{pid}.x1y2" for pid in (ended.pid, alive.pid)}
        for folder in left.values():
            folder.mkdir()
            (folder / "plan.json").write_text("{}")
        elsewhere = tmp_path / f".out.runner-staging.another-machine.{ended.pid}.x1y2"  # a shared folder: not this machine's
        elsewhere.mkdir()
        render.render(job, out)
        assert not left[ended.pid].exists(), "the killed render's staging folder"
        assert left[alive.pid].is_dir() and elsewhere.is_dir(), "a render still writing, another machine's"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == sorted([left[alive.pid].name, elsewhere.name])
    finally:
        alive.kill()


# --- 3. mounts ------------------------------------------------------------------------------------


def job_with(trainer: str = "musubi", **top: str) -> str:
    return job_text(trainer, extra="".join(f"{k}: {v}\n" for k, v in top.items()))


SYSTEM = [
    (dict(output="/"), "output", "/ is the system folder /"),
    (dict(output="/etc"), "output", "/etc is the system folder /etc"),
    (dict(cache="/usr/local/runner-cache"), "cache", "is inside the system folder /usr"),
    (dict(hf_cache="/var"), "hf_cache", "/var is the system folder /var"),
    (dict(output="etc-link"), "output", "/etc is the system folder /etc"),
]


@pytest.mark.parametrize("fields,where,says", SYSTEM)
def test_system_folders_are_refused_read_write(cli, workspace, fields, where, says):
    (workspace / "examples" / "etc-link").symlink_to("/etc")
    job = write_job(workspace / "examples", job_with(**fields))
    refused(cli, "validate", job, where=where, says=says)


def test_a_dataset_in_a_system_folder_or_the_home_folder_is_refused(cli, workspace, monkeypatch):
    home = workspace / "home"
    (home / "clips").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    job = write_job(workspace / "examples", job_with().replace("path: data/clips", f"path: {home}"))
    refused(cli, "validate", job, where="datasets[0].path", says=f"{home} is your home folder itself")
    job = write_job(workspace / "examples", job_with(output=str(home)))
    refused(cli, "validate", job, where="output", says="is your home folder itself")


OVERLAPS = [
    (dict(output="cache"), "output", "is the same folder as cache"),
    (dict(output="data/clips/out"), "output", "is inside datasets[0].path"),
    (dict(output="data"), "datasets[0].path", "is inside output"),
    (dict(cache="data/clips"), "cache", "the same folder as datasets[0].path"),
    (dict(hf_cache="cache/hf"), "hf_cache", "is inside cache"),
    (dict(output="outputs", cache="outputs/cache"), "cache", "is inside output"),
    (dict(output=".."), "models.root", "could change the files mounted read-only at /models"),
    (dict(output="cache-link"), "output", "is the same folder as cache"),
]


@pytest.mark.parametrize("fields,where,says", OVERLAPS)
def test_overlapping_folders_are_refused(cli, workspace, fields, where, says):
    (workspace / "examples" / "cache").mkdir()
    (workspace / "examples" / "cache-link").symlink_to("cache")
    job = write_job(workspace / "examples", job_with(**fields))
    refused(cli, "validate", job, where=where, says=says)


def test_models_mounted_read_write_through_a_dataset_is_refused(cli, workspace):
    text = job_text().replace("root: ../models", "root: data/clips/models")
    job = write_job(workspace / "examples", text)
    refused(cli, "validate", job, where="models.root", says="inside datasets[0].path")


def test_diffpipe_datasets_on_one_folder_are_refused_musubi_ones_allowed(cli, workspace):
    (workspace / "examples" / "clips-link").symlink_to("data/clips")
    two = "  - path: data/clips\n  - path: clips-link\n"
    job = write_job(workspace / "examples", job_text("diffpipe").replace("  - path: data/clips\n", two))
    refused(cli, "validate", job, where="datasets[1].path", says="overwrite each other's cache")
    job = write_job(workspace / "examples", job_text("musubi").replace("  - path: data/clips\n", two))
    assert cli("validate", job)[0] == 0


def test_folders_side_by_side_or_inside_the_read_only_models_are_allowed(cli, workspace):
    job = write_job(workspace / "examples", job_with(output="../models/lora-out", cache="/var/tmp/runner-test-cache"))
    code, stdout, stderr = cli("validate", job)
    assert code == 0, stderr


@pytest.mark.parametrize("command", ["validate", "render", "plan", "train"])
def test_every_command_that_resolves_a_job_refuses_before_anything_runs(cli, workspace, monkeypatch, command):
    monkeypatch.setenv("RUNNER_STATE", str(workspace / "state"))
    monkeypatch.setenv("RUNNER_GPUS", "none")
    monkeypatch.setenv("RUNNER_CONFIG", str(workspace / "no-config.yaml"))
    job = write_job(workspace / "examples", job_with(output="/etc"))
    args = {"render": ["--out", workspace / "rendered"], "plan": ["--vram", "24"]}.get(command, [])
    # untouched: no render, no job record in the state folder, no output folder
    refused(cli, command, job, *args, where="output", says="/etc is the system folder /etc", untouched=workspace)


def test_docker_mount_list_refuses_one_folder_with_two_modes(tmp_path):
    table = [mounts.Mount("models", str(tmp_path), "/models", True), mounts.Mount("data/0", str(tmp_path), "/data/0-x", False)]
    with pytest.raises(UserError, match="one read-only and one read-write"):
        mounts.docker_volumes(table)
    with pytest.raises(UserError, match="would hide the other"):
        mounts.docker_volumes([mounts.Mount("cache", str(tmp_path / "a"), "/cache", False), mounts.Mount("outputs", str(tmp_path / "b"), "/cache", False)])


def test_two_datasets_on_one_folder_are_both_mounted_by_the_local_engine(workspace):
    require_docker()
    import docker

    from runner.executors.container import ContainerSpec

    clips = workspace / "examples" / "data" / "clips"
    job = write_job(workspace / "examples", job_text().replace("  - path: data/clips\n", "  - path: data/clips\n  - path: data/clips\n"))
    plan = render.render(job, workspace / "rendered")
    data = [m for m in plan.mounts if m.volume.startswith("data/")]
    assert [m.host for m in data] == [str(clips)] * 2
    listing = "; ".join(f"ls {m.container}" for m in plan.mounts if m.volume != "hf-cache")
    spec = ContainerSpec(image=BASE_IMAGE, name=f"runner-test-mounts-{uuid.uuid4().hex[:8]}", command=["sh", "-c", listing],
                         mounts=[m for m in plan.mounts if m.volume != "hf-cache"], env={}, user=f"{os.getuid()}:{os.getgid()}",
                         workdir="/", gpus=False, shm_size="64m")
    client = docker.from_env()
    container = client.containers.run(**spec.sdk_kwargs())
    try:
        assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
        shown = container.logs().decode()
    finally:
        container.remove(force=True)
    assert shown.count("clip1.mp4") == 2, shown
    assert spec.cli_argv().count(f"{clips}:/data/0-clips:rw") == 1 and spec.cli_argv().count(f"{clips}:/data/1-clips:rw") == 1
