"""STAND-IN dataset handling of diffusion-pipe 8f83dbf (runner's CI test double, no GPU, no model math).

What it honours: dataset.toml keys read with .get (unknown keys ignored; [[directory]] values override top-level
ones), >3 resolutions -> warning and exit 0 unless --i_know_what_i_am_doing, `path` must be an existing folder,
non-recursive sorted scan skipping .txt/.npz/.json/.parquet/.bak/.db, captions `<stem>.txt` or captions.json
(which then replaces every .txt), media without caption skipped with a warning, videos resampled to the model's
frame rate (frames = int(n * fps_model / fps_src)) and put in the largest frame bucket <= frames (never 1; too short
-> printed and skipped), AR/size buckets rounded to 16 px, each size bucket truncated to a multiple of the global
batch size, empty -> RuntimeError. The cache lives in `<path>/cache/<model name>/` and carries a fingerprint
(sqlite metadata.db per cache, as upstream) so --regenerate_cache, --trust_cache and a changed dataset show
upstream's observable behaviour. Latents are not computed: shard files hold placeholders.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from utils.standin_kit import out_of_memory_in, probe_image, probe_video

# imageio's video extensions (the ones a Wan dataset may hold) and their upper-case forms
VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".ts", ".m2ts", ".mts", ".ogv", ".3gp"}
VIDEO_EXTENSIONS |= {e.upper() for e in VIDEO_EXTENSIONS}
SKIPPED_SUFFIXES = {".txt", ".npz", ".json", ".parquet", ".bak", ".db"}
KEYS = ("resolutions", "enable_ar_bucket", "ar_buckets", "min_ar", "max_ar", "num_ar_buckets", "frame_buckets", "size_buckets",
        "num_repeats", "shuffle_tags", "caption_prefix", "skip_empty_caption", "cache_shuffle_num", "cache_shuffle_delimiter")


@dataclass
class Item:
    path: str
    caption: str
    size_bucket: tuple  # (ar, width, height, frames)
    repeats: int


def validate_resolutions(config: dict, args) -> None:
    counts = [len(config.get("resolutions", []))] + [len(d.get("resolutions", [])) for d in config.get("directory", [])]
    if max(counts) > 3 and not args.i_know_what_i_am_doing:
        print(
            "WARNING: You have set a lot of resolutions in the dataset config. Please read the comments in the example dataset.toml file,"
            " and make sure you understand what this setting does. If you still want to proceed with the current configuration,"
            " run the script with the --i_know_what_i_am_doing flag."
        )
        sys.exit(0)  # upstream calls quit(): exit status 0, no training


def _round(x: float, step: int) -> int:
    return max(step, int(round(x / step)) * step)


def _ar_buckets(s: dict) -> list[float]:
    if "ar_buckets" in s:
        out = [b[0] / b[1] if isinstance(b, list) else float(b) for b in s["ar_buckets"]]
    elif s.get("enable_ar_bucket", False):
        lo, hi, n = s["min_ar"], s["max_ar"], s["num_ar_buckets"]
        out = [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)] if n > 1 else [lo]
    else:
        out = [1.0]
    return sorted({round(a, 3) for a in out})


def _side(res) -> float:
    return math.sqrt(res[0] * res[1]) if isinstance(res, list) else float(res)


def _captions(directory: Path) -> dict[str, str] | None:
    cj = directory / "captions.json"
    if cj.exists():
        print("Loading captions JSON")
        data = json.loads(cj.read_text())
        return {k: (v[0] if isinstance(v, list) and v else v) for k, v in data.items()}
    return None


def scan_directory(d: dict, top: dict, framerate: int, round_to: int, global_batch: int) -> list[Item]:
    s = {k: d.get(k, top.get(k)) for k in KEYS if k in d or k in top}
    path = Path(d["path"])
    if not path.is_dir():
        raise RuntimeError(f"Dataset directory {path} does not exist or is not a directory")
    repeats = s.get("num_repeats", 1)
    assert repeats > 0, "num_repeats must be > 0"
    frame_buckets = sorted(set(s.get("frame_buckets", [1])) | {1})
    ars = _ar_buckets(s)
    resolutions = s.get("resolutions")
    if resolutions is None and "size_buckets" not in s:
        raise KeyError("resolutions")
    captions_json = _captions(path)
    items: list[Item] = []
    for f in sorted(path.glob("*")):
        if not f.is_file() or f.suffix in SKIPPED_SUFFIXES:
            continue
        if captions_json is not None:
            caption = captions_json.get(f.name)
            if caption is None:
                print(f"WARNING: Image file {f} does not have an entry in captions.json")
        else:
            txt = f.with_suffix(".txt")
            caption = txt.read_text().strip() if txt.exists() else None
        if caption is None:
            if s.get("skip_empty_caption", True):
                print(f"WARNING: Cound not find caption for {f}. Skipping image.")
                continue
            print(f"WARNING: Cound not find caption for {f}. Using empty caption.")
            caption = ""
        try:
            if f.suffix in VIDEO_EXTENSIONS:
                n, fps, w, h = probe_video(f)
                frames = int(n * framerate / fps) if fps else n
            else:
                w, h = probe_image(f)
                frames = 1
        except Exception as e:  # noqa: BLE001 - upstream skips unreadable media with a warning
            print(f"WARNING: Media file {f} could not be opened. Skipping. The exception was: {e}")
            continue
        if frames > 1:
            fitting = [b for b in frame_buckets if b <= frames and b != 1]
            if not fitting:
                print(f"video with frames={frames} is being skipped because it is too short")
                continue
            bucket_frames = fitting[-1]
        else:
            bucket_frames = 1
        ar = w / h
        ar_bucket = min(ars, key=lambda a: abs(math.log(a) - math.log(ar)))
        for res in resolutions or []:
            side = _side(res)
            bw = _round(math.sqrt(side * side * ar_bucket), round_to)
            bh = _round(side * side / bw, round_to)
            items.append(Item(str(f), caption, (ar_bucket, bw, bh, bucket_frames), repeats))
    # each size bucket is truncated to a multiple of the global batch size
    out: list[Item] = []
    buckets: dict[tuple, list[Item]] = {}
    for it in items:
        buckets.setdefault(it.size_bucket, []).append(it)
    for key, group in buckets.items():
        total = len(group) * repeats
        keep = total - total % global_batch
        if keep == 0:
            print(f"WARNING: size bucket {key} is being completely dropped because it doesn't have enough images")
            continue
        out += group
    return out


def fingerprint(items: list[Item], model_name: str) -> str:
    h = hashlib.sha256(model_name.encode())
    for it in items:
        h.update(json.dumps([it.path, it.caption, list(it.size_bucket), it.repeats]).encode())
    return h.hexdigest()[:16]


class Cache:
    """One cache folder with a sqlite metadata.db holding its fingerprint, as upstream's utils/cache.py keeps it."""

    def __init__(self, path: Path, fp: str, entries: list[str]):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        print("[CACHE] Initializing")
        con = sqlite3.connect(path / "metadata.db")
        con.execute("CREATE TABLE IF NOT EXISTS fingerprint(value)")
        row = con.execute("SELECT value FROM fingerprint").fetchone()
        if row is not None:
            print(f"[CACHE] Existing cache has fingerprint {row[0]}")
            if row[0] != fp:
                print("[CACHE] Fingerprint changed, deleting existing cache files")
                con.close()
                shutil.rmtree(path)
                path.mkdir(parents=True)
                con = sqlite3.connect(path / "metadata.db")
                con.execute("CREATE TABLE fingerprint(value)")
                row = None
        if row is None:
            print(f"[CACHE] Storing new fingerprint: {fp}")
            con.execute("INSERT INTO fingerprint VALUES(?)", (fp,))
        con.execute("CREATE TABLE IF NOT EXISTS items(shard, shard_index)")
        existing = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        print(f"[CACHE] Existing cache length: {existing}")
        if existing < len(entries):
            with open(path / "shard_0.bin", "ab") as shard:
                for i, e in enumerate(entries[existing:], start=existing):
                    shard.write(f"STAND-IN latent placeholder {e}\n".encode())
                    con.execute("INSERT INTO items VALUES(?, ?)", (0, i))
        con.commit()
        con.close()


