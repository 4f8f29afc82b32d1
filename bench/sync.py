"""Dataset sync throughput to a test host (tests/infra/netns-hosts.sh): runner's sync, both ways (rsync, SFTP), against
scp and plain rsync over the same link, cold (empty target) and again with nothing or one caption changed.
Each cold figure is the median (and the fastest) of --repeat runs into fresh folders, the ways interleaved run by run. Prints one line per figure; --json adds a JSON line.

    python bench/sync.py [--host-address 10.231.7.11] [--files 200] [--mib-each 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host-address", default="10.231.7.11")
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--mib-each", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    target = f"runnertest@{a.host_address}"
    base = f"/srv/runner-test/gpu01/data/bench-{uuid.uuid4().hex[:8]}"
    host = Host(name="bench", ssh=target, key=str(INFRA / "client_key"), known_hosts=str(INFRA / "known_hosts"))
    shell = RemoteShell("bench", connect(host), host)
    figures: dict[str, float] = {}  # median seconds
    fastest: dict[str, float] = {}  # the fastest of the cold runs: the link's figure when the machine is busy
    runs = iter(range(10**6))

    def cold(ways: dict) -> None:
        """Each way into a fresh folder, interleaved run by run so that load on the machine hits them alike."""
        times: dict[str, list[float]] = {label: [] for label in ways}
        for _ in range(a.repeat):
            for label, fn in ways.items():
                dest = f"{base}/{next(runs)}"
                shell.run(["mkdir", "-p", dest])
                t = time.perf_counter()
                fn(dest)
                times[label].append(time.perf_counter() - t)
                shell.run(["rm", "-rf", "--", dest], timeout=120)
        for label in ways:
            figures[label], fastest[label] = statistics.median(times[label]), min(times[label])
            print(f"{label + ':':50s} {figures[label]:6.2f} s  {mib / figures[label]:7.1f} MiB/s  (fastest {fastest[label]:.2f} s)", flush=True)

    def again(label: str, fn) -> None:
        t = time.perf_counter()
        fn()
        figures[label] = time.perf_counter() - t
        print(f"{label + ':':50s} {figures[label]:6.2f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "dataset"
        src.mkdir()
        total = make_dataset(src, a.files, a.mib_each)
        mib = total / 2**20
        print(f"dataset: {2 * a.files} files, {mib:.1f} MiB; link: netns veth to {a.host_address}; median of {a.repeat}")
        rsync = ["rsync", "-a", "-e", " ".join(["ssh", *SSH_OPTS]), f"{src}/"]
        try:
            cold({
                "rsync -a (cold)": lambda d: subprocess.run([*rsync, f"{target}:{d}/"], check=True),
                "scp -r -p (cold)": lambda d: subprocess.run(["scp", "-q", "-r", "-p", *SSH_OPTS, f"{src}/.", f"{target}:{d}/"], check=True),
                **{f"runner sync, {how}{', by checksum' if by_content else ''} (cold)":
                   (lambda d, how=how, by_content=by_content: sync.upload(shell, src, d, "bench", how=how, by_content=by_content))
                   for how in ("rsync", "sftp") for by_content in (False, True)},
            })
            dest = f"{base}/again"
            subprocess.run([*rsync, f"{target}:{dest}/"], check=True)
            again("rsync -a, nothing changed", lambda: subprocess.run([*rsync, f"{target}:{dest}/"], check=True))
            for how in ("rsync", "sftp"):
                sync.upload(shell, src, dest, "bench", how=how)
                again(f"runner sync, {how}, nothing changed", lambda how=how: sync.upload(shell, src, dest, "bench", how=how))
                again(f"runner sync, {how}, by checksum, nothing changed",
                      lambda how=how: sync.upload(shell, src, dest, "bench", how=how, by_content=True))
                (src / "clip0000.txt").write_text(f"changed by {how}\n")
                again(f"runner sync, {how}, one caption changed", lambda how=how: sync.upload(shell, src, dest, "bench", how=how))
        finally:
            shell.run(["rm", "-rf", "--", base], timeout=120)
    ratio = {k: f["rsync -a (cold)"] / f["runner sync, rsync (cold)"] for k, f in (("median", figures), ("fastest", fastest))}
    print(f"runner sync (rsync way), cold, throughput / rsync -a's: {ratio['median']:.2f}x (medians), {ratio['fastest']:.2f}x (fastest runs)")
    if a.json:
        print(json.dumps({"files": 2 * a.files, "mib": round(mib, 1), "repeat": a.repeat, "median_s": {k: round(v, 3) for k, v in figures.items()},
                          "fastest_s": {k: round(v, 3) for k, v in fastest.items()}, "throughput_vs_rsync": {k: round(v, 3) for k, v in ratio.items()}}))

if __name__ == "__main__":
    main()
