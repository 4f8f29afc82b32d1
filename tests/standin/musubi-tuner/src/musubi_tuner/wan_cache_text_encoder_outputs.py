"""STAND-IN for musubi_tuner.wan_cache_text_encoder_outputs (runner's CI test double, no GPU, no model math).

Same flags as upstream at 30c658c (--t5 required). Writes `{stem}_wan_te.safetensors` (zeros, key
`varlen_t5_bf16`, caption in the metadata) per media file into each cache_directory and deletes stale
`*_wan_te.safetensors` unless --keep_cache. The --t5 file must exist.
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
    parser.add_argument("--device", type=str, default=None, help="device to use, default is cuda if available")
    parser.add_argument("--batch_size", type=int, default=None, help="batch size, override dataset config if dataset batch size > this")
    parser.add_argument("--num_workers", type=int, default=None, help="number of workers for dataset. default is cpu count-1")
    parser.add_argument("--skip_existing", action="store_true", help="skip existing cache files")
    parser.add_argument("--keep_cache", action="store_true", help="keep cache files not in dataset")
    return parser


def wan_setup_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--t5", type=str, default=None, required=True, help="text encoder (T5) checkpoint path")
    parser.add_argument("--fp8_t5", action="store_true", help="use fp8 for Text Encoder model")
    return parser


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = wan_setup_parser(setup_parser_common()).parse_args()
    banner("musubi-tuner wan_cache_text_encoder_outputs")
    logger.info(f"Load dataset config from {args.dataset_config}")
    datasets = config_utils.generate(config_utils.load_user_config(args.dataset_config), args)

    logger.info(f"loading T5: {args.t5}")
    if not os.path.exists(args.t5):
        raise FileNotFoundError(f"[Errno 2] No such file or directory: '{args.t5}'")
    out_of_memory_in("cache-text-encoder")

    for i, p in enumerate(datasets):
        logger.info(f"Encoding dataset [{i}]")
        cache = items.cache_dir(p)
        os.makedirs(cache, exist_ok=True)
        produced: set[str] = set()
        for m in items.list_media(p):
            caption = items.read_caption(m)
            path = os.path.join(cache, items.te_cache_name(m.path))
            produced.add(os.path.normpath(path))
            if args.skip_existing and os.path.exists(path):
                continue
            tokens = min(512, len(caption.split()) + 1)
            meta = {"architecture": "wan", "caption1": caption, "format_version": "1.0.1"}
            write_safetensors(path, {"varlen_t5_bf16": ("BF16", [tokens, 4096])}, meta)
            logger.info(f"saved {path}")
        if not args.keep_cache:
            items.remove_stale(cache, "*_wan_te.safetensors", produced, logger)


if __name__ == "__main__":
    main()
