"""`runner dataset check` on 1,000 generated files; prints files per second.

Usage: PYTHONPATH=. python bench/dataset_check.py [N]   (default 1000: 700 MP4, 200 MKV (no header frame count), 100 PNG)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from runner.data.check import Settings, check_directory
from runner.data.synth import write_caption, write_image, write_video


def build(d: Path, n: int) -> None:
    # One file of each kind is encoded, then copied: the bench measures checking, not encoding.
    mp4 = write_video(d / "seed.mp4", 81, 30)
    mkv = write_video(d / "seed.mkv", 81, 24)
    png = write_image(d / "seed.png")
    for i in range(n):
        source = mp4 if i % 10 < 7 else mkv if i % 10 < 9 else png
        target = d / f"clip {i:04d}{source.suffix}"
        target.write_bytes(source.read_bytes())
        write_caption(target, f"caption {i}")
    for seed in (mp4, mkv, png):
        seed.unlink()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        build(d, n)
        start = time.perf_counter()
        report = check_directory(d, Settings(frames=[17, 33, 65]))
        seconds = time.perf_counter() - start
    assert len(report.files) == n
    print(f"dataset check: {n} files in {seconds:.2f} s = {n / seconds:.0f} files/s")


if __name__ == "__main__":
    main()
