"""`runner dataset prepare` throughput against plain ffmpeg doing the same work.

The same job both ways: N source videos (30 fps, 640x360, 10 s) → 16 fps, longest side 320, 81-frame clips,
H.264 CRF 18 preset veryfast, the tail kept as a last clip (runner rounds it to 4k+1, ffmpeg keeps it whole). ffmpeg runs one process per video with the segment muxer, N at a time like
prepare's worker pool. Prints source frames per second for each. Usage: PYTHONPATH=. python bench/prepare.py [N]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from runner.data.prepare import Options, prepare
from runner.data.synth import write_caption, write_video

FPS, SECONDS, WIDTH, HEIGHT = 30, 10, 640, 360


def ffmpeg(src: Path, out: Path) -> None:
    # Segments cut at exact frame counts need a keyframe every 81 output frames.
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-vf", "fps=16,scale=320:180", "-an", "-c:v", "libx264",
         "-crf", "18", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "81", "-sc_threshold", "0",
         "-force_key_frames", "expr:eq(mod(n,81),0)", "-f", "segment", "-segment_frames",
         ",".join(str(81 * k) for k in range(1, 10)), "-reset_timestamps", "1", str(out / f"{src.stem}_%03d.mp4")],
        check=True,
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    with tempfile.TemporaryDirectory() as tmp:
        src, a, b = Path(tmp, "src"), Path(tmp, "runner"), Path(tmp, "ffmpeg")
        for d in (src, a, b):
            d.mkdir()
        for i in range(n):
            write_caption(write_video(src / f"v{i}.mp4", FPS * SECONDS, FPS, WIDTH, HEIGHT))
        frames = n * FPS * SECONDS
        workers = 2

        start = time.perf_counter()
        report = prepare(src, a, Options(fps=16, frames=81, min_frames=5, max_side=320, workers=workers))
        runner_s = time.perf_counter() - start
        clips = sum(len(r.outputs) for r in report.results)
        print(f"runner dataset prepare: {n} videos, {frames} source frames → {clips} clips in {runner_s:.2f} s = {frames / runner_s:.0f} frames/s")

        if not shutil.which("ffmpeg"):
            print("ffmpeg: not installed, no comparison (apt-get install ffmpeg for this bench only)")
            return
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda v: ffmpeg(v, b), sorted(src.glob("*.mp4"))))
        ffmpeg_s = time.perf_counter() - start
        print(f"ffmpeg segment muxer:   {n} videos, {frames} source frames → {len(list(b.glob('*.mp4')))} clips in {ffmpeg_s:.2f} s = {frames / ffmpeg_s:.0f} frames/s")
        print(f"runner / ffmpeg time: {runner_s / ffmpeg_s:.2f}x")


if __name__ == "__main__":
    main()
