"""Media files as the trainers see them: which extensions each accepts, and container metadata read without decoding.

Extension lists are the trainers' own, read at the pins in UPSTREAM.md:
- diffusion-pipe (utils/common.py) takes imageio's video extensions, lower- and upper-case exactly (".Mp4" is
  neither, so it is opened as an image and skipped); anything else that is not a caption/metadata file is opened
  with PIL as an image.
- musubi-tuner (dataset/media_utils.py) globs fixed lists, again case-sensitive.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av

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
    # "header": the container's frame count; "packets": counted by demuxing (the header had none, e.g.
    # Matroska/WebM); "image": a still picture.
    frames_from: Literal["header", "packets", "image", ""] = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def probe(path: Path) -> Probe:
    """Read dimensions, frame rate and frame count from container metadata; never decodes a picture.

    Frame counts from the header are trusted (MP4/MOV write an exact sample table). Where the header has none
    (stream.frames == 0: Matroska, WebM, some AVI/MPEG-TS), packets are counted by demuxing, which reads the file
    but decodes nothing; one packet is one frame for the codecs these datasets use.
    """
    kind = kind_of(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return Probe(kind, error="no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if not width or not height:
                return Probe(kind, error="no picture size in the container")
            if kind == "image":
                return Probe(kind, width, height, 1, 0.0, "image")
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            frames, source = stream.frames, "header"
            if frames <= 0:
                frames = sum(1 for packet in container.demux(stream) if packet.size)
                source = "packets"
            if frames <= 0:
                return Probe(kind, width, height, error="no frames")
            if fps <= 0:
                return Probe(kind, width, height, frames, error="no frame rate in the container")
            return Probe(kind, width, height, frames, fps, source)  # type: ignore[arg-type]
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        return Probe(kind, error=_short(e))


def _short(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e)
    return text.split(": '", 1)[0].strip() or type(e).__name__


# --- what a dataset folder holds (the job's `kind: auto`) ---------------------------------------------

FolderKind = Literal["video", "image", "mixed", "empty"]


def media_files(directory: Path, caption_extension: str = ".txt") -> tuple[list[Path], list[Path]]:
    """(media, ignored) in one folder, sorted; sub-folders are never read by either trainer."""
    media, ignored = [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not _is_file(entry):
                continue
            path = Path(entry.path)
            if path.suffix in DIFFPIPE_SKIPPED_SUFFIXES or path.suffix == caption_extension:
                continue
            (ignored if kind_of(path) == "other" else media).append(path)
    return sorted(media), sorted(ignored)


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symbolic link loop: not a file, as pathlib (and so the trainers) see it
        return False


def media_kind(media: list[Path]) -> FolderKind:
    """What a folder's media files are: all videos, all images, both, or none."""
    kinds = {kind_of(p) for p in media}
    if kinds == {"video", "image"}:
        return "mixed"
    return next(iter(kinds)) if kinds else "empty"  # type: ignore[return-value]


def video_frames(frames: list[int] | None) -> list[int]:
    """Frame counts for the videos of a dataset (1 is left out: images get their own bucket)."""
    return [n for n in frames if n != 1] if frames else list(DEFAULT_VIDEO_FRAMES)
