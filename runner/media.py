"""Media files in a dataset folder: which extensions are videos or images, and what a folder holds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".avi", ".mkv"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})

Kind = Literal["video", "image", "mixed", "empty"]


def media_files(folder: Path, extensions: frozenset[str] = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def folder_kind(folder: Path) -> Kind:
    files = media_files(folder)
    videos = any(p.suffix.lower() in VIDEO_EXTENSIONS for p in files)
    images = any(p.suffix.lower() in IMAGE_EXTENSIONS for p in files)
    if videos and images:
        return "mixed"
    return "video" if videos else "image" if images else "empty"


DEFAULT_VIDEO_FRAMES = [33]


def dataset_kind(kind: str, folder: Path) -> Kind:
    """The job's `kind:` unless it is auto, then what the folder holds."""
    return folder_kind(folder) if kind == "auto" else kind  # type: ignore[return-value]


def video_frames(frames: list[int] | None) -> list[int]:
    """Frame counts for the videos of a dataset (1 = single images is kept out: images get their own bucket)."""
    return [n for n in frames if n != 1] if frames else list(DEFAULT_VIDEO_FRAMES)
