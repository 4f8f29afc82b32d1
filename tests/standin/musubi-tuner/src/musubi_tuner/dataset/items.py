"""STAND-IN media listing, clip planning and cache file names of musubi-tuner 30c658c for Wan.

runner's CI test double: no pixels are decoded beyond counting frames, no VAE runs. Media rules: non-recursive
listing; images need a caption file when caption_extension is set (others are skipped silently), videos without
one raise FileNotFoundError; source_fps drops frames towards 16 fps (never duplicates); `head` reads at most
max(target_frames) frames; a video shorter than a target yields no clip for it.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass

from musubi_tuner._standin import probe_image, probe_video
from musubi_tuner.dataset.config_utils import DatasetParams

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".avif"]
VIDEO_EXTENSIONS = [".mp4", ".webm", ".avi", ".mkv", ".mov", ".flv", ".wmv", ".m4v", ".mpg", ".mpeg"]
TARGET_FPS_WAN = 16.0
BUCKET_STEP = 16
ARCH = "wan"


@dataclass
class Media:
    path: str
    caption_path: str | None  # None: caption inline (jsonl)
    caption: str | None = None


def _glob(directory: str, extensions: list[str]) -> list[str]:
    exts = set(extensions) | {e.upper() for e in extensions}
    files = []
    for ext in exts:
        files += glob.glob(os.path.join(glob.escape(directory), "*" + ext))
    return sorted(set(files))


def _caption_path(p: DatasetParams, media_path: str) -> str:
    return os.path.splitext(media_path)[0] + p.caption_extension if p.caption_extension else ""


def list_media(p: DatasetParams) -> list[Media]:
    if p.jsonl_file is not None:
        key = "video_path" if p.is_video else "image_path"
        out = []
        with open(p.jsonl_file, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    out.append(Media(d[key], None, d.get("caption", "")))
        return out
    if p.directory is None or not os.path.isdir(p.directory):
        return []
    if p.is_video:
        return [Media(v, _caption_path(p, v)) for v in _glob(p.directory, VIDEO_EXTENSIONS)]
    images = _glob(p.directory, IMAGE_EXTENSIONS)
    if p.caption_extension:
        images = [i for i in images if os.path.exists(_caption_path(p, i))]
    return [Media(i, _caption_path(p, i)) for i in images]


def read_caption(m: Media) -> str:
    if m.caption_path is None:
        return m.caption or ""
    with open(m.caption_path, encoding="utf-8") as f:  # "" (no caption_extension) raises FileNotFoundError
        return f.read().strip()


def bucket_resolution(p: DatasetParams, size: tuple[int, int], bucketing: bool) -> tuple[int, int]:
    """An approximation of upstream's BucketSelector: same area, nearest aspect ratio, multiples of 16."""
    w0, h0 = p.resolution
    if not bucketing:
        return (w0, h0)
    area = w0 * h0
    if p.bucket_no_upscale and size[0] * size[1] <= area:
        area = size[0] * size[1]
    ar = size[0] / size[1]
    w = max(BUCKET_STEP, int(math.sqrt(area * ar)) // BUCKET_STEP * BUCKET_STEP)
    h = max(BUCKET_STEP, int(area / w) // BUCKET_STEP * BUCKET_STEP)
    return (w, h)


def video_frames(p: DatasetParams, path: str) -> tuple[int, tuple[int, int]]:
    """(frames the cacher sees, original frame size): after source_fps dropping and the `head` read limit."""
    n, _fps, w, h = probe_video(path)
    if p.source_fps is not None:
        delta = TARGET_FPS_WAN / p.source_fps
        acc, prev, kept = 0.0, -1, 0
        for _ in range(n):
            idx = int(acc)
            acc += delta
            if idx != prev:
                prev, kept = idx, kept + 1
        n = kept
    if p.frame_extraction == "head":
        n = min(n, max(p.target_frames))
    return n, (w, h)


def clips(p: DatasetParams, frame_count: int) -> list[tuple[int, int]]:
    """(start, length) of every clip cut from a video of frame_count frames."""
    out: list[tuple[int, int]] = []
    mode = p.frame_extraction
    if mode == "head":
        out = [(0, t) for t in p.target_frames if frame_count >= t]
    elif mode == "chunk":
        out = [(i, t) for t in p.target_frames for i in range(0, frame_count, t) if i + t <= frame_count]
    elif mode == "slide":
        out = [(i, t) for t in p.target_frames if frame_count >= t for i in range(0, frame_count - t + 1, p.frame_stride)]
    elif mode == "uniform":
        import numpy as np

        for t in p.target_frames:
            if frame_count >= t:
                out += [(int(i), t) for i in np.linspace(0, frame_count - t, p.frame_sample, dtype=int)]
    elif mode == "full":
        t = min(frame_count, p.max_frames)
        out = [(0, (t - 1) // 4 * 4 + 1)]
    else:
        raise ValueError(f"frame_extraction {mode} is not supported")
    return out


def stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def image_cache_name(path: str, size: tuple[int, int]) -> str:
    return f"{stem(path)}_{size[0]:04d}x{size[1]:04d}_{ARCH}.safetensors"


def video_cache_name(path: str, pos: int, frames: int, size: tuple[int, int]) -> str:
    return f"{stem(path)}_{pos:05d}-{frames:03d}_{size[0]:04d}x{size[1]:04d}_{ARCH}.safetensors"


def te_cache_name(path: str) -> str:
    return f"{stem(path)}_{ARCH}_te.safetensors"


def cache_dir(p: DatasetParams) -> str:
    assert p.cache_directory is not None, "cache_directory is required for jsonl datasets"
    return p.cache_directory


def image_size(path: str) -> tuple[int, int]:
    w, h = probe_image(path)
    if w < 8 or h < 8:
        raise ValueError(f"Image size is too small: {path} {w}x{h}")
    return w, h


def training_items(p: DatasetParams) -> list[tuple[str, str, tuple]]:
    """Upstream's prepare_for_training discovery: (latent file, te file, batch key) for each cached latent that
    has its text-encoder file, repeated num_repeats times. Latents without a TE file are warned about and skipped."""
    import logging

    log = logging.getLogger(__name__)
    d = cache_dir(p)
    items = []
    for latent in sorted(glob.glob(os.path.join(glob.escape(d), f"*_{ARCH}.safetensors"))):
        tokens = os.path.basename(latent).split("_")
        if p.is_video:
            key, frames, size = "_".join(tokens[:-3]), tokens[-3], tokens[-2]
        else:
            key, frames, size = "_".join(tokens[:-2]), "1", tokens[-2]
        te = os.path.join(d, f"{key}_{ARCH}_te.safetensors")
        if not os.path.exists(te):
            log.warning(f"Text encoder output cache file not found: {te}")
            continue
        items += [(latent, te, (size, frames))] * p.num_repeats
    return items


def num_batches(p: DatasetParams, items: list) -> int:
    """Batches of one dataset: items grouped by bucket, each group split into batch_size chunks."""
    groups: dict = {}
    for _latent, _te, key in items:
        groups[key] = groups.get(key, 0) + 1
    return sum(math.ceil(n / p.batch_size) for n in groups.values())


def remove_stale(cache: str, pattern: str, produced: set[str], logger) -> None:
    """Upstream's end of both caching scripts: cache files of `pattern` this run did not produce are deleted."""
    for old in glob.glob(os.path.join(glob.escape(cache), pattern)):
        if os.path.normpath(old) not in produced:
            logger.info(f"Remove cache file not in dataset: {old}")
            os.remove(old)
