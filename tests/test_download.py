from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.hubserver import HubServer, Repo
from runner.cli import app
from runner.errors import UserError
from runner.models.download import fetch, plan
from runner.models.presets import COMFY_REPO, Format, preset_files
from runner.spec import Task, Trainer

# huggingface_hub writes in 10 MiB chunks, so a resumable cut must fall after the first one.
BIG = bytes(range(256)) * (48 * 1024)  # 12 MiB
CUT = 11 * 1024 * 1024


def _blob(name: str, size: int = 3000) -> bytes:
    return (name.encode() * (size // len(name) + 1))[:size]


def hub_repos() -> dict[str, Repo]:
    """The repositories of a preset (t2v-1.3B, both formats) and of a tokenizer, small except the comfy DiT (BIG)."""
    official = {
        "config.json": b'{"dim": 1536}',
        "README.md": b"readme",
        "Wan2.1_VAE.pth": _blob("vae"),
        "models_t5_umt5-xxl-enc-bf16.pth": _blob("t5"),
        "diffusion_pytorch_model.safetensors": _blob("dit"),
        "google/umt5-xxl/spiece.model": _blob("spiece"),
        "google/umt5-xxl/tokenizer_config.json": b"{}",
    }
    comfy = {
        "split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors": BIG,
        "split_files/diffusion_models/wan2.1_t2v_1.3B_fp8_scaled.safetensors": _blob("fp8"),
        "split_files/text_encoders/umt5_xxl_fp16.safetensors": _blob("umt5"),
        "split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors": _blob("umt5fp8"),
        "split_files/vae/wan_2.1_vae.safetensors": _blob("cvae"),
    }
    tokenizer = {
        "google/umt5-xxl/spiece.model": _blob("spiece"),
        "google/umt5-xxl/tokenizer_config.json": b"{}",
        "diffusion_pytorch_model-00001-of-00006.safetensors": _blob("shard"),
    }
    lfs = lambda files: {n for n in files if n.endswith((".pth", ".safetensors", ".model"))}  # noqa: E731
    repos = {
        "Wan-AI/Wan2.1-T2V-1.3B": Repo(official, lfs(official)),
        COMFY_REPO: Repo(comfy, lfs(comfy)),
        "Wan-AI/Wan2.1-T2V-14B": Repo(tokenizer, lfs(tokenizer)),
    }
    return repos


@pytest.fixture
def hub(monkeypatch):
    with HubServer(hub_repos()) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def _plan(tmp_path: Path, trainers=(Trainer.diffpipe, Trainer.musubi)):
    return plan("t2v-1.3B", Format.comfy, list(trainers), tmp_path / "models", tmp_path / "hf" / "hub")


def test_plan_takes_only_what_the_trainers_read(hub, tmp_path):
    names = {(i.repo, i.filename) for i in _plan(tmp_path)}
    assert names == {
        ("Wan-AI/Wan2.1-T2V-1.3B", "config.json"),
        ("Wan-AI/Wan2.1-T2V-1.3B", "Wan2.1_VAE.pth"),
        ("Wan-AI/Wan2.1-T2V-1.3B", "models_t5_umt5-xxl-enc-bf16.pth"),  # musubi needs the official T5
        ("Wan-AI/Wan2.1-T2V-1.3B", "google/umt5-xxl/spiece.model"),
        ("Wan-AI/Wan2.1-T2V-1.3B", "google/umt5-xxl/tokenizer_config.json"),
        (COMFY_REPO, "split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"),
        (COMFY_REPO, "split_files/text_encoders/umt5_xxl_fp16.safetensors"),
        ("Wan-AI/Wan2.1-T2V-14B", "google/umt5-xxl/spiece.model"),
        ("Wan-AI/Wan2.1-T2V-14B", "google/umt5-xxl/tokenizer_config.json"),
    }
    diffpipe_only = {i.filename for i in _plan(tmp_path, [Trainer.diffpipe])}
    assert "models_t5_umt5-xxl-enc-bf16.pth" not in diffpipe_only


def test_fetch_verifies_and_a_second_run_fetches_nothing(hub, tmp_path):
    items = _plan(tmp_path)
    assert fetch(items, tmp_path / "models") == {"fetched": len(items), "verified": 0, "skipped": 0}
    root = tmp_path / "models"
    assert (root / "Wan_2.1_ComfyUI_repackaged/split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors").read_bytes() == BIG
    repo = hub.repos["Wan-AI/Wan2.1-T2V-14B"]
    cache = tmp_path / "hf/hub/models--Wan-AI--Wan2.1-T2V-14B"
    assert (cache / "refs/main").read_text() == repo.sha  # what an offline from_pretrained(..., subfolder=) resolves
    assert (cache / "snapshots" / repo.sha / "google/umt5-xxl/spiece.model").read_bytes() == repo.files["google/umt5-xxl/spiece.model"]

    before = len(hub.log)
    assert fetch(_plan(tmp_path), root) == {"fetched": 0, "verified": 0, "skipped": len(items)}
    assert [e for e in hub.log[before:] if not e[1].startswith("/api/")] == []


def test_an_interrupted_download_resumes_with_a_range_request(hub, tmp_path):
    dit = "split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors"
    hub.cut[dit] = CUT
    items = [i for i in _plan(tmp_path) if i.filename == dit]
    with pytest.raises(UserError, match="resume"):
        fetch(items, tmp_path / "models")
    hub.down = False
    assert fetch(items, tmp_path / "models")["fetched"] == 1
    assert ("GET", f"/lfs/{hub.repos[COMFY_REPO].sha256(dit)}", f"bytes={10 * 1024 * 1024}-") in hub.log
    assert items[0].dest.read_bytes() == BIG


def test_a_damaged_local_file_is_fetched_again(hub, tmp_path):
    items = _plan(tmp_path)
    root = tmp_path / "models"
    fetch(items, root)
    vae = next(i for i in items if i.filename == "Wan2.1_VAE.pth")
    vae.dest.write_bytes(b"x" * vae.size)  # same size, other bytes, new mtime
    assert fetch(items, root)["fetched"] == 1
    assert vae.dest.read_bytes() == hub.repos["Wan-AI/Wan2.1-T2V-1.3B"].files["Wan2.1_VAE.pth"]


def test_token_comes_from_the_environment_and_is_never_written(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_test")
    fetch(_plan(tmp_path), tmp_path / "models")
    assert "Bearer hf_secret_for_test" in hub.auth
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"hf_secret_for_test" not in path.read_bytes(), path


def test_cli_shows_the_plan_then_downloads(hub, tmp_path):
    args = ["download", "t2v-1.3B", "--to", str(tmp_path / "m"), "--hf-home", str(tmp_path / "hf"), "--trainer", "diffpipe"]
    dry = CliRunner().invoke(app, args + ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "to fetch: 6 file(s)" in dry.output
    assert not (tmp_path / "m").exists()
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "fetched 6" in done.output


def test_unknown_preset_is_a_user_error(hub, tmp_path):
    with pytest.raises(UserError, match="t2v-1.3B"):
        plan("t2v-2B", Format.comfy, [Trainer.musubi], tmp_path, tmp_path)


def test_preset_files_per_trainer_and_format(tmp_path):
    diffpipe = preset_files("t2v-1.3B", "comfy", Trainer.diffpipe, Task.t2v_1_3b)
    assert diffpipe["ckpt_dir"] == Path("Wan2.1-T2V-1.3B")
    assert diffpipe["dit"] == Path("Wan_2.1_ComfyUI_repackaged/split_files/diffusion_models/wan2.1_t2v_1.3B_bf16.safetensors")
    assert diffpipe["t5"].name == "umt5_xxl_fp16.safetensors"
    musubi = preset_files("i2v-14B-480P", "comfy", Trainer.musubi, Task.i2v_14b_480p)
    assert musubi["t5"] == Path("Wan2.1-I2V-14B-480P/models_t5_umt5-xxl-enc-bf16.pth")
    assert musubi["clip"] == Path("Wan2.1-I2V-14B-480P/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    assert preset_files("t2v-14B", "official", Trainer.diffpipe, Task.t2v_14b)["dit"] is None
    with pytest.raises(UserError, match="download"):
        preset_files("t2v-14B", "official", Trainer.musubi, Task.t2v_14b, root=tmp_path)
    shard = tmp_path / "Wan2.1-T2V-14B" / "diffusion_pytorch_model-00001-of-00006.safetensors"
    shard.parent.mkdir()
    shard.write_bytes(b"")
    assert preset_files("t2v-14B", "official", Trainer.musubi, Task.t2v_14b, root=tmp_path)["dit"] == Path("Wan2.1-T2V-14B") / shard.name
    with pytest.raises(UserError, match="task"):
        preset_files("t2v-14B", "comfy", Trainer.musubi, Task.t2v_1_3b)
