"""`runner dataset check`: what each trainer will do with every file of a dataset folder, before it does it.

The rules are the trainers' own, read at the pins in UPSTREAM.md (never their code):

diffusion-pipe (utils/dataset.py, models/wan): lists the folder (not sub-folders); reads `<stem>.txt` whatever
caption extension is configured and skips media without one; resamples every video to the model's frame rate
(16 fps; TI2V-5B 24: WanPipeline.framerate) by counting, frames = int(source_frames * fps / source_fps); puts it in the largest frame bucket <= that count, never in bucket 1
(that one is for images), and skips it when no bucket fits; trains on the first `bucket` frames
(video_clip_mode single_beginning).

musubi-tuner (dataset/image_video_dataset.py, media_utils.py): globs fixed extension lists; images without a
caption are filtered out silently, videos without one stop caching with an error; drops frames to 16 fps only
when `source_fps` is set (otherwise every frame is used as if it were 16 fps); rounds target_frames down to 4k+1;
with frame_extraction "head" takes one clip of each target length that fits from the start of the video; keys
its caches by file stem, so equal stems in one cache directory overwrite each other.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Literal

from pydantic import BaseModel

from runner.errors import UserError
from runner.data.media import (
    DIFFPIPE_VIDEO_EXTENSIONS,
    MUSUBI_IMAGE_EXTENSIONS,
    MUSUBI_VIDEO_EXTENSIONS,
    Probe,
    entry_problem,
    folder_problem,
    media_files,
    probe,
)
from runner.spec import DEFAULT_VIDEO_FRAMES, Dataset, Task, Trainer, round_4k1

WAN_FPS = 16  # musubi's Wan datasets (it trains no 24 fps Wan model at its pin)

Level = Literal["ok", "warn", "drop", "error"]
_RANK = {"ok": 0, "warn": 1, "drop": 2, "error": 3}
CaptionState = Literal["ok", "empty", "missing", "unreadable"]


def diffpipe_frames(source_frames: int, source_fps: float, fps: int = WAN_FPS) -> int:
    return int(source_frames * fps / source_fps)


def diffpipe_bucket(frames_at_16: int, buckets: Iterable[int]) -> int | None:
    """The frame bucket diffusion-pipe assigns a video to, or None when it skips it."""
    fitting = [b for b in set(buckets) | {1} if b <= frames_at_16]
    best = max(fitting, default=None)
    return None if best is None or best == 1 else best


def musubi_frames(source_frames: int, source_fps: float | None) -> int:
    """Frames musubi keeps: all of them without `source_fps`, else its own frame-dropping walk to 16 fps."""
    if not source_fps:
        return source_frames
    # The same float accumulation musubi does, so rounding matches frame for frame.
    step, position, previous, kept = WAN_FPS / source_fps, 0.0, -1, 0
    for _ in range(source_frames):
        index = int(position)
        position += step
        if index != previous:
            kept += 1
            previous = index
    return kept


class Settings(BaseModel):
    """The dataset settings that decide what the trainers do with each file."""

    frames: list[int] = DEFAULT_VIDEO_FRAMES
    source_fps: float | None = None
    caption_extension: str = ".txt"
    task: Task = Task.t2v_14b
    trainers: list[Trainer] = [Trainer.diffpipe, Trainer.musubi]

    @classmethod
    def of(cls, dataset: Dataset, task: Task, trainers: list[Trainer]) -> "Settings":
        frames = [f for f in (dataset.frames or DEFAULT_VIDEO_FRAMES) if f > 1] or DEFAULT_VIDEO_FRAMES
        return cls(
            frames=frames,
            source_fps=dataset.source_fps,
            caption_extension=dataset.caption_extension,
            task=task,
            trainers=trainers,
        )


class Verdict(BaseModel):
    level: Level
    text: str
    fix: str | None = None  # where the generic fix for its kind of problem (_fix_for) does not fit


class FileReport(BaseModel):
    name: str
    kind: str
    width: int
    height: int
    frames: int
    fps: float
    frames_from: str
    error: str | None
    captions: dict[str, CaptionState]
    verdicts: dict[str, Verdict]

    @property
    def level(self) -> Level:
        return max((v.level for v in self.verdicts.values()), key=_RANK.__getitem__, default="ok")


class Problem(BaseModel):
    level: Level
    trainer: str | None
    text: str
    fix: str = "run `runner dataset check` on the folder for the whole picture"


class CheckReport(BaseModel):
    directory: str
    settings: Settings
    files: list[FileReport]
    ignored: list[str]
    problems: list[Problem]

    @property
    def failed(self) -> bool:
        """True when anything would fail or silently drop out of training."""
        return any(_RANK[f.level] >= _RANK["drop"] for f in self.files) or any(
            _RANK[p.level] >= _RANK["drop"] for p in self.problems
        )

    def caption_coverage(self) -> dict:
        """How many media files have a caption every checked trainer reads (readable, not empty), and which lack one."""
        lacking = [f.name for f in self.files if any(state != "ok" for state in f.captions.values())]
        return {"captioned": len(self.files) - len(lacking), "of": len(self.files), "without": lacking}

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for trainer in self.settings.trainers:
            tally = {level: 0 for level in _RANK}
            for f in self.files:
                tally[f.verdicts[trainer.value].level] += 1
            out[trainer.value] = tally
        return out


# The text encoder keeps 512 tokens (a few KB); a caption file far larger is some other file.
MAX_CAPTION_BYTES = 2**20


@dataclass(frozen=True)
class Caption:
    state: CaptionState
    problem: str | None = None  # why an "unreadable" caption cannot be read, with the byte where it applies


def read_caption(path: Path) -> Caption:
    """A caption as the trainers read it: whole, as UTF-8 (musubi opens it with encoding="utf-8"; diffusion-pipe
    with Python's default, UTF-8 in the images). Nothing that is no regular file is opened (a FIFO blocks)."""
    if not os.path.lexists(path):
        return Caption("missing")
    problem = entry_problem(path, path.parent)
    if problem:
        return Caption("unreadable", problem)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CAPTION_BYTES + 1)
    except OSError as e:
        return Caption("unreadable", f"cannot be read ({e.strerror})")
    if len(raw) > MAX_CAPTION_BYTES:
        return Caption("unreadable", f"is over {MAX_CAPTION_BYTES // 2**20} MiB, far more than the 512 tokens the text encoder reads: not a caption")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Caption("unreadable", f"is not UTF-8: byte {e.start} is 0x{raw[e.start]:02x}")
    return Caption("ok" if text.strip() else "empty")


