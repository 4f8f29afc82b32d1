"""`runner dataset prepare`: re-encode videos to the training frame rate and cut them into 4k+1-frame clips.

Each clip gets a copy of its source's caption, so both trainers see every clip as its own captioned video and
neither has to resample (diffusion-pipe) or be told `source_fps` (musubi). SRC is only read. Work is resumable:
clips are written under DST/.runner-prepare/tmp and renamed into place when complete, and a source whose record
in DST/.runner-prepare matches its size, mtime and the options is skipped on the next run. Sub-folders are never
read by either trainer, so the bookkeeping folder is invisible to training.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import av
from pydantic import BaseModel, Field

from runner import files
from runner.data.check import Progress
from runner.data.media import entry_problem, folder_problem, kind_of, media_files
from runner.errors import UserError
from runner.spec import round_4k1

STATE_DIR = ".runner-prepare"


class Options(BaseModel):
    fps: float = Field(16, gt=0)
    frames: int = Field(81, description="frames per clip, 4k+1")
    min_frames: int | None = Field(None, description="keep a shorter last clip of at least this many frames")
    max_side: int | None = Field(None, ge=16)
    caption_extension: str = ".txt"
    crf: int = 18
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)


class SourceResult(BaseModel):
    source: str
    kind: str
    outputs: list[str] = []
    frames_in: int = 0
    frames_dropped: int = 0
    resumed: bool = False
    caption: bool = True
    error: str | None = None


class PrepareReport(BaseModel):
    src: str
    dst: str
    options: Options
    results: list[SourceResult]
    seconds: float

    def summary(self) -> str:
        videos = [r for r in self.results if r.kind == "video" and not r.error]
        images = [r for r in self.results if r.kind == "image" and not r.error]
        clips = sum(len(r.outputs) for r in videos)
        parts = [
            f"{len(videos)} video(s) → {clips} clip(s) of {self.options.frames} frames at {self.options.fps:g} fps",
            f"{len(images)} image(s) copied" + (f" (longest side ≤ {self.options.max_side})" if self.options.max_side else ""),
        ]
        resumed = sum(r.resumed for r in self.results)
        if resumed:
            parts.append(f"{resumed} already done (resumed)")
        dropped = sum(r.frames_dropped for r in videos)
        if dropped:
            parts.append(f"{dropped} tail frame(s) left out (shorter than a clip; see --min-frames)")
        no_caption = sum(not r.caption for r in self.results if not r.error)
        if no_caption:
            parts.append(f"{no_caption} source(s) without a caption")
        failed = [r for r in self.results if r.error]
        if failed:
            parts.append(f"{len(failed)} failed")
        return "; ".join(parts) + f"; {self.seconds:.1f} s"


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return _even(width * scale), _even(height * scale)


def _state_key(path: Path, opts: Options) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "options": opts.model_dump(exclude={"workers"})}


def _write_clip(frames: list[av.VideoFrame], final: Path, tmp_dir: Path, opts: Options, threads: int) -> None:
    with files.replacing(final, tmp_dir / final.name) as tmp:
        width, height = frames[0].width, frames[0].height
        rate = Fraction(opts.fps).limit_denominator(1001)
        with av.open(str(tmp), "w") as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(opts.crf), "preset": "veryfast"}
            stream.codec_context.thread_count = threads
            for i, frame in enumerate(frames):
                frame.pts = i
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


def _video(src: Path, names: list[Path], tmp_dir: Path, opts: Options, threads: int) -> tuple[list[str], int, int]:
    """Decode once through ffmpeg's fps and scale filters, cutting clips as frames arrive. Returns
    (clip names, frames at the target fps, frames left out)."""
    written: list[str] = []
    total = 0
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = _target_size(stream.codec_context.width, stream.codec_context.height, opts.max_side)
        graph = av.filter.Graph()
        chain = [
            graph.add_buffer(template=stream),
            graph.add("fps", f"fps={Fraction(opts.fps).limit_denominator(1001)}"),
            graph.add("scale", f"{width}:{height}"),
            graph.add("format", "yuv420p"),
            graph.add("buffersink"),
        ]
        graph.link_nodes(*chain).configure()
        clip: list[av.VideoFrame] = []

        def drain() -> None:
            nonlocal total
            while True:
                try:
                    frame = graph.vpull()
                except (av.BlockingIOError, av.EOFError):
                    return
                total += 1
                clip.append(frame)
                if len(clip) == opts.frames:
                    _write_clip(clip, names[len(written)], tmp_dir, opts, threads)
                    written.append(names[len(written)].name)
                    clip.clear()

        for frame in inp.decode(stream):
            graph.vpush(frame)
            drain()
        graph.vpush(None)
        drain()
    tail = len(clip)
    if opts.min_frames and tail >= opts.min_frames:
        keep = round_4k1(tail)
        _write_clip(clip[:keep], names[len(written)], tmp_dir, opts, threads)
        written.append(names[len(written)].name)
        tail -= keep
    return written, total, tail


def _image(src: Path, dst: Path, tmp_dir: Path, opts: Options) -> None:
    with files.replacing(dst, tmp_dir / dst.name) as tmp:
        resize = False
        if opts.max_side:
            with av.open(str(src)) as inp:
                ctx = inp.streams.video[0].codec_context
                resize = max(ctx.width, ctx.height) > opts.max_side
        if resize:
            with av.open(str(src)) as inp:
                frame = next(inp.decode(video=0))
            width, height = _target_size(frame.width, frame.height, opts.max_side)
            codec, pix_fmt = ("mjpeg", "yuvj420p") if dst.suffix.lower() in (".jpg", ".jpeg") else ("png", "rgb24")
            with av.open(str(tmp), "w", format="image2") as out:
                stream = out.add_stream(codec, rate=1)
                stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
                for packet in stream.encode(frame.reformat(width, height, pix_fmt)):
                    out.mux(packet)
                for packet in stream.encode():
                    out.mux(packet)
        else:
            shutil.copyfile(src, tmp)


def _clip_names(src: Path, stem: str, dst: Path, count: int) -> list[Path]:
    return [dst / f"{stem}_{i:03d}.mp4" for i in range(count)]


def _one(src: Path, stem: str, dst: Path, opts: Options, threads: int) -> SourceResult:
    """Prepare one source file; runs in a worker process."""
    kind = kind_of(src)
    problem = entry_problem(src)
    if problem:  # a FIFO would block the decoder, a broken link fails its stat
        return SourceResult(source=src.name, kind=kind, error=problem)
    state_dir = dst / STATE_DIR
    tmp_dir = state_dir / "tmp"
    record = state_dir / f"{src.name}.json"
    key = _state_key(src, opts)
    try:
        done = json.loads(record.read_text())
        if done["key"] == key and all((dst / name).is_file() for name in done["result"]["outputs"]):
            return SourceResult.model_validate({**done["result"], "resumed": True})
    except (OSError, ValueError, KeyError):
        pass
    result = SourceResult(source=src.name, kind=kind)
    try:
        if kind == "video":
            # A clip count is unknown before decoding; names are cheap, so reserve plenty.
            names = _clip_names(src, stem, dst, 10_000)
            result.outputs, result.frames_in, result.frames_dropped = _video(src, names, tmp_dir, opts, threads)
        else:
            target = dst / f"{stem}{src.suffix}"
            _image(src, target, tmp_dir, opts)
            result.outputs = [target.name]
    except Exception as e:  # one unreadable file must not stop the batch; it is reported
        result.error = str(e) or type(e).__name__
        return result
    caption = src.with_name(src.stem + opts.caption_extension)
    result.caption = caption.is_file()
    if result.caption:
        for name in result.outputs:
            shutil.copyfile(caption, dst / (Path(name).stem + opts.caption_extension))
    record.write_text(json.dumps({"key": key, "result": result.model_dump()}))
    return result


def _stems(sources: list[Path]) -> dict[Path, str]:
    """Output stems; sources sharing a stem (clip.mp4, clip.mov) get their extension appended to stay apart."""
    counts: dict[str, int] = {}
    for s in sources:
        counts[s.stem] = counts.get(s.stem, 0) + 1
    return {s: s.stem if counts[s.stem] == 1 else f"{s.stem}_{s.suffix.lstrip('.').lower()}" for s in sources}


def prepare(src: Path, dst: Path, opts: Options, on_start: Progress | None = None) -> PrepareReport:
    problem = folder_problem(src)
    if problem:
        raise UserError(str(src), f"{problem}.", "pass the folder that holds the source videos and images")
    if opts.frames < 5 or opts.frames != round_4k1(opts.frames):
        raise UserError("--frames", f"{opts.frames} is not 4k+1; the Wan VAE encodes 1 + 4k frames.", f"use {max(5, round_4k1(opts.frames))} or {max(5, round_4k1(opts.frames)) + 4}")
    if opts.min_frames is not None and not 5 <= opts.min_frames <= opts.frames:
        raise UserError("--min-frames", f"{opts.min_frames} is outside 5..{opts.frames}.", "pick a value between 5 and --frames")
    src_r, dst_r = src.resolve(), dst.resolve()
    if dst_r == src_r or src_r in dst_r.parents:
        raise UserError(str(dst), "lies inside SRC; prepare never writes into its source.", "choose an --out folder outside SRC")
    started = time.monotonic()
    sources, _ = media_files(src, opts.caption_extension)
    try:
        (dst / STATE_DIR / "tmp").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError("--out", f"{dst} cannot be made a folder ({folder_problem(dst) or e.strerror}).",
                        "give the path of a folder (it is made if missing), not of a file or a link") from None
    stems = _stems(sources)
    threads = max(1, (os.cpu_count() or 1) // min(opts.workers, max(1, len(sources))))
    advance = on_start(len(sources)) if on_start else (lambda: None)
    results: list[SourceResult] = []
    with ProcessPoolExecutor(max_workers=opts.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_one, s, stems[s], dst, opts, threads) for s in sources]
        for future in as_completed(futures):
            results.append(future.result())
            advance()
    results.sort(key=lambda r: r.source)
    return PrepareReport(src=str(src), dst=str(dst), options=opts, results=results, seconds=time.monotonic() - started)
