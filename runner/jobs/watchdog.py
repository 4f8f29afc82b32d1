"""Following a run: where training stands (step of total, smoothed loss, s/step, ETA) and the watchdogs that stop a
run which learns nothing (NaN or Inf loss), is out of GPU memory and hangs, or prints nothing any more.

The watchdogs act while runner follows the job (`runner train`, `runner logs -f`); a job started with `-d` that
nobody follows is checked again when someone follows it. A watchdog stops the container (SIGTERM to the trainer,
SIGKILL 30 s later): what the trainer saved before stays where it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner import mounts
from runner.job.render import PLAN_JSON
from runner.jobs import logwatch
from runner.spec import Watchdog

NAN, HANG, OOM = "nan", "hang", "oom"
STOPPED_EXIT_CODE = 3  # `runner train` / `logs -f` when the NaN or hang watchdog stopped the run
OOM_GRACE_S = 15  # musubi exits at once after an out-of-memory; diffusion-pipe may hang on, holding the GPU
LOSS_SMOOTHING = 0.1  # weight of a new step in diffusion-pipe's smoothed loss (musubi prints its own running average)


# --- how many steps: musubi's progress line says it; diffusion-pipe's does not ------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The training step's optimizer steps as runner works them out before the run (plan.json's facts)."""

    total: int | None
    per_epoch: int | None
    epochs: int
    max_steps: int | None = None
    estimated: bool = False  # diffusion-pipe's before its first epoch ends: its buckets round each down to whole batches

    def total_for(self, per_epoch: int) -> int:
        """diffusion-pipe stops at `epochs` or `max_steps`, whichever comes first."""
        return min(per_epoch * self.epochs, self.max_steps or per_epoch * self.epochs)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict | None) -> "Schedule | None":
        return cls(**d) if d else None