def _fps(value: float) -> str:
    return f"{value:g}" if abs(value - round(value)) < 1e-6 else f"{value:.3f}"


def _diffpipe(path: Path, p: Probe, caption: Caption, s: Settings) -> Verdict:
    if path.suffix not in DIFFPIPE_VIDEO_EXTENSIONS and p.kind == "video":
        return Verdict(level="drop", text=f"'{path.suffix}' is not a video extension to diffpipe (case matters): opened as an image, fails, skipped")
    if not p.ok:
        return Verdict(level="drop", text=f"cannot be opened ({p.error}): skipped with a warning", fix=_media_fix(p))
    if caption.state == "missing":
        return Verdict(level="drop", text=f"no caption {path.stem}.txt (diffpipe always reads .txt): skipped")
    if caption.state == "unreadable":
        return _unreadable_caption(path.stem + ".txt", caption)
    if p.kind == "image":
        if s.task.is_i2v:
            return Verdict(level="error", text="an image in an I2V dataset: diffpipe stops ('i2v/flf2v must train on videos')")
        return _with_caption(Verdict(level="ok", text="image → bucket 1"), caption)
    fps = s.task.fps
    n16 = diffpipe_frames(p.frames, p.fps, fps)
    head = f"{p.frames} frames at {_fps(p.fps)} fps = {n16} frames at {fps} fps"
    if p.fps == fps:
        head = f"{p.frames} frames at {fps} fps"
    if n16 <= 1:
        return Verdict(level="drop", text=f"{head}: diffpipe takes it for an image, not a video")
    bucket = diffpipe_bucket(n16, s.frames)
    if bucket is None:
        smallest = min((b for b in s.frames if b > 1), default=None)
        if smallest is None:
            return Verdict(level="drop", text=f"{head} → dropped: frames {s.frames} has no video bucket (1 is for images)")
        return Verdict(level="drop", text=f"{head} → dropped: shorter than the smallest bucket {smallest}")
    buckets = sorted(set(s.frames))
    text = f"{head} → bucket {bucket}" + (f" (of {'/'.join(map(str, buckets))})" if len(buckets) > 1 else "")
    if bucket != p.frames:
        text += f", not {p.frames}"
    return _with_caption(Verdict(level="ok", text=text), caption)


