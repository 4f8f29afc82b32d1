"""Dataset sync throughput to a test host (tests/infra/netns-hosts.sh): runner's SFTP sync vs scp and rsync
over the same link, and a re-sync with nothing changed. Prints one line per figure.

    python bench/sync.py [--host-address 10.231.7.11] [--files 200] [--mib-each 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from runner.remote import sync
from runner.remote.hosts import Host
from runner.remote.ssh import RemoteShell, connect

INFRA = Path("/var/lib/runner-test")
SSH_OPTS = ["-i", str(INFRA / "client_key"), "-o", f"UserKnownHostsFile={INFRA / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes"]


def make_dataset(root: Path, files: int, mib_each: float) -> int:
    total = 0
    for i in range(files):
        data = os.urandom(int(mib_each * 2**20))  # incompressible, like video
        (root / f"clip{i:04d}.mp4").write_bytes(data)
        (root / f"clip{i:04d}.txt").write_text(f"caption {i}\n")
        total += len(data) + len(f"caption {i}\n")
    return total


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host-address", default="10.231.7.11")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--mib-each", type=float, default=1.0)
    a = ap.parse_args()
    target = f"runnertest@{a.host_address}"
    base = f"/srv/runner-test/gpu01/data/bench-{uuid.uuid4().hex[:8]}"
    shell = RemoteShell("bench", connect(Host(name="bench", ssh=target, key=str(INFRA / "client_key"), known_hosts=str(INFRA / "known_hosts"))))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dataset"
        src.mkdir()
        total = make_dataset(src, a.files, a.mib_each)
        mib = total / 2**20
        print(f"dataset: {2 * a.files} files, {mib:.1f} MiB; link: netns veth to {a.host_address}")
        try:
            t = timed(lambda: sync.upload(shell, src, f"{base}/runner", "bench"))
            print(f"runner sync (SFTP, cold):        {t:6.2f} s  {mib / t:7.1f} MiB/s")
            t = timed(lambda: sync.upload(shell, src, f"{base}/runner", "bench"))
            print(f"runner re-sync, nothing changed: {t:6.2f} s")
            (src / "clip0000.txt").write_text("changed caption\n")
            t = timed(lambda: sync.upload(shell, src, f"{base}/runner", "bench"))
            print(f"runner re-sync, one caption:     {t:6.2f} s")
            shell.run(["mkdir", "-p", f"{base}/scp", f"{base}/rsync"])
            t = timed(lambda: subprocess.run(["scp", "-q", "-r", "-p", *SSH_OPTS, f"{src}/.", f"{target}:{base}/scp/"], check=True))
            print(f"scp -r (cold):                   {t:6.2f} s  {mib / t:7.1f} MiB/s")
            rsync = ["rsync", "-a", "-e", " ".join(["ssh", *SSH_OPTS]), f"{src}/", f"{target}:{base}/rsync/"]
            t = timed(lambda: subprocess.run(rsync, check=True))
            print(f"rsync -a (cold):                 {t:6.2f} s  {mib / t:7.1f} MiB/s")
            t = timed(lambda: subprocess.run(rsync, check=True))
            print(f"rsync re-sync, nothing changed:  {t:6.2f} s")
        finally:
            shell.run(["rm", "-rf", "--", base], timeout=120)


if __name__ == "__main__":
    main()
