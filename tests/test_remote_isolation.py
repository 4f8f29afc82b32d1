"""Shared hosts and a sync that cannot miss a change (issue 11, items 5-7), against the SSH test hosts.

A second user is a second runner state folder and hosts file with the same host folders: what two people with
their own laptops and one account or one group folder on a GPU host have. Sync runs both ways it can go (rsync
and SFTP) through the real `rsync`, OpenSSH and paramiko against sshd in the test namespaces; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from runner.data.fingerprint import FILE_NAME as FINGERPRINT
from runner.errors import UserError
from tests.dockerfixtures import REPO, runner, runner_env
from tests.remotefixtures import ADDRESS, CLIENT_KEY, KNOWN_HOSTS, SRV, add_host, engine, host_dirs, require_remote, run_key
from tests.test_remote import MUSUBI, remote_models  # noqa: F401  (stand-in images built, fixture models on the hosts)

WAYS = ["rsync", "sftp"]
YEAR_1960, YEAR_2200, MARCH_2106 = -315619200, 7258118400, 4296940800


def _files(root: Path) -> dict[str, tuple[str, int, int]]:
    """relative path → (sha256, mtime in whole seconds, permission bits) of every file under root."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), int(p.stat().st_mtime), p.stat().st_mode & 0o7777)
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- item 5: two users, one job name, the same host folders ----------------------------------------


@pytest.fixture
def users(remote_models, tmp_path):  # noqa: F811
    """user(label) → (env, folder with job.yaml and data/clips): each user has their own runner state and hosts
    file; all of them point host gpu01 at the same four folders."""
    dirs = host_dirs("gpu01")
    envs: list[dict[str, str]] = []

    def user(label: str, clips: list[int], caption: str) -> tuple[dict[str, str], Path]:
        home = tmp_path / label
        data = home / "data" / "clips"  # the same folder name for every user, as in the issue
        data.mkdir(parents=True)
        for i in clips:
            shutil.copy(REPO / "examples" / "data" / "clips" / f"clip{i}.mp4", data)
            (data / f"clip{i}.txt").write_text(f"{caption} {i}\n")
        (home / "job.yaml").write_text((REPO / MUSUBI).read_text().replace("name: ball-1p3b", "name: shared")
                                       .replace("root: ../models", f"root: {tmp_path / 'models'}") + "schedule:\n  epochs: 2\n")
        env = runner_env(home, XDG_CONFIG_HOME=str(home / "config"))
        add_host(env, "gpu01", "gpu01", remote_models.format(host="gpu01"), dirs)
        envs.append(env)
        return env, home

    from tests import modelfixtures

    modelfixtures.models_root(tmp_path / "models")
    yield user, dirs
    for env in envs:
        names = {json.loads(p.read_text())["container"] for p in (Path(env["RUNNER_STATE"]) / "jobs").glob("*/record.json")}
        for c in engine("gpu01").containers.list(all=True):
            if c.name in names:
                c.remove(force=True)
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)


def _everything(dirs: dict[str, str]) -> dict[str, dict]:
    """Every file in the host's data, cache and outputs folders, wherever runner put it."""
    return {v: _files(Path(dirs[v])) for v in ("data", "cache", "outputs")}


def _one(root: str, name: str) -> Path:
    (found,) = Path(root).rglob(name)
    return found


