"""Pins → build inputs, without an engine: tags, build args, labels, the build context."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from runner.errors import UserError
from runner.images import builder
from tests.dockerfixtures import STANDIN_PINS

REPO = Path(__file__).resolve().parent.parent


def test_real_pins_give_every_build_arg_and_label():
    pins = builder.load_pins("diffpipe")
    args = builder.build_args(pins, "https://mirror.example/simple")
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04@sha256:")
    assert args["TRAINER_COMMIT"] == "8f83dbf25d03219df705570ec03e62be04bc402f"
    assert "submodules/ComfyUI=9a9fdb10ed144ce760d9682cb247526ea23cc525" in args["TRAINER_SUBMODULES"]
    assert args["FLASH_ATTN_SHA256"] and args["FLASH_ATTN_WHEEL"].endswith("cp312-cp312-linux_x86_64.whl")
    assert args["PIP_INDEX_URL"] == "https://mirror.example/simple", "a pip mirror set once reaches builds"
    labels = builder.labels(pins, "abc")
    assert labels["org.opencontainers.image.revision"] == args["TRAINER_COMMIT"]
    assert labels["io.runner.pins.torch"] == "2.9.0"


def test_musubi_tokenizers_are_pinned_by_revision():
    args = builder.build_args(builder.load_pins("musubi"), None)
    assert "Wan-AI/Wan2.1-T2V-14B:google/umt5-xxl@a064a6c7" in args["TOKENIZERS"] and "PIP_INDEX_URL" not in args


def test_tag_follows_pins_and_ca_bundle_not_the_job(tmp_path):
    pins = builder.load_pins("musubi")
    ref = builder.image_ref(pins, None)
    assert ref == builder.image_ref(pins, None), "same inputs, same tag"
    changed = builder.Pins("musubi", "default", pins.values | {"commit": "0" * 40}, pins.base)
    assert builder.image_ref(changed, None) != ref
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert builder.image_ref(pins, ca) != ref


def test_build_context_holds_the_locks_and_the_ca_bundle(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("my proxy CA\n")
    context, _ = builder.build_context(builder.load_pins("musubi", "blackwell"), ca)
    with tarfile.open(fileobj=io.BytesIO(context)) as tar:
        names = tar.getnames()
        assert tar.extractfile("images/ca/runner-extra.crt").read() == b"my proxy CA\n"
        assert tar.extractfile("images/torch_lock.txt").read() == (REPO / "images/musubi/torch-blackwell.lock").read_bytes()
    assert "Dockerfile" in names and "trainer-src/.keep" in names


def _dockerfile_default(trainer: str, arg: str) -> str:
    return re.search(rf'^ARG {arg}="([^"]*)"', (REPO / f"Dockerfile.{trainer}").read_text(), re.M).group(1)


def test_import_checks_come_from_the_pins_and_the_dockerfiles_defaults_are_those_pins():
    for trainer in builder.TRAINERS:
        args = builder.build_args(builder.load_pins(trainer), None)
        assert args["IMPORT_CHECK"] == _dockerfile_default(trainer, "IMPORT_CHECK"), "a `docker build` by hand checks the same"
    diffpipe = builder.build_args(builder.load_pins("diffpipe"), None)
    assert {"utils.patches", "utils.dataset", "optimizers.adamw_8bit", "models.wan.wan"} <= set(diffpipe["IMPORT_CHECK"].split())
    assert {"percentile_clipping", "block_wise"} <= set(diffpipe["BNB_CONFIG_KEYS"].split(","))
    assert diffpipe["BNB_CONFIG_KEYS"] == _dockerfile_default("diffpipe", "BNB_CONFIG_KEYS")
    assert diffpipe["FLASH_ATTN_SDIST"] == "flash-attn==2.8.3 --hash=sha256:1e71dd64a9e0280e0447b8a0c2541bad4bf6ac65bdeaa2f90e51a9e57de0370d"
    musubi = builder.build_args(builder.load_pins("musubi"), None)["IMPORT_CHECK"].split()
    assert "cv2" in musubi and "musubi_tuner.wan_cache_text_encoder_outputs" in musubi


def test_standin_images_check_the_real_images_trainer_modules():
    """The stand-ins provide the modules the real musubi check imports (not torch and its dependants), and the real cv2
    (yaml: the stand-in accelerate reads its --config_file with it)."""
    real = builder.load_pins("musubi").values["import_check"]
    standin = builder.load_pins("musubi", pins_file=STANDIN_PINS).values["import_check"]
    assert [m for m in real if m not in ("torch", "accelerate", "bitsandbytes")] == [m for m in standin if m not in ("av", "numpy", "yaml")]
    lock = (REPO / "tests/standin/requirements.lock").read_text()
    opencv = re.search(r"^opencv-python==.*?(?=^\S)", lock, re.S | re.M).group(0)
    assert opencv.split("#")[0] in (REPO / "images/musubi/requirements.lock").read_text(), "same version, same hashes as the real lock"
    diffpipe = builder.load_pins("diffpipe", pins_file=STANDIN_PINS)
    assert builder.build_args(diffpipe, None)["BNB_CONFIG_KEYS"] == "", "no bitsandbytes in the stand-in: no 8-bit config check"


def test_diffpipe_locks_the_bitsandbytes_its_8bit_optimizer_reads():
    for name in ("diffpipe", "musubi"):
        pinned = builder.load_pins(name).values["bitsandbytes"]
        assert f"\nbitsandbytes=={pinned} \\" in (REPO / f"images/{name}/requirements.lock").read_text()
    assert builder.load_pins("diffpipe").values["bitsandbytes"] == "0.49.2"


def test_no_build_step_hides_its_errors_or_falls_back_to_an_unlocked_install():
    for trainer in builder.TRAINERS:
        text = (REPO / f"Dockerfile.{trainer}").read_text()
        assert "2>/dev/null" not in text and "|| pip install --no-deps -e" not in text


def test_malformed_check_pins_are_user_errors(tmp_path):
    pins = builder.load_pins("diffpipe")
    as_string = builder.Pins("diffpipe", "default", pins.values | {"import_check": "torch cv2"}, pins.base)
    with pytest.raises(UserError, match=r"import_check.*not a list of names.*import_check = \["):
        builder.build_args(as_string, None)
    no_sdist = builder.Pins("diffpipe", "default", {k: v for k, v in pins.values.items() if k != "flash_attn_sdist"}, pins.base)
    no_wheel_hash = builder.Pins("diffpipe", "default", pins.values | {"flash_attn_wheel": {"url": pins.values["flash_attn_wheel"]["url"]}}, pins.base)
    for bad in (no_sdist, no_wheel_hash):
        with pytest.raises(UserError, match="would not be hash-checked"):
            builder.build_args(bad, None)


def test_the_captioner_image_is_pinned_like_the_trainers_and_ci_builds_the_same_locks():
    real = builder.load_pins("caption")
    args = builder.build_args(real, None)
    assert args["IMPORT_CHECK"] == _dockerfile_default("caption", "IMPORT_CHECK"), "a `docker build` by hand checks the same"
    assert {"transformers.models.qwen2_5_vl.modeling_qwen2_5_vl", "transformers.models.qwen2_vl.video_processing_qwen2_vl"} <= set(args["IMPORT_CHECK"].split())
    assert args["BASE_IMAGE"] == builder.load_pins("musubi").values["base_image"], "one CUDA base for the musubi and caption images"
    ci = builder.load_pins("caption", pins_file=STANDIN_PINS)
    assert ci.values["import_check"] == real.values["import_check"] and ci.values["base_image"] == "runner-test-base:bookworm"
    for key in ("torch_lock", "requirements"):
        assert ci.path(key).resolve() == real.path(key).resolve(), "CI builds the real locks, not stand-ins"
    assert "transformers==4.57.6 \\" in real.path("requirements").read_text()
    torch_lock = real.path("torch_lock").read_text()
    assert "torch==2.5.1 \\" in torch_lock and torch_lock.count("--hash=sha256:") > 10
    with tarfile.open(fileobj=io.BytesIO(builder.build_context(real, None)[0])) as tar:
        assert {"trainer-src/caption_media.py", "trainer-src/random_qwen.py"} <= set(tar.getnames())
