"""Seconds per GB to put a locally built image on a test host that lacks it: runner's save → load over the SSH
connection (with its progress bar), and the shell pipe `docker save | ssh HOST docker load` for comparison.

    python bench/image_transfer.py [IMAGE] [--host-address 10.231.7.12] [--host gpu02]
IMAGE defaults to runner-musubi:latest (build it with `runner build musubi`; CI pins: tests/standin/pins.toml).
The image is removed from the host's engine before each run (only the host's copy; the local one stays).
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import docker

from runner.remote import image_transfer
from runner.remote.hosts import Host
from runner.remote.ssh import RemoteShell, connect

INFRA = Path("/var/lib/runner-test")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image", nargs="?", default="runner-musubi:latest")
    ap.add_argument("--host-address", default="10.231.7.12")
    ap.add_argument("--host", default="gpu02")
    a = ap.parse_args()
    local = docker.from_env()
    img = local.images.get(a.image)
    gb = img.attrs["Size"] / 1e9
    host = Host(name=a.host, ssh=f"runnertest@{a.host_address}", key=str(INFRA / "client_key"), known_hosts=str(INFRA / "known_hosts"))
    shell = RemoteShell(a.host, connect(host))
    root = "/var/lib/docker"

    def forget() -> None:
        shell.run(["docker", "image", "rm", "--force", a.image], timeout=120)

    print(f"image {a.image}: {gb:.2f} GB; link: netns veth to {a.host_address}")
    forget()
    t = time.perf_counter()
    image_transfer.ensure(shell, local, a.image, "bench", root)
    runner_s = time.perf_counter() - t
    print(f"runner save→load over SSH:       {runner_s:6.1f} s  {runner_s / gb:6.1f} s/GB")
    t = time.perf_counter()
    assert image_transfer.ensure(shell, local, a.image, "bench", root) is None
    print(f"already there (ID check only):   {time.perf_counter() - t:6.2f} s")
    forget()
    ssh = " ".join(["ssh", "-i", str(INFRA / "client_key"), "-o", f"UserKnownHostsFile={INFRA / 'known_hosts'}", f"runnertest@{a.host_address}"])
    t = time.perf_counter()
    subprocess.run(f"docker save {a.image} | {ssh} docker load", shell=True, check=True, capture_output=True)
    pipe_s = time.perf_counter() - t
    print(f"docker save | ssh docker load:   {pipe_s:6.1f} s  {pipe_s / gb:6.1f} s/GB")


if __name__ == "__main__":
    main()
