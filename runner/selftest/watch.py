"""What a selftest reads off a running job: its log lines as they come, the GPU memory in use (nvidia-smi on the
job's host, sampled while it runs), and from those the seconds per training step."""

from __future__ import annotations

import re
import threading

from runner.jobs import logwatch

SMI = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
RATE = re.compile(r"(\d+(?:\.\d+)?)(s/it|it/s)")
ITER = re.compile(r"steps: (\d+) .*iter time \(s\): (\d+(?:\.\d+)?)")  # DeepSpeed's line in diffusion-pipe



class Watched:
    """An executor whose followed log is also kept here (launch.follow streams it as usual); the plan step that
    runs (cache-latents, cache-text-encoder, train) is passed on to `on_step`."""

    def __init__(self, executor, on_step=lambda name: None):
        self._executor = executor
        self.on_step = on_step
        self.lines: list[str] = []

    def __getattr__(self, name):
        return getattr(self._executor, name)

    def logs(self, container: str, follow: bool = True):
        for line in self._executor.logs(container, follow=follow):
            if follow:
                self.lines.extend(line.split("\r"))  # tqdm redraws with carriage returns
                if (step := _started_step(line)) is not None:
                    self.on_step(step)
            yield line


def _started_step(line: str) -> str | None:
    """The plan step a `[runner] step i/n NAME start: …` marker starts."""
    seen = logwatch.classify(line)
    return seen.step if seen.marker and seen.marker.endswith(" start") else None


def gpu_used_mib(shell) -> list[int] | None:
    r = shell.run(SMI, timeout=20)
    if not r.ok:
        return None
    try:
        return [int(x) for x in r.stdout.split()]
    except ValueError:
        return None


class GpuPeak:
    """Peak GPU memory in use beyond what was in use when it started, per plan step, sampled every `every` seconds."""

    def __init__(self, shell, every: float = 1.0):
        self.shell, self.every = shell, every
        self.baseline = gpu_used_mib(shell)
        self.step = "start"
        self.peak_mib: dict[str, int] = {}
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
            self.sample()

    def sample(self) -> None:
        used = gpu_used_mib(self.shell)
        if used and self.baseline and len(used) == len(self.baseline):
            step = self.step
            self.peak_mib[step] = max(self.peak_mib.get(step, 0), *(u - b for u, b in zip(used, self.baseline)))

    def set_step(self, name: str) -> None:
        self.step = name

    def peaks_gib(self) -> dict[str, float]:
        return {step: mib / 1024 for step, mib in self.peak_mib.items()}


def training_lines(lines: list[str]) -> list[str]:
    """The lines of the last step the plan runs (training; caching steps come before it)."""
    starts = [i for i, line in enumerate(lines) if _started_step(line) is not None]
    return lines[starts[-1] + 1:] if starts else lines


def seconds_per_step(lines: list[str]) -> tuple[float | None, int | None]:
    """(s/step, steps done) of the training step: the mean of DeepSpeed's iter times after the first step
    (diffusion-pipe), else the rate of the trainer's last tqdm progress line (musubi)."""
    lines = training_lines(lines)
    iters = [(int(m.group(1)), float(m.group(2))) for m in map(ITER.search, lines) if m]
    if iters:
        timed = [t for _, t in iters[1:]] or [iters[0][1]]
        return sum(timed) / len(timed), iters[-1][0]
    last = next((line for line in reversed(lines) if logwatch.classify(line).progress and RATE.search(line)), None)
    if last is None:
        return None, None
    value, unit = RATE.findall(last)[-1]
    rate = float(value)
    return (rate if unit == "s/it" else (1 / rate if rate else None)), logwatch.classify(last).progress[0]