def test_two_users_with_one_job_name_on_the_same_host_folders_never_touch_each_other(users):
    user, dirs = users
    env_a, home_a = user("a", [1, 2, 3], "user a's ball")
    env_b, home_b = user("b", [1, 2], "user b's cube")

    first = runner(["train", "job.yaml", "--host", "gpu01"], env_a, cwd=home_a)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    a_files = _everything(dirs)  # all of it is user a's run
    assert len([rel for rel in a_files["data"] if rel.endswith(".txt")]) == 3
    assert any(rel.endswith(".safetensors") for rel in a_files["outputs"]) and a_files["cache"]

    other = runner(["train", "job.yaml", "--host", "gpu01"], env_b, cwd=home_b)
    assert other.returncode == 0, other.stdout[-3000:] + other.stderr[-3000:]
    after = _everything(dirs)
    for volume, files in a_files.items():
        touched = sorted(rel for rel, f in files.items() if after[volume].get(rel) != f)
        assert not touched, f"user b's run deleted or rewrote user a's files in the host's {volume} folder: {touched[:5]}"
    assert [p.read_text() for p in Path(dirs["data"]).rglob("clip1.txt")].count("user b's cube 1\n") == 1
    fingerprints = [p.read_text() for p in Path(dirs["cache"]).rglob(FINGERPRINT)]
    assert len(fingerprints) == 2 and fingerprints[0] != fingerprints[1], "each run keeps its own fingerprint"

    pulled = runner(["pull", "shared"], env_a)
    assert pulled.returncode == 0, pulled.stderr
    mine = {}
    for rel, f in a_files["outputs"].items():
        parts = rel.split("/")
        if "shared" in parts:  # the job's own output folder, <outputs>/…/shared/
            mine["/".join(parts[parts.index("shared") + 1 :])] = f[:2]
    got = {rel: f[:2] for rel, f in _files(home_a / "outputs" / "shared").items()}
    assert got == mine, "pull brings this run's files (content and mtime), and only them"

    again = runner(["train", "job.yaml", "--host", "gpu01", "--fresh"], env_a, cwd=home_a)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "the caches match the datasets' fingerprints" in " ".join((again.stdout + again.stderr).split()), again.stdout[-3000:]
    assert _files(Path(dirs["data"]) / run_key(env_a, "shared")) == {rel.split("/", 1)[1]: f for rel, f in a_files["data"].items()}


