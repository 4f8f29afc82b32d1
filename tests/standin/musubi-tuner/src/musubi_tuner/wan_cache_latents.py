"""STAND-IN for musubi_tuner.wan_cache_latents (runner's CI test double, no GPU, no model math).

Same flags as upstream at 30c658c (cache_latents common parser + Wan additions). Reads the dataset config with
upstream's rules, counts frames with PyAV and writes one zero-filled latent file per image
(`{stem}_{W:04d}x{H:04d}_wan.safetensors`) or per video clip (`{stem}_{pos:05d}-{frames:03d}_{W:04d}x{H:04d}_wan.safetensors`,
W x H = the bucket for videos, the original size for images) into each cache_directory, then deletes stale `*_wan.safetensors` unless --keep_cache.
--vae is required and must exist; --clip implies --i2v and must exist.
"""

from __future__ import annotations

import argparse
import logging
import os

from musubi_tuner._standin import banner, out_of_memory_in, write_safetensors
from musubi_tuner.dataset import config_utils, items

logger = logging.getLogger(__name__)


def setup_parser_common() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_config", type=str, required=True, help="path to dataset config .toml file")
    parser.add_argument("--vae", type=str, required=False, default=None, help="path to vae checkpoint")
    parser.add_argument("--vae_dtype", type=str, default=None, help="data type for VAE, default is bfloat16")
    parser.add_argument("--device", type=str, default=None, help="device to use, default is cuda if available")
    parser.add_argument("--batch_size", type=int, default=None, help="batch size, override dataset config")
    parser.add_argument("--num_workers", type=int, default=None, help="number of workers for dataset")
    parser.add_argument("--skip_existing", action="store_true", help="skip existing cache files")
    parser.add_argument("--keep_cache", action="store_true", help="keep cache files not in dataset")
    parser.add_argument("--debug_mode", type=str, default=None, choices=["image", "console", "video"], help="debug mode")
    parser.add_argument("--console_width", type=int, default=80, help="debug mode: console width")
    parser.add_argument("--console_back", type=str, default=None, help="debug mode: console background color")
    parser.add_argument("--console_num_images", type=int, default=None, help="debug mode: number of images to show")
    parser.add_argument("--disable_cudnn_backend", action="store_true", help="disable cuDNN backend")
    parser.add_argument("--vae_tiling", action="store_true", help="enable VAE tiling")
    parser.add_argument("--vae_chunk_size", type=int, default=None, help="VAE chunk size")
    parser.add_argument("--vae_spatial_tile_sample_min_size", type=int, default=None, help="VAE spatial tile minimum size")
    return parser


def wan_setup_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--vae_cache_cpu", action="store_true", help="cache features in VAE on CPU")
    parser.add_argument("--i2v", action="store_true", help="I2V mode (image latents)")
    parser.add_argument("--clip", type=str, default=None, help="CLIP checkpoint path (Wan2.1 I2V)")
    parser.add_argument("--one_frame", action="store_true", help="one frame sampling cache")
    return parser


def _latent_tensors(bucket: tuple[int, int], frames: int, i2v: bool, clip: bool) -> dict:
    f, h, w = (frames - 1) // 4 + 1, bucket[1] // 8, bucket[0] // 8
    t = {f"latents_{f}x{h}x{w}_bf16": ("BF16", [16, f, h, w])}
    if i2v:
        t[f"latents_image_{f}x{h}x{w}_bf16"] = ("BF16", [20, f, h, w])  # 4 mask + 16 latent channels
    if clip:
        t["clip_fp16"] = ("F16", [257, 1280])
    return t


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = wan_setup_parser(setup_parser_common())
    args = parser.parse_args()
    banner("musubi-tuner wan_cache_latents")
    if args.clip is not None:
        args.i2v = True

    logger.info(f"Load dataset config from {args.dataset_config}")
    datasets = config_utils.generate(config_utils.load_user_config(args.dataset_config), args)
    if args.debug_mode is not None:
        logger.info("debug mode: nothing to show in the stand-in")
        return

    assert args.vae is not None, "vae checkpoint is required"
    logger.info(f"Loading VAE model from {args.vae}")
    if not os.path.exists(args.vae):
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{args.vae}'")
    if args.clip is not None:
        logger.info(f"Loading CLIP model from {args.clip}")
        if not os.path.exists(args.clip):
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{args.clip}'")
    out_of_memory_in("cache-latents")

    for i, p in enumerate(datasets):
        logger.info(f"Encoding dataset [{i}]")
        cache = items.cache_dir(p)
        os.makedirs(cache, exist_ok=True)
        produced: set[str] = set()
        for m in items.list_media(p):
            caption = items.read_caption(m)  # upstream's loader reads it with the pixels
            del caption
            if p.is_video:
                count, size = items.video_frames(p, m.path)
                bucket = items.bucket_resolution(p, size, bucketing=True)  # video caching always buckets
                # named by the bucket the frames are resized to (seen with the real musubi on a GPU: bench/README.md)
                todo = [(items.video_cache_name(m.path, pos, n, bucket), n) for pos, n in items.clips(p, count)]
                if not todo:
                    logger.info(f"{os.path.basename(m.path)}: {count} frames, shorter than every target frame count, no clip")
            else:
                size = items.image_size(m.path)
                bucket = items.bucket_resolution(p, size, bucketing=p.enable_bucket)
                todo = [(items.image_cache_name(m.path, size), 1)]
            for name, frames in todo:
                path = os.path.join(cache, name)
                produced.add(os.path.normpath(path))
                if args.skip_existing and os.path.exists(path):
                    continue
                meta = {"architecture": "wan", "width": str(bucket[0]), "height": str(bucket[1]), "format_version": "1.0.1"}
                if p.is_video:
                    meta["frame_count"] = str(frames)
                write_safetensors(path, _latent_tensors(bucket, frames, args.i2v, args.clip is not None), meta)
                logger.info(f"saved {path}")
        if not args.keep_cache:
            items.remove_stale(cache, "*_wan.safetensors", produced, logger)


if __name__ == "__main__":
    main()
