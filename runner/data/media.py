"""Media files as the trainers see them: which extensions each accepts, and container metadata read without decoding.

Extension lists are the trainers' own, read at the pins in UPSTREAM.md:
- diffusion-pipe (utils/common.py) takes imageio's video extensions, lower- and upper-case exactly (".Mp4" is
  neither, so it is opened as an image and skipped); anything else that is not a caption/metadata file is opened
  with PIL as an image.
- musubi-tuner (dataset/media_utils.py) globs fixed lists, again case-sensitive.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av

from runner.errors import UserError
from runner.spec import DEFAULT_VIDEO_FRAMES

_IMAGEIO_VIDEO = (
    ".264 .265 .3g2 .3gp .a64 .A64 .adp .amr .amv .asf .avc .avi .avr .avs .avs2 .avs3 .bmv .cavs .cdg .cdxl .cgi "
    ".chk .cif .cpk .dat .dav .dif .dnxhd .dnxhr .drc .dv .dvd .f4v .flm .flv .gsm .gxf .h261 .h263 .h264 .h265 "
    ".h26l .hevc .idf .ifv .imx .ipu .ism .isma .ismv .ivf .ivr .j2k .kux .lvf .m1v .m2t .m2ts .m2v .m4a .m4b .m4v "
    ".mj2 .mjpeg .mjpg .mk3d .mka .mks .mkv .mods .moflex .mov .mp4 .mpc .mpd .mpeg .mpg .mpo .mts .mvi .mxf .mxg "
    ".nut .obu .ogg .ogv .psp .qcif .rcv .rgb .rm .roq .sdr2 .ser .sga .svag .svs .ts .ty .ty+ .v .v210 .vb .vc1 "
    ".vc2 .viv .vob .webm .wmv .wtv .xl .xmv .y4m .yop .yuv .yuv10"
).split()
DIFFPIPE_VIDEO_EXTENSIONS = frozenset(_IMAGEIO_VIDEO) | {e.upper() for e in _IMAGEIO_VIDEO}
# Files diffusion-pipe never treats as media (utils/dataset.py); every other file is tried.
DIFFPIPE_SKIPPED_SUFFIXES = frozenset({".txt", ".npz", ".json", ".parquet", ".bak", ".db"})

_MUSUBI_VIDEO = ".mp4 .webm .avi .mkv .mov .flv .wmv .m4v .mpg .mpeg".split()
MUSUBI_VIDEO_EXTENSIONS = frozenset(_MUSUBI_VIDEO) | {e.upper() for e in _MUSUBI_VIDEO}
# .jxl joins only when a JPEG-XL Pillow plugin is installed in the trainer image; runner does not assume it.
MUSUBI_IMAGE_EXTENSIONS = frozenset(".png .jpg .jpeg .webp .bmp .PNG .JPG .JPEG .WEBP .BMP .avif .AVIF".split())

# What runner itself recognises as pictures when a trainer would open "anything" (PIL); case-insensitive.
IMAGE_SUFFIXES = frozenset(".png .jpg .jpeg .webp .bmp .gif .tif .tiff .avif .jxl".split())
VIDEO_SUFFIXES = frozenset(e.lower() for e in DIFFPIPE_VIDEO_EXTENSIONS | MUSUBI_VIDEO_EXTENSIONS)

Kind = Literal["video", "image", "other"]


def kind_of(path: Path) -> Kind:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return "other"


@dataclass(frozen=True)
class Probe:
    """What the container says about one file. `error` is set (and the rest zero) when it cannot be read."""

    kind: Kind
    width: int = 0
    height: int = 0
    frames: int = 0
    fps: float = 0.0
    # "header": the container's frame count, confirmed by demuxing; "packets": counted by demuxing (the header had
    # none, e.g. Matroska/WebM); "image": a still picture.
    frames_from: Literal["header", "packets", "image", ""] = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def entry_problem(path: Path, folder: Path | None = None) -> str | None:
    """Why a trainer cannot open `path` as a file, without opening it (a FIFO would block a reader for ever):
    a symlink loop, a dangling link, something other than a regular file, or (with `folder`) a link to a place
    outside the folder, which the container that mounts only the folder cannot follow."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop"
        if path.is_symlink():
            return f"is a dangling symlink (to {os.readlink(path)})"
        return e.strerror or type(e).__name__
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(mode):
        return f"is a {_SPECIAL.get(stat.S_IFMT(mode), 'special file')}, not a regular file"
    if folder is not None and path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.is_relative_to(os.path.realpath(folder)):
            return f"is a symlink to {target}, outside the dataset folder: the container mounts only the folder and cannot follow it"
    return None


