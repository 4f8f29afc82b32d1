"""Seconds per Dockerfile step of CI's images built from scratch, as a fresh CI machine builds them: the stand-in pins
(tests/standin/pins.toml), runner's own build context and build args, `nocache`, under a tag of this run that is
removed afterwards (images that other builds share are never touched). Needs the base image (tests/infra/base-image.sh).

    python bench/ci_images.py [musubi diffpipe caption] [--keep]
"""

from __future__ import annotations

import argparse
import io
import time
import uuid
from pathlib import Path

import docker

from runner.images import builder

REPO = Path(__file__).resolve().parent.parent
PINS = REPO / "tests" / "standin" / "pins.toml"
CA = Path("/etc/ssl/certs/ca-certificates.crt")


def build(client, name: str) -> tuple[str, float, list[tuple[str, float]]]:
    pins = builder.load_pins(name, pins_file=PINS)
    context, tag = builder.build_context(pins, CA if CA.is_file() else None)
    ref = f"ci-time-bench-{name}:{uuid.uuid4().hex[:8]}"
    steps: list[tuple[str, float]] = []
    started = last = time.monotonic()
    step = "context"
    for chunk in client.api.build(fileobj=io.BytesIO(context), custom_context=True, tag=ref, buildargs=builder.build_args(pins, None),
                                  labels=builder.labels(pins, tag), network_mode="host", rm=True, forcerm=True, nocache=True, decode=True):
        if "error" in chunk:
            raise SystemExit(f"{name}: {chunk['error']}")
        for line in chunk.get("stream", "").splitlines():
            if line.startswith("Step "):
                now = time.monotonic()
                steps.append((step, now - last))
                step, last = line.split(" : ", 1)[-1][:90], now
    steps.append((step, time.monotonic() - last))
    return ref, time.monotonic() - started, steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="*", default=["musubi", "diffpipe", "caption"])
    ap.add_argument("--keep", action="store_true", help="keep the built images (tags printed) instead of removing them")
    a = ap.parse_args()
    client = docker.from_env()
    for name in a.images:
        ref, total, steps = build(client, name)
        size = client.images.get(ref).attrs["Size"] / 1e9
        print(f"{name}: {total:.0f} s, {size:.2f} GB ({ref})")
        for step, seconds in steps:
            if seconds >= 1:
                print(f"  {seconds:6.1f} s  {step}")
        if not a.keep:
            client.images.remove(ref)


if __name__ == "__main__":
    main()