def build(config: dict, model_name: str, framerate: int, round_to: int, global_batch: int, args, is_i2v: bool) -> list[Item]:
    """Scan every [[directory]], build or check its cache, return the training items."""
    validate_resolutions(config, args)
    top = {k: v for k, v in config.items() if k != "directory"}
    all_items: list[Item] = []
    for d in config.get("directory", []):
        cache_root = Path(d["path"]) / "cache" / model_name
        meta_file = cache_root / "metadata" / "metadata.json"
        if args.regenerate_cache and cache_root.exists():
            shutil.rmtree(cache_root)
        if args.trust_cache and not args.regenerate_cache and meta_file.exists():
            print("Found grouped metadata cache. Directly loading it.")
            items = [Item(i["path"], i["caption"], tuple(i["size_bucket"]), i["repeats"]) for i in json.loads(meta_file.read_text())]
        else:
            print("Grouped metadata is not cached. Computing ungrouped metadata and then grouping.")
            print("Intermediate metadata is not cached. Enumerating all files.")
            items = scan_directory(d, top, framerate, round_to, global_batch)
            meta_file.parent.mkdir(parents=True, exist_ok=True)
            meta_file.write_text(json.dumps([it.__dict__ for it in items]))
        if is_i2v and any(it.size_bucket[3] == 1 for it in items):
            raise AssertionError("i2v/flf2v must train on videos")
        fp = fingerprint(items, model_name)
        by_bucket: dict[tuple, list[str]] = {}
        for it in items:
            by_bucket.setdefault(it.size_bucket, []).append(it.path)
        for (ar, w, h, frames), paths in sorted(by_bucket.items()):
            print(f"caching latents: {(ar, w, h, frames)}")
            out_of_memory_in("cache-latents", hang=True)
            Cache(cache_root / f"cache_{ar:.3f}x{w}x{h}x{frames}" / "latents", fp, paths)
            print(f"caching text embeddings: {(ar, frames)}")
            out_of_memory_in("cache-text-encoder", hang=True)
            Cache(cache_root / f"ar_frames_{ar:.3f}_{frames}" / "text_embeddings_1", fp, paths)
        all_items += items
    if not all_items:
        raise RuntimeError("Processed dataset was empty. Probably caused by all the videos being too short or not enough images for the batch size.")
    return all_items
