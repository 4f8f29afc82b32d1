"""images/check_imports.py, the build-time import check of both Dockerfiles, run as the builds run it.

The image builds run it for real (tests/test_docker.py builds the stand-in images, whose pins list the same
modules as the real ones); here: the trainer-folder import rules, failures reported all together, and the
torch/bitsandbytes parts where those packages are installed (they are not in runner's test venv).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

CHECKER = Path(__file__).resolve().parent.parent / "images" / "check_imports.py"


def check(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECKER), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def trainer(tmp_path) -> Path:
    """A checkout laid out like diffusion-pipe: top-level packages that import each other and read paths
    relative to the working directory (models/cosmos.py does os.path.abspath('submodules/Cosmos'))."""
    root = tmp_path / "trainer"
    (root / "utils").mkdir(parents=True)
    (root / "submodules" / "Lib").mkdir(parents=True)
    (root / "utils" / "__init__.py").write_text("")
    (root / "utils" / "common.py").write_text("VALUE = 1\n")
    (root / "utils" / "dataset.py").write_text("import os\nfrom utils.common import VALUE\nassert os.path.isdir('submodules/Lib')\n")
    (root / "exits.py").write_text("raise SystemExit(3)\n")
    (root / "broken.py").write_text("import module_that_is_not_installed\n")
    return root


def test_trainer_modules_import_as_from_a_script_in_the_checkout(trainer, tmp_path):
    r = check("--trainer-dir", str(trainer), "json", "utils.dataset", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if "stubbed" not in line] == ["check_imports: ok   json", "check_imports: ok   utils.dataset"]
    outside = check("utils.dataset", cwd=tmp_path)
    assert outside.returncode == 1 and "No module named 'utils'" in outside.stderr


def test_every_failure_is_reported_and_fails_the_check(trainer):
    r = check("--trainer-dir", str(trainer), "broken", "exits", "utils.dataset")
    assert r.returncode == 1
    assert "check_imports: ok   utils.dataset" in r.stdout, "a failure does not stop the other checks"
    assert "ModuleNotFoundError: No module named 'module_that_is_not_installed'" in r.stderr
    assert "SystemExit: 3" in r.stderr
    assert r.stderr.rstrip().endswith("check_imports: 2 failed: broken, exits")


def test_without_torch_nothing_is_stubbed():
    if importlib.util.find_spec("torch"):
        pytest.skip("torch is installed here: the stub case is the next test")
    r = check("json")
    assert r.returncode == 0 and "stubbed" not in r.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed in this venv (a CUDA-only image dependency)")
def test_without_a_gpu_the_cuda_device_query_is_stubbed_and_said(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: nothing is stubbed")
    (tmp_path / "t5like.py").write_text("import torch\ndef f(device=torch.cuda.current_device()):\n    return device\n")
    r = check("--trainer-dir", str(tmp_path), "t5like")
    assert r.returncode == 0, r.stderr
    assert "torch.cuda.current_device() stubbed" in r.stdout


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed in this venv (it needs torch)")
def test_bitsandbytes_8bit_config_keys():
    from importlib.metadata import version

    r = check("--bnb-config-keys", "lr,betas,percentile_clipping,block_wise", "bitsandbytes")
    has_keys = tuple(int(p) for p in version("bitsandbytes").split(".")[:2]) < (0, 50)
    assert (r.returncode == 0) == has_keys, r.stdout + r.stderr


def test_without_a_gpu_comfyui_is_put_in_its_cpu_mode(trainer):
    """ComfyUI's contract as diffusion-pipe meets it: comfy.cli_args.args.cpu, and comfy.model_management asking
    the GPU for its memory at import unless it is set (ComfyUI itself cannot be fetched here: a stand-in of it)."""
    comfy = trainer / "submodules" / "ComfyUI" / "comfy"
    comfy.mkdir(parents=True)
    (comfy / "__init__.py").write_text("")
    (comfy / "cli_args.py").write_text("import argparse\nargs = argparse.Namespace(cpu=False)\n")
    (comfy / "model_management.py").write_text(
        "from comfy.cli_args import args\nif not args.cpu:\n    raise RuntimeError('Found no NVIDIA driver on your system.')\n")
    (trainer / "utils" / "patches.py").write_text(
        "import os, sys\nsys.path.insert(0, os.path.join(os.path.dirname(__file__), '../submodules/ComfyUI'))\nimport comfy.model_management\n")
    r = check("--trainer-dir", str(trainer), "--comfyui", "submodules/ComfyUI", "utils.patches")
    assert r.returncode == 0, r.stderr
    assert "ComfyUI (submodules/ComfyUI) set to its --cpu mode" in r.stdout and "check_imports: ok   utils.patches" in r.stdout
    without = check("--trainer-dir", str(trainer), "utils.patches")
    assert without.returncode == 1 and "Found no NVIDIA driver" in without.stderr