# --- item 6: an edit sync cannot miss; any mtime ------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_a_caption_edited_to_the_same_size_with_its_mtime_restored_reaches_the_host(users, way):
    user, dirs = users
    env, home = user("u", [1, 2, 3], "a red ball")
    env["RUNNER_SYNC"] = way
    first = runner(["train", "job.yaml", "--host", "gpu01"], env, cwd=home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    caption = home / "data" / "clips" / "clip2.txt"
    st = caption.stat()
    caption.write_text("a big cube 2\n")  # same size as "a red ball 2\n"
    os.utime(caption, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert caption.stat().st_size == st.st_size and caption.stat().st_mtime_ns == st.st_mtime_ns

    second = runner(["train", "job.yaml", "--host", "gpu01", "--fresh"], env, cwd=home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "captions changed" in " ".join((second.stdout + second.stderr).split()), second.stdout[-3000:]
    assert _one(dirs["data"], "clip2.txt").read_text() == "a big cube 2\n", "the host trains on the caption the fingerprint was taken of"
    assert f"1 of 6 files sent (0.0 MiB, {way}, by checksum)" in " ".join(second.stderr.split()), second.stderr


@pytest.mark.parametrize("way", WAYS)
def test_a_private_caption_and_a_clip_dated_2200_reach_the_host_as_they_are(users, way):
    user, dirs = users
    env, home = user("u", [1, 2], "a red ball")
    env["RUNNER_SYNC"] = way
    (home / "data" / "clips" / "clip1.txt").chmod(0o600)
    os.utime(home / "data" / "clips" / "clip2.mp4", (YEAR_2200, YEAR_2200))  # a camera's clock far off
    r = runner(["train", "job.yaml", "--host", "gpu01"], env, cwd=home)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert _one(dirs["data"], "clip1.txt").stat().st_mode & 0o7777 == 0o600, "0600 stays 0600"
    far = _one(dirs["data"], "clip2.mp4")
    assert far.read_bytes() == (home / "data" / "clips" / "clip2.mp4").read_bytes()
    said = " ".join(r.stderr.split())
    if way == "sftp":
        assert int(far.stat().st_mtime) == 2**32 - 1 and "modification times SFTP cannot carry" in said and "clip2.mp4" in said, said
    else:
        assert int(far.stat().st_mtime) == YEAR_2200 and "cannot carry" not in said


@pytest.fixture
def shell(remote_models):  # noqa: F811
    """A connection to gpu01 as runner opens it, and a fresh folder there."""
    from runner.remote.hosts import Host
    from runner.remote.ssh import RemoteShell, connect

    require_remote()
    host = Host(name="gpu01", ssh=f"runnertest@{ADDRESS['gpu01']}", key=str(CLIENT_KEY), known_hosts=str(KNOWN_HOSTS))
    sh = RemoteShell("gpu01", connect(host), host)
    sh.dest = f"{SRV}/gpu01/data/t-{uuid.uuid4().hex[:8]}"
    yield sh
    sh.conn.close()
    shutil.rmtree(sh.dest, ignore_errors=True)


@pytest.mark.parametrize("how", WAYS)
def test_any_mtime_is_synced_and_the_next_sync_sends_nothing(shell, tmp_path, how):
    from runner.remote import sync

    src = tmp_path / "d"
    src.mkdir()
    times = {"old.txt": YEAR_1960, "edge.txt": MARCH_2106, "far.txt": YEAR_2200, "now.txt": 1_700_000_000}
    for name, t in times.items():
        (src / name).write_text(name)
        os.utime(src / name, (t, t))
    stats = sync.upload(shell, src, shell.dest, "t", how=how)
    assert stats.files == 4
    got = _files(Path(shell.dest))
    assert {rel: f[0] for rel, f in got.items()} == {name: hashlib.sha256(name.encode()).hexdigest() for name in times}
    if how == "sftp":
        assert sorted(stats.clamped) == ["edge.txt", "far.txt", "old.txt"]
        assert {rel: f[1] for rel, f in got.items()} == {"old.txt": 0, "edge.txt": 2**32 - 1, "far.txt": 2**32 - 1, "now.txt": 1_700_000_000}
    else:
        assert stats.clamped == [] and {rel: f[1] for rel, f in got.items()} == times
    assert sync.upload(shell, src, shell.dest, "t", how=how).files == 0


@pytest.mark.parametrize("how", WAYS)
def test_an_interrupted_sync_leaves_nothing_half_written(shell, tmp_path, how):
    """Ctrl-C in the middle of a file; a copy a lost connection left behind is removed by the next sync."""
    from runner.remote import sync

    src = tmp_path / "d"
    src.mkdir()
    for i in range(4):
        (src / f"clip{i}.mp4").write_bytes(os.urandom(8 << 20))

    def interrupt(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync.upload(shell, src, shell.dest, "t", how=how, progress=interrupt)
    there = Path(shell.dest)
    deadline = time.monotonic() + 10  # rsync's receiver on the host removes its temporary file as it exits
    while any(p.name.startswith(".") for p in there.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    arrived = _files(there)
    assert not [rel for rel in arrived if rel.startswith(".")], f"half-written copies left on the host: {sorted(arrived)}"
    assert all(_files(src)[rel][0] == f[0] for rel, f in arrived.items()), "a file on the host is not whole"

    (there / ".clip0.mp4.runner-part").write_bytes(b"half")  # what a connection lost mid-file leaves
    stats = sync.upload(shell, src, shell.dest, "t", how=how)
    assert stats.files == 4 - len(arrived)
    assert {rel: f[0] for rel, f in _files(there).items()} == {rel: f[0] for rel, f in _files(src).items()}


def test_sync_takes_rsync_when_both_sides_have_it_and_sftp_otherwise(shell, tmp_path, monkeypatch):
    from runner.remote import sync

    monkeypatch.delenv("RUNNER_SYNC", raising=False)
    assert sync.way(shell) == "rsync"
    monkeypatch.setenv("RUNNER_SYNC", "sftp")
    assert sync.way(shell) == "sftp"
    no_rsync = tmp_path / "bin"  # this machine without rsync: ssh only
    no_rsync.mkdir()
    (no_rsync / "ssh").symlink_to(shutil.which("ssh"))
    monkeypatch.setenv("PATH", str(no_rsync))
    monkeypatch.setenv("RUNNER_SYNC", "auto")
    assert sync.way(shell) == "sftp"
    monkeypatch.setenv("RUNNER_SYNC", "rsync")
    with pytest.raises(UserError, match="install rsync"):
        sync.way(shell)
    monkeypatch.setenv("RUNNER_SYNC", "scp")
    with pytest.raises(UserError) as e:
        sync.way(shell)
    assert e.value.where == "RUNNER_SYNC" and "auto" in e.value.fix


# --- item 7: links and permissions --------------------------------------------------------------------


@pytest.mark.parametrize("how", WAYS)
def test_links_inside_the_dataset_are_followed_and_permissions_kept(shell, tmp_path, how):
    from runner.remote import sync

    src = tmp_path / "d"
    (src / "sub").mkdir(parents=True)
    (src / "clip.txt").write_text("private caption")
    (src / "clip.txt").chmod(0o600)
    (src / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (src / "sub" / "run.sh").chmod(0o750)
    (src / "alias.txt").symlink_to("clip.txt")
    (src / "more").symlink_to("sub")
    sync.upload(shell, src, shell.dest, "t", how=how)
    there = Path(shell.dest)
    got = _files(there)
    assert {rel: (f[2]) for rel, f in got.items()} == {"clip.txt": 0o600, "alias.txt": 0o600, "sub/run.sh": 0o750, "more/run.sh": 0o750}
    assert not any(p.is_symlink() for p in there.rglob("*")), "links inside are sent as the files they point to"
    (src / "clip.txt").chmod(0o640)  # a mode change alone (same size, same mtime) reaches the host too
    sync.upload(shell, src, shell.dest, "t", how=how)
    assert (there / "clip.txt").stat().st_mode & 0o7777 == 0o640


def _bad_link(data: Path, kind: str, outside: Path) -> str:
    """Make a bad link of `kind` in the dataset folder; returns its path as the error must name it."""
    if kind == "out":
        link = data / "notes.txt"
        link.symlink_to(outside)
    elif kind == "loop":  # names no trainer reads (media names are refused earlier, by the dataset checks)
        link = data / "notes"
        link.symlink_to("notes")
    elif kind == "folder-loop":
        (data / "sub").mkdir()
        link = data / "sub" / "up"
        link.symlink_to("..")
    else:
        link = data / "extras" / "readme"
        link.parent.mkdir()
        link.symlink_to("gone")
    return str(link)


@pytest.mark.parametrize("kind", ["out", "loop", "folder-loop", "dangling"])
def test_a_link_out_of_the_dataset_a_loop_or_a_dangling_link_is_refused(users, tmp_path, kind):
    user, dirs = users
    env, home = user("u", [1, 2], "a ball")
    secret = tmp_path / "elsewhere" / "id_ed25519"
    secret.parent.mkdir()
    secret.write_text(f"PRIVATE-{uuid.uuid4().hex}")
    secret.chmod(0o600)
    link = _bad_link(home / "data" / "clips", kind, secret)
    r = runner(["train", "job.yaml", "--host", "gpu01"], env, cwd=home, timeout=300)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    said = " ".join(r.stderr.split())
    assert link in said and "Fix:" in said and "Traceback" not in r.stderr, said
    assert {"out": "out of the dataset folder", "loop": "loop", "folder-loop": "loop", "dangling": "dangling"}[kind] in said
    leaked = subprocess.run(["grep", "-rl", secret.read_text(), dirs["data"]], capture_output=True, text=True)
    assert leaked.stdout == "", f"the file outside the dataset reached the host: {leaked.stdout}"
    assert not list((Path(env["RUNNER_STATE"]) / "jobs").glob("*/record.json")), "nothing was started"


# --- the install id behind the run key ----------------------------------------------------------------


def test_the_install_id_is_made_once_per_state_folder(tmp_path, monkeypatch):
    from runner.remote import layout

    monkeypatch.setenv("RUNNER_STATE", str(tmp_path / "one"))
    first = layout.install_id()
    assert layout.install_id() == first and layout.run_key("job") == f"job-{first}"
    monkeypatch.setenv("RUNNER_STATE", str(tmp_path / "two"))
    assert layout.install_id() != first
    (tmp_path / "two" / "install-id").write_text("../../etc\n")
    with pytest.raises(UserError) as e:
        layout.install_id()
    assert "install-id" in e.value.where and "delete the file" in e.value.fix
