"""One run of the captioner: a one-off container of the caption image, on this machine or a host, through the same
executor path as `runner sample` (runner.executors), and the captions placed next to the media as they come.

The folder is mounted read-only (a host gets a synced copy); the container writes each caption into runner's own staging
folder (/outputs) and prints a line per file; runner reads that caption (on the host: over SSH) and places it
(runner.caption.work.place), so the only writes into the user's folder are runner's own, made here. A caption staged but
not placed (runner killed) is placed at the next run; a file without a caption after a kill is captioned then.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rich.console import Console

from runner import config, mounts, preflight, shell
from runner.models import captioner as models
from runner.caption.work import Listing, Request, State, final_text, kind, listing, place, utc_stamp
from runner.errors import UserError
from runner.executors import Executor
from runner.executors.container import LABEL_JOB, ContainerSpec
from runner.gpu.captioning import estimate
from runner.images import builder
from runner.jobs import records
from runner.mounts import Mount

PROGRESS = "RUNNER-CAPTION "  # the captioner's line per file (images/caption/app/caption_media.py)
DATA = "/data/0-media"
STAGED = PurePosixPath("/outputs")
MODEL_ROOT = PurePosixPath("/models")
FRAME_PIXELS = 448 * 448  # per frame: 256 vision tokens per pair of frames
MAX_FRAMES = 96


@dataclass(frozen=True)
class ModelChoice:
    """--model: a preset (its folder under the target's models root) or a model folder on this machine."""

    preset: models.CaptionModel | None
    folder: Path | None = None

    @property
    def label(self) -> str:
        return self.preset.name if self.preset else str(self.folder)

    @property
    def quant(self) -> str | None:
        return self.preset.quant if self.preset else None


def choose_model(text: str) -> ModelChoice:
    if text.lower() in models.PRESETS:
        return ModelChoice(models.get(text))
    folder = Path(text).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UserError("--model", f"{folder} holds no config.json: it is not a model folder.",
                            f"give a folder that save_pretrained wrote, or a preset: {', '.join(models.PRESETS)}.")
        return ModelChoice(None, folder.resolve())
    return ModelChoice(models.get(text))


@dataclass
class Outcome:
    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # captions that were there (or appeared meanwhile) and stay
    backups: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # files the captioner could not read
    exit_code: int = 0
    seconds: list[float] = field(default_factory=list)


def model_mount(choice: ModelChoice, settings: config.Settings, executor: Executor) -> tuple[Mount, str]:
    """The models mount (read-only) and the model folder in the container."""
    if choice.preset is None:
        if not executor.here:
            raise UserError("--model", f"{choice.folder} is a folder on this machine; model files are not sent to hosts.",
                            f"use a preset ({', '.join(models.PRESETS)}) downloaded into the host's models folder.")
        return Mount("models", str(choice.folder), str(MODEL_ROOT), True), str(MODEL_ROOT)
    return Mount("models", str(settings.models), str(MODEL_ROOT), True), str(MODEL_ROOT / choice.preset.folder.as_posix())


def check_model(choice: ModelChoice, model: Mount, executor: Executor) -> None:
    """A preset's folder must be in the target's models folder (`runner download PRESET` puts it there)."""
    if choice.preset is None:
        return
    root_there = executor.host_mounts([model], "", "")[0].host
    wanted = f"{choice.preset.folder.as_posix()}/config.json"
    if shell.missing_files(executor.shell, root_there, [wanted]):
        executor.check_models(Path(model.host), {"--model": Path(model.host) / wanted})


def work_file(req: Request, todo: list[Path], model_dir: str, choice: ModelChoice, fps: float) -> dict:
    return {
        "model": model_dir, "quant": choice.quant, "fps": fps, "max_frames": MAX_FRAMES, "max_pixels": FRAME_PIXELS,
        "max_new_tokens": req.max_new_tokens, "prompt": req.prompt_for("{kind}"),
        "items": [{"name": m.name, "kind": kind(m), "src": f"{DATA}/{m.name}", "out": str(STAGED / m.name) + ".caption"} for m in todo],
    }


class Placer:
    """Places staged captions next to their media: the one writer into the user's folder."""

    def __init__(self, req: Request, state: State, executor: Executor, staged_host: str, console: Console, total: int):
        self.req, self.state, self.executor, self.staged, self.console = req, state, executor, staged_host, console
        self.stamp, self.total, self.outcome = utc_stamp(), total, Outcome()
        self.started = time.monotonic()

    def staged_names(self) -> list[str]:
        r = self.executor.shell.run(["find", self.staged, "-maxdepth", "1", "-type", "f", "-name", "*.caption"], timeout=60)
        return sorted(PurePosixPath(p).name.removesuffix(".caption") for p in r.stdout.split("\n") if p.strip()) if r.ok else []

    def place(self, name: str, seconds: float | None = None) -> None:
        staged = f"{self.staged}/{name}.caption"
        raw = self.executor.read_text(Path(staged))
        media = self.req.directory / name
        if raw is None or not media.exists():
            return
        how, backup = place(media, final_text(raw, self.req.trigger), self.req, self.stamp)
        self.executor.shell.run(["rm", "-f", "--", staged], timeout=30)
        (self.outcome.written if how == "written" else self.outcome.kept).append(name)
        if backup:
            self.outcome.backups.append(backup.name)
        if how == "written" and self.req.overwrite:
            self.state.add_replaced(name)
        if seconds is not None:
            self.outcome.seconds.append(seconds)
        self.report(name, how, seconds)

    def report(self, name: str, how: str, seconds: float | None) -> None:
        done = len(self.outcome.written) + len(self.outcome.kept)
        left = self.total - done
        rate = (time.monotonic() - self.started) / max(1, len(self.outcome.seconds)) if self.outcome.seconds else None
        eta = f", ETA {left * rate:.0f} s" if rate is not None and left > 0 else ""
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        what = "caption written" if how == "written" else "a caption appeared meanwhile: kept, runner's dropped"
        self.console.print(f"[{done}/{self.total}] {name}: {what}{took}{eta}", markup=False, highlight=False)


def start(req: Request, choice: ModelChoice, fps: float, executor: Executor, settings: config.Settings, console: Console) -> tuple[Outcome, Listing]:
    """Caption every file of req.directory that needs one (refusing bad inputs before anything is written)."""
    state = State(executor.host, req.directory)
    with state.held():
        return captioned(req, choice, fps, executor, settings, console, state)


def captioned(req: Request, choice: ModelChoice, fps: float, executor: Executor, settings: config.Settings, console: Console,
              state: State) -> tuple[Outcome, Listing]:
    job_name = f"caption-{state.key}"
    found = listing(req, state.replaced() if req.overwrite else set())
    model, model_dir = model_mount(choice, settings, executor)
    if not found.todo:  # nothing to caption: neither Docker nor the host is asked anything
        finish(req, state, Outcome())
        return Outcome(), found
    gpus = records.gpus_wanted()
    if gpus:
        executor.check_gpus()
    pins = builder.load_pins("caption", pins_file=settings.pins)
    ref = builder.image_ref(pins, settings.ca_bundle)
    check_model(choice, model, executor)
    executor.check_image(ref, "caption")
    rid = records.new_id(job_name)
    name = f"runner-{rid}"
    job_dir = state.folder / "jobs" / rid
    local = [model, Mount("data/0", str(req.directory.resolve()), DATA, True), Mount("outputs", str(state.folder / "staged"), str(STAGED), False),
             Mount("job", str(job_dir), str(mounts.JOB), True)]
    spec = ContainerSpec(image=ref, name=name, command=["python", "/opt/captioner/caption_media.py", f"{mounts.JOB}/work.json"],
                         mounts=executor.host_mounts(local, job_name, name), env=config.network_env(settings), user=executor.user,
                         workdir="/opt/captioner", gpus=gpus, shm_size=settings.shm_size, labels={LABEL_JOB: job_name})
    staged_host = str(mounts.to_host(STAGED, spec.mounts))
    placer = Placer(req, state, executor, staged_host, console, len(found.todo))
    preflight.make_dirs(executor.shell, [staged_host])
    for leftover in placer.staged_names():  # staged by a run that was stopped before runner placed them
        if leftover in {m.name for m in found.todo}:
            placer.place(leftover)
    todo = [m for m in found.todo if m.name not in placer.outcome.written + placer.outcome.kept]
    if not todo:
        finish(req, state, placer.outcome)
        return placer.outcome, found
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "work.json").write_text(json.dumps(work_file(req, todo, model_dir, choice, fps), indent=1))
    console.print(f"captioning {len(todo)} of {len(found.todo) + len(found.kept)} file(s) in {req.directory} with {choice.label} "
                  f"({'GPU' if gpus else 'CPU'}, on {executor.host})", markup=False, highlight=False)
    if choice.preset and gpus:
        frames = MAX_FRAMES if any(kind(m) == "video" for m in todo) else 1
        console.print(f"GPU memory, at most: {estimate(choice.preset, frames, FRAME_PIXELS, req.max_new_tokens).describe()}", markup=False, highlight=False)
    executor.prepare_mounts(spec, sources=local)
    executor.start(spec)
    try:
        with (job_dir / "caption.log").open("w") as log:
            for text in executor.logs(name, follow=True):
                log.write(text + "\n")
                if text.startswith(PROGRESS):
                    done = json.loads(text[len(PROGRESS):])
                    placer.place(done["name"], done.get("seconds"))
                elif "captioner: " in text or "Error" in text:
                    console.print(text, markup=False, highlight=False)
        placer.outcome.exit_code = executor.wait(name)
    finally:
        executor.remove(name)
    for leftover in placer.staged_names():  # lines the log lost
        placer.place(leftover)
    placer.outcome.failed = [m.name for m in todo if m.name not in placer.outcome.written + placer.outcome.kept]
    if placer.outcome.exit_code:
        console.print(f"runner: the captioner exited with {placer.outcome.exit_code}; its log: {job_dir / 'caption.log'}", style="bold red", highlight=False)
    finish(req, state, placer.outcome)
    return placer.outcome, found


def finish(req: Request, state: State, outcome: Outcome) -> None:
    if req.overwrite and not outcome.failed and outcome.exit_code == 0:
        state.pass_finished()
