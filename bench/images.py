#!/usr/bin/env python3
"""Image figures: the size of the layers each Dockerfile adds, what rebuilds cost, and the time from
`runner train` to the trainer's first line.

    python bench/images.py [--pins FILE]      (a Docker engine; default pins: RUNNER_PINS or images/pins.toml)

With the stand-in pins (tests/standin/pins.toml, as in CI) the figures describe runner's own layers and
mechanics; the real images add torch and the trainers' wheels (tens of GB) in the layers named "torch lock"
and "requirements lock", which this machine cannot build (no CUDA base image, no GitHub).
Rebuild costs: a changed job file changes nothing in an image (jobs are mounted, not built in); a changed
trainer commit rebuilds only the layers from the trainer source on, which the timing shows.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from runner import config  # noqa: E402
from runner.executors.local import client  # noqa: E402
from runner.images import builder  # noqa: E402


def layer_table(docker_client, ref: str, base: str) -> list[tuple[str, int]]:
    base_ids = {h["Id"] for h in docker_client.api.history(base)}
    rows = []
    for h in reversed(docker_client.api.history(ref)):
        if h["Id"] in base_ids or not h["Size"]:
            continue
        step = re.sub(r"\s+", " ", h["CreatedBy"].replace("/bin/sh -c ", "").replace("#(nop) ", ""))[:90]
        rows.append((step, h["Size"]))
    return rows


def timed_build(docker_client, pins, settings) -> tuple[float, str, int]:
    lines: list[str] = []
    t0 = time.perf_counter()
    ref = builder.build(docker_client, pins, settings.ca_bundle, settings.pip_index_url, lines.append)
    cached = sum("Using cache" in line for line in lines)
    return time.perf_counter() - t0, ref, cached


def first_line_latency(pins_file: Path) -> float:
    """Seconds from starting `runner train` on the stand-in example to the trainer's first output line."""
    from tests import modelfixtures

    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        modelfixtures.models_root(ws / "models")
        shutil.copytree(REPO / "examples", ws / "examples", ignore=shutil.ignore_patterns("outputs", "cache"))
        env = {**os.environ, "RUNNER_PINS": str(pins_file), "RUNNER_GPUS": "none", "RUNNER_STATE": str(ws / "state"),
               "HF_HOME": str(ws / "hf"), "STANDIN_STEP_SECONDS": "0"}
        t0 = time.perf_counter()
        p = subprocess.Popen(["runner", "train", "examples/t2v-1.3B-musubi.yaml"], cwd=ws, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        latency, seen = float("nan"), []
        for line in p.stdout:
            seen.append(line)
            if "STAND-IN" in line or "[runner] step 1/" in line:
                latency = time.perf_counter() - t0
                break
        seen.append(p.stdout.read())
        if p.wait() != 0:
            print("".join(seen)[-2000:], file=sys.stderr)
        return latency


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pins", type=Path, default=None)
    args = ap.parse_args()
    settings = config.load()
    pins_file = (args.pins or settings.pins or builder.default_pins_file()).resolve()
    docker_client = client()
    for trainer in builder.TRAINERS:
        pins = builder.load_pins(trainer, pins_file=pins_file)
        seconds, ref, cached = timed_build(docker_client, pins, settings)
        rows = layer_table(docker_client, ref, pins.values["base_image"])
        print(f"\n{ref} (on {pins.values['base_image']}): build or check {seconds:.1f} s")
        for step, size in rows:
            print(f"  {size / 2**20:9.1f} MiB  {step}")
        print(f"  {sum(s for _, s in rows) / 2**20:9.1f} MiB  added in total")

        changed = pins.values | {"commit": secrets.token_hex(20)}  # a commit no build has seen
        seconds, other, cached = timed_build(docker_client, builder.Pins(trainer, pins.variant, changed, pins.base), settings)
        print(f"  rebuild after changing only the trainer commit: {seconds:.1f} s ({cached} steps from cache)")
        docker_client.images.remove(other)
        timed_build(docker_client, pins, settings)  # `latest` back on the real pins' image
    print(f"\ntime from `runner train` to the trainer's first line (stand-in musubi example): {first_line_latency(pins_file):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