def _musubi(path: Path, p: Probe, caption: Caption, s: Settings) -> Verdict:
    accepted = MUSUBI_VIDEO_EXTENSIONS if p.kind == "video" else MUSUBI_IMAGE_EXTENSIONS
    if path.suffix not in accepted:
        return Verdict(level="drop", text=f"musubi does not read '{path.suffix}' files: ignored")
    if not p.ok:
        return Verdict(level="error", text=f"cannot be decoded ({p.error}): latent caching stops on it", fix=_media_fix(p))
    if caption.state == "unreadable":
        return _unreadable_caption(path.stem + s.caption_extension, caption)
    if caption.state == "missing":
        if p.kind == "image":
            return Verdict(level="drop", text=f"no caption {path.stem}{s.caption_extension}: left out silently")
        return Verdict(level="error", text=f"no caption {path.stem}{s.caption_extension}: caching stops (file not found)")
    if p.kind == "image":
        if s.task.is_i2v:
            return Verdict(level="warn", text="a still image in an I2V dataset: nothing to animate from")
        return _with_caption(Verdict(level="ok", text="image"), caption)
    targets = sorted({round_4k1(f) for f in s.frames})
    kept = musubi_frames(p.frames, s.source_fps)
    if s.source_fps:
        head = f"{p.frames} frames, source_fps {_fps(s.source_fps)} → {kept} at {WAN_FPS} fps"
    else:
        head = f"{p.frames} frames used as they are (no source_fps)"
    clips = [t for t in targets if t <= kept]
    if not clips:
        return Verdict(level="drop", text=f"{head} → dropped: shorter than the smallest target {targets[0]}")
    verdict = Verdict(level="ok", text=f"{head} → clip{'s' if len(clips) > 1 else ''} {'/'.join(map(str, clips))} from the start")
    if not s.source_fps and abs(p.fps - WAN_FPS) > 0.5:
        verdict = Verdict(
            level="warn",
            text=f"{verdict.text}; {_fps(p.fps)} fps played at {WAN_FPS}: motion {p.fps / WAN_FPS:.2g}× slower (set source_fps: {_fps(p.fps)})",
        )
    elif s.source_fps and abs(p.fps - s.source_fps) > 0.5:
        verdict = Verdict(level="warn", text=f"{verdict.text}; the file is {_fps(p.fps)} fps, not source_fps {_fps(s.source_fps)}")
    return _with_caption(verdict, caption)


def _media_fix(p: Probe) -> str | None:
    if (p.error or "").startswith("is cut short"):
        return "copy the file again from its source (this copy ends early), or remove it"
    if (p.error or "").startswith("is a"):
        return "put the file itself in the dataset folder (not a link out of it, a FIFO or a device), or remove the entry"
    return None


def _unreadable_caption(name: str, caption: Caption) -> Verdict:
    fix = ("save it as UTF-8 text (e.g. `iconv -f latin1 -t utf-8`)" if "UTF-8" in (caption.problem or "")
           else f"make {name} a regular text file in the folder (not a link out of it, a FIFO or a folder)")
    return Verdict(level="error", text=f"caption {name} {caption.problem}: caching stops on it", fix=fix)


def _with_caption(v: Verdict, caption: Caption) -> Verdict:
    if caption.state == "empty" and v.level == "ok":
        return Verdict(level="warn", text=f"{v.text}; empty caption: trains as unconditioned")
    return v


_RULES: dict[Trainer, Callable[[Path, Probe, Caption, Settings], Verdict]] = {
    Trainer.diffpipe: _diffpipe,
    Trainer.musubi: _musubi,
}


def _caption_path(media: Path, trainer: Trainer, s: Settings) -> Path:
    return media.with_name(media.stem + (".txt" if trainer is Trainer.diffpipe else s.caption_extension))


def _file_report(path: Path, s: Settings) -> FileReport:
    p = probe(path, path.parent)
    captions = {t.value: read_caption(_caption_path(path, t, s)) for t in s.trainers}
    verdicts = {t.value: _RULES[t](path, p, captions[t.value], s) for t in s.trainers}
    return FileReport(
        name=path.name,
        kind=p.kind,
        width=p.width,
        height=p.height,
        frames=p.frames,
        fps=p.fps,
        frames_from=p.frames_from,
        error=p.error,
        captions={t: c.state for t, c in captions.items()},
        verdicts=verdicts,
    )


def _dataset_problems(files: list[FileReport], ignored: list[Path], s: Settings) -> list[Problem]:
    problems: list[Problem] = []
    if not files:
        problems.append(Problem(level="error", trainer=None, text="no images or videos in this folder"))
    if s.task.is_i2v and files and not any(f.kind == "video" and not f.error for f in files):
        problems.append(Problem(level="error", trainer=None, text=f"task {s.task.value} trains on videos, and this folder has none",
                                fix="point the dataset at a folder of video clips (I2V cannot learn from images only), or use a t2v task"))
    by_stem: dict[str, list[FileReport]] = defaultdict(list)
    for f in files:
        by_stem[Path(f.name).stem].append(f)
    for stem, group in sorted(by_stem.items()):
        if len(group) < 2:
            continue
        names = ", ".join(f.name for f in group)
        if Trainer.musubi in s.trainers:
            for kind in ("video", "image"):
                same = [f.name for f in group if f.kind == kind]
                if len(same) > 1:
                    problems.append(
                        Problem(level="error", trainer="musubi", text=f"{', '.join(same)} share the stem '{stem}': musubi's caches are named by stem and overwrite each other",
                                fix="rename the files so every stem is unique in the folder")
                    )
        if Trainer.diffpipe in s.trainers:
            problems.append(Problem(level="warn", trainer="diffpipe", text=f"{names} share one caption file {stem}.txt"))
    if ignored:
        shown = ", ".join(p.name for p in ignored[:5]) + (" …" if len(ignored) > 5 else "")
        problems.append(Problem(level="warn", trainer=None, text=f"{len(ignored)} file(s) are not images or videos and are not trained on: {shown}"))
    unusual = sorted({b for b in s.frames if round_4k1(b) != b})
    if unusual:
        problems.append(Problem(level="warn", trainer=None, text=f"frames {unusual} are not 4k+1; musubi rounds them down to {[round_4k1(b) for b in unusual]}"))
    return problems


