"""STAND-IN dataset config for musubi-tuner 30c658c (runner's CI test double, no GPU, no model math).

Validates a dataset TOML/JSON the way upstream's voluptuous schema does (unknown keys rejected; `int` keys
take ints, `float` keys take floats only, so `source_fps = 30` fails) and resolves each [[datasets]] entry with
upstream's precedence: [[datasets]] > [general] > same-named script argument > default. Written for runner's
tests; not upstream code.
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

ARCHITECTURE_WAN = "wan"


class Invalid(Exception):
    pass


class MultipleInvalid(Invalid):
    """Like voluptuous.MultipleInvalid: the first problem's message, with its path."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__(errors[0] if errors else "invalid")


def _is(t):
    def check(v):
        # voluptuous type validators are isinstance checks: bool passes for int, int fails for float
        if not isinstance(v, t):
            raise Invalid(f"expected {t.__name__}")
        return v

    return check


def _resolution(v):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return tuple(v)
    raise Invalid("expected int or [int, int] for resolution")


def _int_list(v):
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) for x in v):
        raise Invalid("expected a list of int")
    return list(v)


ASCENDABLE = {
    "caption_extension": _is(str),
    "batch_size": _is(int),
    "num_repeats": _is(int),
    "resolution": _resolution,
    "enable_bucket": _is(bool),
    "bucket_no_upscale": _is(bool),
}
IMAGE_KEYS = {
    **ASCENDABLE,
    "image_directory": _is(str),
    "image_jsonl_file": _is(str),
    "cache_directory": _is(str),
    "control_directory": _is(str),
    "multiple_target": _is(bool),
    "fp_latent_window_size": _is(int),
    "fp_1f_clean_indices": _int_list,
    "fp_1f_target_index": _is(int),
    "fp_1f_no_post": _is(bool),
    "no_resize_control": _is(bool),
    "control_resolution": _resolution,
}
VIDEO_KEYS = {
    **ASCENDABLE,
    "video_directory": _is(str),
    "video_jsonl_file": _is(str),
    "control_directory": _is(str),
    "target_frames": _int_list,
    "frame_extraction": _is(str),
    "frame_stride": _is(int),
    "frame_sample": _is(int),
    "max_frames": _is(int),
    "cache_directory": _is(str),
    "source_fps": _is(float),
    "fp_latent_window_size": _is(int),
}
RENAMED = {
    "flux_kontext_no_resize_control": "no_resize_control",
    "qwen_image_edit_no_resize_control": "no_resize_control",
    "qwen_image_edit_control_resolution": "control_resolution",
}


@dataclass
class DatasetParams:
    is_video: bool
    resolution: tuple[int, int] = (960, 544)
    caption_extension: str | None = None
    batch_size: int = 1
    num_repeats: int = 1
    enable_bucket: bool = False
    bucket_no_upscale: bool = False
    cache_directory: str | None = None
    directory: str | None = None  # image_directory or video_directory
    jsonl_file: str | None = None
    control_directory: str | None = None
    target_frames: tuple[int, ...] = (1,)
    frame_extraction: str = "head"
    frame_stride: int = 1
    frame_sample: int = 1
    max_frames: int = 129
    source_fps: float | None = None
    extra: dict = field(default_factory=dict)


def load_user_config(path) -> dict:
    path = str(path)
    if path.endswith(".toml"):
        with open(path, "rb") as f:
            config = tomllib.load(f)
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    else:
        raise ValueError(f"not supported config file format / 対応していない設定ファイルの形式です: {path}")
    for table in [config.get("general", {}), *config.get("datasets", [])]:
        if isinstance(table, dict):
            for old, new in RENAMED.items():
                if old in table:
                    logger.warning(f"'{old}' is deprecated, use '{new}'")
                    table[new] = table.pop(old)
    return config


