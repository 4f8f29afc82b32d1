"""A real Docker engine for tests, and runner's images built against a local base image.

CI (.ci/run) starts dockerd and builds the base image `runner-test-base:bookworm` (tests/infra/). The
images are built with the STAND-IN trainers of tests/standin/ (no GPU, no upstream source, no CUDA
wheels here); containers start without GPUs (RUNNER_GPUS=none). The real pins stay the default.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STANDIN_PINS = REPO / "tests" / "standin" / "pins.toml"
BASE_IMAGE = "runner-test-base:bookworm"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def docker_missing_reason() -> str | None:
    try:
        import docker

        c = docker.from_env()
        c.ping()
    except Exception as e:  # any failure means: no usable engine
        return f"no Docker engine ({e.__class__.__name__}); run tests/infra/docker-engine.sh"
    try:
        c.images.get(BASE_IMAGE)
    except Exception:
        return f"no base image {BASE_IMAGE}; run tests/infra/base-image.sh"
    return None


def require_docker() -> None:
    reason = docker_missing_reason()
    if reason:
        if os.environ.get("RUNNER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"RUNNER_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(reason)


def runner_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for running the `runner` command against the stand-in images, isolated in `tmp`."""
    cfg = tmp / "runner-config.yaml"
    # nested sandboxes (CI) cannot raise memlock; real hosts keep runner's default (unlimited)
    hard = subprocess.run(["sh", "-c", "ulimit -H -l"], capture_output=True, text=True).stdout.strip()
    memlock = -1 if hard == "unlimited" else int(hard) * 1024
    cfg.write_text(f"ulimits:\n  memlock: {memlock}\n  stack: 67108864\nmodels: {tmp}/svc/models\ndata: {tmp}/svc/data\n"
                   f"cache: {tmp}/svc/cache\noutputs: {tmp}/svc/outputs\n")
    env = dict(os.environ)
    env.update(RUNNER_CONFIG=str(cfg), RUNNER_PINS=str(STANDIN_PINS), RUNNER_GPUS="none", RUNNER_STATE=str(tmp / "state"),
               HF_HOME=str(tmp / "hf"), STANDIN_STEP_SECONDS="0", COLUMNS="200")
    if HOST_CA.is_file():
        env["RUNNER_CA_BUNDLE"] = str(HOST_CA)
    env.update(extra)
    return env


def runner(args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["runner", *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
