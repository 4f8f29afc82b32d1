"""Pins → build inputs, without an engine: tags, build args, labels, the build context."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from runner import images

REPO = Path(__file__).resolve().parent.parent


def test_real_pins_give_every_build_arg_and_label():
    pins = images.load_pins("diffpipe")
    args = images.build_args(pins, "https://mirror.example/simple")
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04@sha256:")
    assert args["TRAINER_COMMIT"] == "8f83dbf25d03219df705570ec03e62be04bc402f"
    assert "submodules/ComfyUI=9a9fdb10ed144ce760d9682cb247526ea23cc525" in args["TRAINER_SUBMODULES"]
    assert args["FLASH_ATTN_SHA256"] and args["FLASH_ATTN_WHEEL"].endswith("cp312-cp312-linux_x86_64.whl")
    assert args["PIP_INDEX_URL"] == "https://mirror.example/simple", "a pip mirror set once reaches builds"
    labels = images.labels(pins, "abc")
    assert labels["org.opencontainers.image.revision"] == args["TRAINER_COMMIT"]
    assert labels["io.runner.pins.torch"] == "2.9.0"


def test_musubi_tokenizers_are_pinned_by_revision():
    args = images.build_args(images.load_pins("musubi"), None)
    assert "Wan-AI/Wan2.1-T2V-14B:google/umt5-xxl@a064a6c7" in args["TOKENIZERS"] and "PIP_INDEX_URL" not in args


def test_tag_follows_pins_and_ca_bundle_not_the_job(tmp_path):
    pins = images.load_pins("musubi")
    ref = images.image_ref(pins, None)
    assert ref == images.image_ref(pins, None), "same inputs, same tag"
    changed = images.Pins("musubi", "default", pins.values | {"commit": "0" * 40}, pins.base)
    assert images.image_ref(changed, None) != ref
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert images.image_ref(pins, ca) != ref


def test_build_context_holds_the_locks_and_the_ca_bundle(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("my proxy CA\n")
    context, _ = images.build_context(images.load_pins("musubi", "blackwell"), ca)
    with tarfile.open(fileobj=io.BytesIO(context)) as tar:
        names = tar.getnames()
        assert tar.extractfile("images/ca/runner-extra.crt").read() == b"my proxy CA\n"
        assert tar.extractfile("images/torch_lock.txt").read() == (REPO / "images/musubi/torch-blackwell.lock").read_bytes()
    assert "Dockerfile" in names and "trainer-src/.keep" in names
