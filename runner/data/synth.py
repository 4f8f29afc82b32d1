"""Synthetic media for tests and benchmarks: tiny videos and images written with PyAV (no numpy, no PIL)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

_CODECS = {
    ".mp4": ("libx264", "yuv420p", None),
    ".mov": ("libx264", "yuv420p", None),
    ".mkv": ("libx264", "yuv420p", None),
    ".webm": ("libvpx-vp9", "yuv420p", None),
    ".avi": ("mpeg4", "yuv420p", None),
    ".png": ("png", "rgb24", "image2"),
    ".jpg": ("mjpeg", "yuvj420p", "image2"),
}


def _fill(frame: av.VideoFrame, index: int) -> None:
    # A moving gradient, so encoders produce real (non-empty) packets for every frame.
    for n, plane in enumerate(frame.planes):
        row = bytes((x * 3 + index * 5 + n * 40) % 256 for x in range(plane.line_size))
        plane.update(row * (plane.buffer_size // plane.line_size))


def write_video(path: Path, frames: int, fps: float, width: int = 64, height: int = 64) -> Path:
    codec, pix_fmt, fmt = _CODECS[path.suffix.lower()]
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for i in range(frames):
            frame = av.VideoFrame(width, height, pix_fmt)
            _fill(frame, i)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, width: int = 64, height: int = 64) -> Path:
    return write_video(path, 1, 1, width, height)


def write_caption(media: Path, text: str = "a test clip", extension: str = ".txt") -> Path:
    caption = media.with_name(media.stem + extension)
    caption.write_text(text, encoding="utf-8")
    return caption
