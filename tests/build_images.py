"""Build CI's images all at once, each exactly as the tests' fixtures build it (runner_env: the stand-in pins, this
machine's CA bundle). .ci/run starts this in the background ahead of the tests; a fixture's `runner build` of an
image still being built waits for it (runner's build lock) and then finds it built.

    python -m tests.build_images [IMAGE ...]     (default: the images the tests use)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.dockerfixtures import runner_env

IMAGES = ("caption", "musubi", "diffpipe")


def main(images: list[str]) -> int:
    started = time.monotonic()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="runner-ci-images-") as tmp:
        logs = {name: Path(tmp) / f"{name}.log" for name in images}
        builds = {name: subprocess.Popen(["runner", "build", name], env=runner_env(Path(tmp)), stdout=logs[name].open("w"),
                                         stderr=subprocess.STDOUT) for name in images}
        while builds:
            for name, proc in list(builds.items()):
                if proc.poll() is None:
                    continue
                out, took = logs[name].read_text(errors="replace"), time.monotonic() - started
                del builds[name]
                if proc.returncode:
                    failed += 1
                    print(f"{name}: the build failed (exit {proc.returncode}) after {took:.0f} s:\n{out[-3000:]}", flush=True)
                else:
                    print(f"{name}: {out.strip().splitlines()[-1]} ({took:.0f} s)", flush=True)
            time.sleep(1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(IMAGES)))
