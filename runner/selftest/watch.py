"""What a selftest reads off a running job: its log lines as they come, the GPU memory in use (nvidia-smi on the
job's host, sampled while it runs), and from those the seconds per training step."""

from __future__ import annotations

import re
import threading
import time

from runner.launch import MARK

SMI = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
RATE = re.compile(r"(\d+(?:\.\d+)?)(s/it|it/s)")
PROGRESS = re.compile(r"(\d+)/(\d+) \[")
ITER = re.compile(r"steps: (\d+) .*iter time \(s\): (\d+(?:\.\d+)?)")  # DeepSpeed's line in diffusion-pipe


class Watched:
    """An executor whose followed log is also kept here (launch.follow streams it as usual)."""

    def __init__(self, executor):
        self._executor = executor
        self.lines: list[str] = []

    def __getattr__(self, name):
        return getattr(self._executor, name)

    def logs(self, container: str, follow: bool = True):
        for line in self._executor.logs(container, follow=follow):
            if follow:
                self.lines.extend(line.split("\r"))  # tqdm redraws with carriage returns
            yield line


def gpu_used_mib(shell) -> list[int] | None:
    r = shell.run(SMI, timeout=20)
    if not r.ok:
        return None
    try:
        return [int(x) for x in r.stdout.split()]
    except ValueError:
        return None


class GpuPeak:
    """Peak GPU memory used beyond what was in use when it started, sampled every `every` seconds."""

    def __init__(self, shell, every: float = 1.0):
        self.shell, self.every = shell, every
        self.baseline = gpu_used_mib(shell)
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "GpuPeak":
        if self.baseline is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            used = gpu_used_mib(self.shell)
            if used and len(used) == len(self.baseline):
                self.peak_mib = max(self.peak_mib, *(u - b for u, b in zip(used, self.baseline)))

    @property
    def peak_gib(self) -> float | None:
        return None if self.baseline is None else self.peak_mib / 1024


def training_lines(lines: list[str]) -> list[str]:
    """The lines of the last step the plan runs (training; caching steps come before it)."""
    starts = [i for i, line in enumerate(lines) if line.startswith(MARK) and " start: " in line]
    return lines[starts[-1] + 1:] if starts else lines


def seconds_per_step(lines: list[str]) -> tuple[float | None, int | None]:
    """(s/step, steps done) of the training step: the mean of DeepSpeed's iter times after the first step
    (diffusion-pipe), else the rate of the trainer's last tqdm progress line (musubi)."""
    lines = training_lines(lines)
    iters = [(int(m.group(1)), float(m.group(2))) for m in map(ITER.search, lines) if m]
    if iters:
        timed = [t for _, t in iters[1:]] or [iters[0][1]]
        return sum(timed) / len(timed), iters[-1][0]
    last = next((line for line in reversed(lines) if PROGRESS.search(line) and RATE.search(line)), None)
    if last is None:
        return None, None
    value, unit = RATE.findall(last)[-1]
    rate = float(value)
    return (rate if unit == "s/it" else (1 / rate if rate else None)), int(PROGRESS.search(last).group(1))