def _validate_table(table, keys: dict, where: str, errors: list[str]) -> dict:
    if not isinstance(table, dict):
        errors.append(f"expected a dictionary @ data{where}")
        return {}
    out = {}
    for k, v in table.items():
        if k not in keys:
            errors.append(f"extra keys not allowed @ data{where}['{k}']")
            continue
        try:
            out[k] = keys[k](v)
        except Invalid as e:
            errors.append(f"{e} for dictionary value @ data{where}['{k}']")
    return out


def sanitize(config: dict) -> dict:
    errors: list[str] = []
    if not isinstance(config, dict):
        raise MultipleInvalid(["expected a dictionary"])
    for k in config:
        if k not in ("general", "datasets"):
            errors.append(f"extra keys not allowed @ data['{k}']")
    general = _validate_table(config.get("general", {}), ASCENDABLE, "['general']", errors)
    datasets = []
    raw = config.get("datasets", [])
    if not isinstance(raw, list):
        errors.append("expected a list @ data['datasets']")
        raw = []
    for i, d in enumerate(raw):
        is_video = isinstance(d, dict) and ("video_directory" in d or "video_jsonl_file" in d)
        keys = VIDEO_KEYS if is_video else IMAGE_KEYS
        datasets.append((is_video, _validate_table(d, keys, f"['datasets'][{i}]", errors)))
    if errors:
        logger.error(f"Invalid user config / ユーザ設定の形式が正しくないようです: {errors[0]}")
        raise MultipleInvalid(errors)
    return {"general": general, "datasets": datasets}


def generate(config: dict, args) -> list[DatasetParams]:
    """The resolved parameters of every dataset, with upstream's value precedence."""
    sane = sanitize(config)
    general = sane["general"]
    out = []
    for is_video, d in sane["datasets"]:
        p = DatasetParams(is_video=is_video)
        for name in ("resolution", "caption_extension", "batch_size", "num_repeats", "enable_bucket", "bucket_no_upscale"):
            for src in (d, general):
                if name in src:
                    setattr(p, name, src[name])
                    break
            else:
                v = getattr(args, name, None)
                if v is not None:
                    setattr(p, name, v)
        kind = "video" if is_video else "image"
        p.directory = d.get(f"{kind}_directory")
        p.jsonl_file = d.get(f"{kind}_jsonl_file")
        p.control_directory = d.get("control_directory")
        for name in ("target_frames", "frame_extraction", "frame_stride", "frame_sample", "max_frames", "source_fps"):
            if name in d:
                setattr(p, name, tuple(d[name]) if name == "target_frames" else d[name])
        p.extra = {k: v for k, v in d.items() if k not in p.__dataclass_fields__}
        if p.directory is None and p.jsonl_file is None:
            raise ValueError(f"either {kind}_directory or {kind}_jsonl_file must be specified")
        p.cache_directory = d.get("cache_directory") or p.directory
        if not p.enable_bucket:
            p.bucket_no_upscale = False
        if is_video:
            p.target_frames = round_target_frames(p.target_frames)
            if p.frame_extraction == "uniform" and p.frame_sample == 1:
                p.frame_extraction = "head"
                logger.warning("frame_sample is set to 1 for frame_extraction=uniform. frame_extraction is changed to head.")
        out.append(p)
    seen: dict[str, int] = {}
    for i, p in enumerate(out):
        if p.cache_directory is None:
            continue
        key = os.path.abspath(p.cache_directory)
        if key in seen:
            raise ValueError(
                f"cache_directory {p.cache_directory} is used by datasets {seen[key]} and {i}: each dataset needs its own"
                " / cache_directoryは各データセットで異なる必要があります"
            )
        seen[key] = i
    return out


def round_target_frames(frames) -> tuple[int, ...]:
    wanted = sorted(set(frames))
    rounded = sorted({(f - 1) // 4 * 4 + 1 for f in wanted})
    if rounded != wanted:
        logger.warning(f"target_frames are rounded to {rounded}")
    return tuple(rounded)