def schedule_of(resolved) -> Schedule:
    """diffusion-pipe (utils/dataset.py): each media file counts once per resolution and repeat; an epoch is that
    count over the global batch (micro batch × gradient accumulation × GPUs), rounded down per size bucket, so it is
    exact only when every clip lands in one bucket. musubi prints its total with its progress bar."""
    from runner.trainers import diffpipe

    job = resolved.job
    sch = job.schedule
    if job.trainer.value != "diffpipe":
        return Schedule(None, None, sch.epochs)
    examples = sum(len(f.media or []) * d.repeats * len(d.resolutions) for f, d in zip(resolved.folders, job.datasets))
    per_epoch = max(1, examples // (sch.batch_size * sch.gradient_accumulation_steps * job.replicas))
    s = Schedule(None, per_epoch, diffpipe.epochs(job), sch.max_steps, estimated=True)
    return dataclasses.replace(s, total=s.total_for(per_epoch))


# --- where training stands -----------------------------------------------------------------------------------------


@dataclass
class Standing:
    """The training step's progress as the trainer's lines tell it."""

    trainer: str
    schedule: Schedule | None = None
    step: int = 0
    total: int | None = None
    estimated: bool = False
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None  # smoothed
    seconds_per_step: float | None = None

    def __post_init__(self):
        if self.schedule:
            self.total, self.estimated, self.epochs = self.schedule.total, self.schedule.estimated, self.schedule.epochs

    def feed(self, line: logwatch.Line) -> bool:
        """Take a line in; True when it is a new optimizer step."""
        if line.epoch is not None:
            self._epoch(line)
        new = False
        if line.train_step is not None:  # diffusion-pipe, which says when epoch 2 on starts
            new, self.step, self.epoch = line.train_step > self.step, line.train_step, self.epoch or 1
            if line.loss is not None:
                self.loss = line.loss if self.loss is None or not math.isfinite(self.loss) else \
                    (1 - LOSS_SMOOTHING) * self.loss + LOSS_SMOOTHING * line.loss
        elif line.progress and self.trainer == "musubi":
            if line.bar != logwatch.MUSUBI_TRAIN_BAR:  # loading the DiT, sampling: bars of their own in the train step
                return False
            new, (self.step, self.total), self.estimated = line.progress[0] > self.step, line.progress, False
            self.loss = line.loss if line.loss is not None else self.loss
            if self.step < 2:  # tqdm's rate after its first step is the time since the bar was drawn, not a step's
                return new
        if line.seconds_per_step is not None:
            s = line.seconds_per_step
            self.seconds_per_step = s if self.seconds_per_step is None or self.trainer == "musubi" else 0.8 * self.seconds_per_step + 0.2 * s
        return new

    def _epoch(self, line: logwatch.Line) -> None:
        self.epoch = line.epoch
        self.epochs = line.epochs or self.epochs
        if self.trainer == "diffpipe" and self.schedule and line.epoch > 1 and line.train_step is None and self.step:
            # diffusion-pipe starts epoch N after N-1 whole epochs: the steps of one are known from here on
            self.total, self.estimated = self.schedule.total_for(self.step // (line.epoch - 1)), False

    @property
    def eta_s(self) -> float | None:
        if self.total is None or self.seconds_per_step is None:
            return None
        return max(0, self.total - self.step) * self.seconds_per_step

    @property
    def where(self) -> str:
        """'step 40/160', 'step 40/≈160' where the total is estimated, 'step 40' without one."""
        return f"step {self.step}/{'≈' if self.estimated else ''}{self.total}" if self.total else f"step {self.step}"

    def summary(self) -> str:
        """'step 40/160 · epoch 3/16 · loss 0.1234 · 2.99 s/step · ETA 0:05:58' (≈ where the total is estimated)."""
        approx = "≈" if self.estimated else ""
        parts = [self.where]
        if self.epoch:
            parts.append(f"epoch {self.epoch}/{self.epochs}" if self.epochs else f"epoch {self.epoch}")
        parts.append(f"loss {self.loss:.4g}" if self.loss is not None else "loss ?")
        parts.append(f"{self.seconds_per_step:.2f} s/step" if self.seconds_per_step is not None else "? s/step")
        eta = self.eta_s
        parts.append(f"ETA {approx}{clock(eta)}" if eta is not None else "ETA ?")
        return " · ".join(parts)


def clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


# --- the watchdogs -------------------------------------------------------------------------------------------------


@dataclass
class Stop:
    """Why a watchdog stopped the run: `kind` for the record, `summary` for `runner ps`, `report` for the terminal."""

    kind: str
    summary: str
    report: str


class NanWatch:
    """Counts optimizer steps in a row whose loss is NaN or Inf; remembers the last save before the streak."""

    def __init__(self, steps: int | None, trainer: str, output_dir: str, job_name: str):
        self.limit, self.trainer, self.output_dir, self.job_name = steps, trainer, output_dir, job_name
        self.streak, self.first_bad = 0, None
        self.saves: list[tuple[int, str]] = []  # (steps done, save as the trainer names it)

    def feed(self, line: logwatch.Line, standing: Standing, new_step: bool) -> Stop | None:
        if line.saved:
            self.saves.append((standing.step, line.saved))
        if not new_step or standing.step == 0:
            return None
        if line.loss is not None and not math.isfinite(line.loss):
            self.streak += 1
            self.first_bad = self.first_bad or standing.step
        else:
            self.streak, self.first_bad = 0, None
        if self.limit is None or self.streak < self.limit:
            return None
        return Stop(NAN, f"watchdog nan: loss NaN/Inf for {self.streak} steps in a row (steps {self.first_bad}-{standing.step})",
                    self.report(standing.step))

    def report(self, step: int) -> str:
        what = "running average of the loss" if self.trainer == "musubi" else "loss"
        good = [name for at, name in self.saves if at < self.first_bad]
        kept = (f"The last save before the NaN, {self._host_path(good[-1])}, is good; every save is kept, nothing was deleted."
                if good else "No LoRA was saved before the NaN; nothing was deleted.")
        return (f"The {what} was NaN or Inf for {self.streak} optimizer steps in a row (steps {self.first_bad} to {step}), so runner "
                f"stopped the run (watchdog.nan_steps: {self.limit}): it learns nothing from there on. {kept} Likely causes: "
                "a learning rate too high for the optimizer (try optimizer.lr a third to a tenth of what it is); "
                "memory.dtype float16 (fp16 overflows: use bfloat16, and a DiT file of that dtype); "
                "memory.transformer_dtype float8 (fp8 base weights are coarse: with it, lower the lr or train in bfloat16); "
                "a bad clip or caption in the data (a black or corrupt video, an empty caption: `runner dataset check`).")

    def _host_path(self, name: str) -> str:
        """musubi names the file inside the container, diffusion-pipe the folder inside its run folder."""
        inside = mounts.OUTPUTS / self.job_name
        path = PurePosixPath(name)
        if path.is_relative_to(inside):
            return f"{self.output_dir}/{path.relative_to(inside)}"
        return f"{name}/ in the newest run folder under {self.output_dir}"


class Silence:
    """The hang watchdog: calls `on_silence` once when `feed` has not been called for `minutes`."""

    def __init__(self, minutes: float | None, on_silence):
        self.seconds, self.on_silence = (minutes * 60 if minutes else None), on_silence
        self.last = time.monotonic()
        self.fired = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "Silence":
        if self.seconds:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def feed(self) -> None:
        self.last = time.monotonic()

    def _watch(self) -> None:
        while not self._done.wait(min(1.0, self.seconds / 10)):
            if time.monotonic() - self.last >= self.seconds:
                self.fired.set()
                self.on_silence()
                return


def hang_stop(minutes: float, standing: Standing, phase: str) -> Stop:
    where = f"at {standing.where}" if standing.step else f"in {phase}"
    return Stop(HANG, f"watchdog hang: no output for {minutes:g} min {where}",
                f"The trainer printed nothing for {minutes:g} minutes {where}, so runner stopped it as hung (watchdog.hang_minutes: "
                f"{minutes:g}). A trainer hangs after an error in another process (a DataLoader worker, NCCL between GPUs, "
                "a CUDA out of memory in a caching process) and keeps its GPU memory: the log above shows the last it did. "
                "If that step is only slow (loading a 14B model, block swap at many frames), raise watchdog.hang_minutes.")


class StopUnlessExited:
    """The OOM watchdog: stops a container that has not exited `seconds` after start() (a trainer hung after CUDA
    out of memory)."""

    def __init__(self, executor, container: str, seconds: float = OOM_GRACE_S, before=lambda: None):
        self.fired, self.before = threading.Event(), before  # before: called first (the record says why it stops)
        self.timer = threading.Timer(seconds, self._stop, args=(executor, container))
        self.timer.daemon = True  # an interrupted `runner train` leaves the job to `runner logs -f` / `runner stop`

    def _stop(self, executor, container: str) -> None:
        self.fired.set()
        self.before()
        with contextlib.suppress(Exception):  # the engine gone too: following the job says so
            executor.stop(container)

    def start(self) -> bool:
        """Start the countdown; False when it already runs."""
        if self.timer.ident is not None:
            return False
        self.timer.start()
        return True

    def end(self) -> bool:
        """Cancel if pending, wait for a stop under way; whether the container was stopped."""
        self.timer.cancel()
        if self.timer.is_alive():
            self.timer.join()
        return self.fired.is_set()


def settings_of(plan_file: Path) -> tuple[Watchdog, Schedule | None]:
    """The watchdog settings and the schedule the job was started with (its plan.json); defaults for a job whose
    plan.json has none (started by an older runner)."""
    try:
        plan = json.loads(plan_file.read_text())
    except (OSError, ValueError):
        plan = {}
    return Watchdog.model_validate(plan.get("settings", {}).get("watchdog", {})), Schedule.from_json(plan.get("facts", {}).get("schedule"))


class LogReader:
    """A trainer's log read as runner follows it, without acting on it: the phase and out-of-memory reader, the
    standing and the NaN watchdog's verdict (Guard acts on them; bench/watchdog_replay.py reads a recorded log)."""

    def __init__(self, trainer: str, schedule: "Schedule | None", nan_steps: int, output_dir: str, name: str):
        self.watch = logwatch.Watch(trainer)
        self.standing = Standing(trainer, schedule)
        self.nans = NanWatch(nan_steps, trainer, output_dir, name)

    def feed(self, text: str) -> Iterator[tuple[logwatch.Line, bool, bool, "Stop | None"]]:
        """Per line part (tqdm redraws with carriage returns): the line, whether it is the training step's, whether it
        began a new step, and the NaN watchdog's stop."""
        for part in filter(str.strip, text.split("\r")):
            line = self.watch.feed(part)
            training, new_step, nan = self.watch.step in (None, logwatch.TRAIN), False, None
            if training:
                new_step = self.standing.feed(line)
                nan = self.nans.feed(line, self.standing, new_step)
            yield line, training, new_step, nan


class Guard:
    """The watchdogs and the standing of one followed job, fed its log line by line (runner.jobs.launch.follow)."""

    def __init__(self, record, executor, console):
        self.record, self.executor, self.console = record, executor, console
        self.settings, schedule = settings_of(record.job_dir / PLAN_JSON)
        self.reader = LogReader(record.trainer, schedule, self.settings.nan_steps, record.output_dir, record.name)
        self.watch, self.standing = self.reader.watch, self.reader.standing
        self.oom_stop = StopUnlessExited(executor, record.container, before=lambda: self._mark(OOM, ""))
        self.silence = Silence(self.settings.hang_minutes, self._hung)
        self.stop: Stop | None = None
        self._lock = threading.Lock()
        self._warned = False

    def __enter__(self) -> "Guard":
        self.silence.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.silence.__exit__(*exc)

    def feed(self, text: str, shown) -> None:
        """One log line: the display (`shown`, runner.progress.Following) follows it, the watchdogs read it."""
        self.silence.feed()
        for line, training, new_step, nan in self.reader.feed(text):
            if line.marker:
                shown.step(line.marker)
            elif line.progress:
                shown.count(*line.progress)
            s = self.standing
            if training and (new_step or line.epoch) and s.step:  # off a terminal: the first step, each epoch, every 30 s
                shown.standing(s.summary(), time.monotonic(), force=s.step == 1 or bool(line.epoch))
            if nan:
                self._stop(nan)
            if line.nan and not self._warned:
                shown.print(f"runner: {logwatch.nan_hint(self.record.id, self.settings.nan_steps)}", style="bold yellow")
                self._warned = True
        if self.watch.oom and self.settings.oom and self.oom_stop.start():
            shown.print(f"runner: {self.watch.oom.summary()}; the trainer has {OOM_GRACE_S} s to exit before runner stops its container",
                        style="bold yellow")

    def _hung(self) -> None:
        self._stop(hang_stop(self.settings.hang_minutes, self.standing, self.watch.phase()))

    def _stop(self, reason: Stop) -> None:
        with self._lock:
            if self.stop is not None or not self._mark(reason.kind, reason.summary):
                return
            self.stop = reason
        self.console.print(f"runner: {reason.summary}: stopping the run", style="bold red", highlight=False)
        with contextlib.suppress(Exception):  # the engine gone too: following the job says so
            self.executor.stop(self.record.container)

    def _mark(self, kind: str, summary: str) -> bool:
        """Say in the record which watchdog stops the run, before it does (whoever records the run's end reads it);
        False when the run has ended already."""
        with self.record.deciding() as saved:
            if saved.ended:
                return False
            saved.stopped_by = kind
            saved.failure = summary or saved.failure
            saved.save()
        return True