_SPECIAL = {stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character device", stat.S_IFBLK: "block device", stat.S_IFSOCK: "socket"}


def probe(path: Path, folder: Path | None = None) -> Probe:
    """Read dimensions, frame rate and frame count from the container; never decodes a picture.

    A video must reach its last frame: a file cut short whose header still claims its frames is named with the
    frame it stops at. Where the header counts the frames (MP4/MOV write an exact sample table), one seek to the
    last packet shows whether it is whole; only when it is not, or where the header has no count (Matroska, WebM,
    some AVI/MPEG-TS), is the file demuxed from the start, which reads it but decodes nothing (one packet is one
    frame for the codecs these datasets use). folder: the dataset folder, for links that leave it (entry_problem).
    """
    kind = kind_of(path)
    problem = entry_problem(path, folder)
    if problem:
        return Probe(kind, error=problem)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return Probe(kind, error="no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height:
                return Probe(kind, error="no picture size in the container")
            if kind == "image":
                # one picture: decoding it is cheap, and the trainers' PIL refuses a broken one
                next(container.decode(stream))
                if path.suffix.lower() in (".jpg", ".jpeg") and not _jpeg_ends(path):
                    return Probe(kind, width, height, error="is cut short: the JPEG has no end-of-image marker")
                return Probe(kind, width, height, 1, 0.0, "image")
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            claimed, seconds = stream.frames, (container.duration or 0) / av.time_base
            if not claimed:
                frames, cut = _count_packets(container, stream)
            elif _last_packet_whole(container, stream):
                frames, cut = claimed, None
            else:  # rare: the file ends early; read it again from the start to find where
                with av.open(str(path)) as again:
                    frames, cut = _count_packets(again, again.streams.video[0])
        # without a frame count (Matroska, WebM), the duration in the header says how many frames to expect
        expected = claimed or round(seconds * fps)
        if cut or 0 < frames < (claimed or expected * 0.95 - 1):
            of = f" of the {claimed} its header claims" if claimed else f" of about {expected} ({seconds:.2f} s in its header)" if expected else ""
            return Probe(kind, width, height, frames, fps, error=f"is cut short: it stops at frame {frames}{of}; {cut or 'the file ends there'}")
        if frames <= 0:
            return Probe(kind, width, height, error="no frames")
        if fps <= 0:
            return Probe(kind, width, height, frames, error="no frame rate in the container")
        return Probe(kind, width, height, frames, fps, "header" if claimed else "packets")
    except (av.FFmpegError, OSError, UnicodeDecodeError, StopIteration) as e:
        return Probe(kind, error=_short(e) if not isinstance(e, StopIteration) else "no picture in the file")


def _jpeg_ends(path: Path) -> bool:
    """Whether a JPEG's end-of-image marker (FF D9) is in its last KiB; ffmpeg conceals a cut JPEG, PIL does not."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 1024))
        return b"\xff\xd9" in f.read()


def _last_packet_whole(container: av.container.InputContainer, stream: av.VideoStream) -> bool:
    """Whether the stream's last packet is in the file, whole (one seek past the end, then the packets left)."""
    try:
        container.seek(2**62, backward=True, any_frame=True, stream=stream)
        tail = [packet for packet in container.demux(stream) if packet.size]
    except av.FFmpegError:
        return False
    return bool(tail) and not any(packet.is_corrupt for packet in tail)


def _count_packets(container: av.container.InputContainer, stream: av.VideoStream) -> tuple[int, str | None]:
    """(whole packets, why the demuxer stopped early or None) of one stream, read from the start to its end."""
    frames = 0
    try:
        for packet in container.demux(stream):
            if packet.is_corrupt:
                return frames, "its last packet is incomplete"
            frames += packet.size > 0
    except av.FFmpegError as e:
        return frames, _short(e)
    return frames, None


def _short(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.split(": '", 1)[0].strip() or type(e).__name__


# --- what a dataset folder holds (the job's `kind: auto`) ---------------------------------------------

FolderKind = Literal["video", "image", "mixed", "empty"]


def media_files(directory: Path, caption_extension: str = ".txt") -> tuple[list[Path], list[Path]]:
    """(media, ignored) in one folder, sorted; sub-folders are never read by either trainer. Entries with a media
    name that are no regular file (a folder, a FIFO, a dangling or looping link) count as media: musubi globs them
    by name and fails on them, so probe() names them."""
    media, ignored = [], []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.name.startswith(".") or path.suffix in DIFFPIPE_SKIPPED_SUFFIXES or path.suffix == caption_extension:
                    continue
                if kind_of(path) != "other":
                    media.append(path)
                elif not _is_dir(entry):
                    ignored.append(path)
    except OSError as e:
        raise UserError(str(directory), f"cannot be listed ({folder_problem(directory) or e.strerror}).",
                        "point it at a readable folder of clips and captions") from None
    return sorted(media), sorted(ignored)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a folder
        return False


def folder_problem(directory: Path) -> str | None:
    """Why `directory` is not a folder to read media from, or None."""
    problem = entry_problem(directory)
    if problem == "is a folder, not a file":
        return None
    if problem is None:
        return "is a file, not a folder"
    if problem == os.strerror(errno.ENOENT):
        return "does not exist"
    return problem.replace("not a regular file", "not a folder")


def media_kind(media: list[Path]) -> FolderKind:
    """What a folder's media files are: all videos, all images, both, or none."""
    kinds = {kind_of(p) for p in media}
    if kinds == {"video", "image"}:
        return "mixed"
    return next(iter(kinds)) if kinds else "empty"  # type: ignore[return-value]


def video_frames(frames: list[int] | None) -> list[int]:
    """Frame counts for the videos of a dataset (1 is left out: images get their own bucket)."""
    return [n for n in frames if n != 1] if frames else list(DEFAULT_VIDEO_FRAMES)