Progress = Callable[[int], Callable[[], None]]


Listing = tuple[list[Path], list[Path]]


def check_directory(directory: Path, settings: Settings, on_start: Progress | None = None, listing: Listing | None = None) -> CheckReport:
    """Check every file of `directory`. `on_start(total)` returns a callback run once per file (a progress bar).
    listing: (media, ignored) of the folder when the caller has already listed it (media.media_files)."""
    problem = folder_problem(directory) if listing is None else None
    if problem:
        raise UserError(str(directory), f"{problem}.", "pass the folder that holds the images or videos")
    media, ignored = listing or media_files(directory, settings.caption_extension)
    advance = on_start(len(media)) if on_start else (lambda: None)

    def one(path: Path) -> FileReport:
        report = _file_report(path, settings)
        advance()
        return report

    # Probing is I/O and libav work that releases the GIL; threads overlap the file reads.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        files = list(pool.map(one, media))
    return CheckReport(
        directory=str(directory),
        settings=settings,
        files=files,
        ignored=[p.name for p in ignored],
        problems=_dataset_problems(files, ignored, settings),
    )


def dataset_problems(dataset: Dataset, trainer: Trainer, task: Task, listing: Listing | None = None) -> list[UserError]:
    """Problems the job validation should refuse: videos that fall out of every bucket, I2V without videos,
    and anything else that would stop or silently shrink training for `trainer`."""
    report = check_directory(dataset.path, Settings.of(dataset, task, [trainer]), listing=listing)
    errors: list[UserError] = []
    for f in report.files:
        v = f.verdicts[trainer.value]
        if _RANK[v.level] >= _RANK["drop"]:
            errors.append(UserError(f"{dataset.path / f.name}", f"{trainer.value}: {v.text}.", _fix_for(v, trainer)))
    for p in report.problems:
        if _RANK[p.level] >= _RANK["drop"] and p.trainer in (None, trainer.value):
            errors.append(UserError(str(dataset.path), f"{p.text}.", p.fix))
    return errors


def _fix_for(v: Verdict, trainer: Trainer) -> str:
    if v.fix:
        return v.fix
    if "bucket" in v.text or "target" in v.text:
        return "add a smaller 4k+1 value to the dataset's `frames`, or cut the video with `runner dataset prepare`"
    if "caption" in v.text:
        return "write a caption file next to it"
    if "extension" in v.text or "does not read" in v.text:
        return "re-encode it to .mp4 (`runner dataset prepare`) or rename it with a lower-case extension"
    return "re-encode or remove the file (`runner dataset prepare` re-encodes)"


def settings_for(
    directory: Path,
    job_file: Path | None = None,
    frames: list[int] | None = None,
    source_fps: float | None = None,
    task: Task | None = None,
    trainer: Trainer | None = None,
    caption_extension: str | None = None,
) -> Settings:
    """Settings from the job's dataset entry for `directory` (if a job is given), overridden by explicit options."""
    base = Settings()
    if job_file is not None:
        from runner.spec import load_job

        job = load_job(job_file)
        target = directory.resolve()
        match = next((d for d in job.datasets if d.path.resolve() == target), None)
        if match is None:
            listed = ", ".join(str(d.path) for d in job.datasets)
            raise UserError(str(job_file), f"has no dataset at {target} (it lists {listed}).", "pass one of the job's dataset folders")
        base = Settings.of(match, job.task, [job.trainer])
    updates = {
        "frames": frames,
        "source_fps": source_fps,
        "task": task,
        "trainers": [trainer] if trainer else None,
        "caption_extension": caption_extension,
    }
    return base.model_copy(update={k: v for k, v in updates.items() if v is not None})


def check(directory: Path, on_start: Progress | None = None, **options) -> CheckReport:
    """`runner dataset check`: settings from the job and options, then every file checked."""
    return check_directory(directory, settings_for(directory, **options), on_start)
