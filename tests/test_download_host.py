"""`runner download PRESET --host H`: the host fetches the files itself, in a trainer image there, verified and resumable.

Real parts: an SSH test host (tests/infra/) with its own dockerd, the stand-in trainer image sent there, the `runner`
command. The hub is tests/hubserver.py (a local stand-in of the Hugging Face API and file endpoints), listening on the
bridge address the test hosts reach (10.231.7.1); it cuts a download off once to make a real interruption.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import pytest

from runner.models.presets import COMFY_REPO
from tests.dockerfixtures import runner
from tests.hubserver import HubServer
from tests.remotefixtures import SRV, add_host, host_dirs
from tests.test_download import CUT, hub_repos
from tests.test_remote import env, remote_models  # noqa: F401  (fixtures)

DIT = "split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"
TOKEN = "hf_remote_secret_" + uuid.uuid4().hex[:8]


@pytest.fixture
def fresh_host(env, remote_models):  # noqa: F811
    """A host entry whose models folder does not exist yet, as on a fresh GPU host."""
    tag = uuid.uuid4().hex[:8]
    models = SRV / "gpu01" / "models" / f"t-dl-{tag}"
    dirs = host_dirs("gpu01", tag)
    add_host(env, "fresh", "gpu01", str(models), dirs)
    yield models
    for d in [models, *map(Path, dirs.values())]:
        shutil.rmtree(d, ignore_errors=True)


def _everything_under(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for root in roots if root.exists() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_host_downloads_a_preset_itself_resumes_and_verifies(env, fresh_host, tmp_path):  # noqa: F811
    repos = hub_repos()
    with HubServer(repos, address="10.231.7.1") as hub:
        env = {**env, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
        args = ["download", "t2v-1.3B", "--host", "fresh", "--trainer", "diffpipe"]
        hub.cut[DIT] = CUT
        cut = runner(args, env)
        assert cut.returncode == 2, cut.stdout[-2000:] + cut.stderr[-2000:]
        assert "the download there failed" in cut.stderr and "`runner download t2v-1.3B --host fresh` again" in cut.stderr
        partial = fresh_host / "Wan_2.1_ComfyUI_repackaged" / "split_files" / "diffusion_models" / ".wan2.1_t2v_1.3B_bf16.safetensors.incomplete"
        assert partial.stat().st_size == CUT, "what arrived is kept on the host"

        hub.down = False
        done = runner(args, env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert "to fetch:" in done.stdout and "every file matches the hub" in done.stdout
        sha = repos[COMFY_REPO].sha256(DIT)
        assert ("GET", f"/lfs/{sha}", f"bytes={CUT}-") in hub.log, "the second run resumed with a Range request"
        dit = fresh_host / "Wan_2.1_ComfyUI_repackaged" / DIT
        assert hashlib.sha256(dit.read_bytes()).hexdigest() == sha and not partial.exists()
        assert (fresh_host / "Wan2.1-T2V-1.3B" / "Wan2.1_VAE.pth").read_bytes() == repos["Wan-AI/Wan2.1-T2V-1.3B"].files["Wan2.1_VAE.pth"]
        assert f"Bearer {TOKEN}" in hub.auth, "the token reached the hub"

        gets = len(hub.file_gets())
        again = runner([*args, "--json"], env)
        assert again.returncode == 0 and len(hub.file_gets()) == gets, "a second run fetches nothing"
        assert json.loads(again.stdout)["result"] == {"fetched": 0, "verified": 0, "skipped": 6}
        cache = SRV / "gpu01" / "cache" / f"t-{fresh_host.name.removeprefix('t-dl-')}"
        assert list(cache.glob("download-*/jobs")) and not list(cache.glob("download-*/jobs/*")), "the fetcher's folders are removed"

        for text in (cut.stdout, cut.stderr, done.stdout, done.stderr, again.stdout, again.stderr):
            assert TOKEN not in text
        assert TOKEN.encode() not in _everything_under(fresh_host, SRV / "gpu01" / "cache", Path(env["RUNNER_STATE"]))


def test_a_bad_preset_or_host_is_refused(env, fresh_host):  # noqa: F811
    bad = runner(["download", "t2v-2B", "--host", "fresh"], env)
    assert bad.returncode == 2 and "preset 't2v-2B'" in bad.stderr and not fresh_host.exists(), bad.stderr
    nosuch = runner(["download", "t2v-1.3B", "--host", "nosuch"], env)
    assert nosuch.returncode == 2 and "host 'nosuch': is not in the hosts inventory" in nosuch.stderr, nosuch.stderr
    both = runner(["download", "t2v-1.3B", "--host", "fresh", "--to", "models"], env)
    assert both.returncode == 2 and "--to: cannot be given with --host" in both.stderr, both.stderr


def test_a_job_on_a_host_without_its_models_names_the_download_command(workspace, env, fresh_host):  # noqa: F811
    r = runner(["train", "examples/t2v-1.3B-musubi.yaml", "--host", "fresh"], env, cwd=workspace)
    assert r.returncode == 2 and "lacks model files" in r.stderr, r.stderr
    assert "`runner download t2v-1.3B --trainer musubi --host fresh`" in r.stderr and "scp -r" in r.stderr, r.stderr


def test_a_host_downloads_the_captioners_weights_into_its_models_folder(env, fresh_host):  # noqa: F811
    from tests.hubserver import Repo

    files = {"config.json": b'{"model_type": "qwen2_5_vl"}', "merges.txt": b"#v\n", "tokenizer.json": b"{}",
             "model-00001-of-00001.safetensors": b"weights" * 1000, "README.md": b"card"}
    with HubServer({"Qwen/Qwen2.5-VL-7B-Instruct": Repo(files, {"model-00001-of-00001.safetensors"})}, address="10.231.7.1") as hub:
        r = runner(["download", "qwen2.5-vl-7b", "--host", "fresh"], {**env, "HF_ENDPOINT": hub.url})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    folder = fresh_host / "Qwen2.5-VL-7B-Instruct"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(n for n in files if n != "README.md")
    assert (folder / "model-00001-of-00001.safetensors").read_bytes() == files["model-00001-of-00001.safetensors"], "where runner caption --host looks"
