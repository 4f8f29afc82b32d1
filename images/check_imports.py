"""Build-time check that a trainer image can import what a run imports (run by both Dockerfiles).

    python check_imports.py [--trainer-dir DIR] [--comfyui DIR] [--bnb-config-keys K1,K2,...] MODULE...

--trainer-dir: import as a script in DIR does (diffusion-pipe's train.py is run as `train.py` from its checkout,
so DIR is sys.path[0] and the working directory; its modules add their submodules to sys.path themselves).
--bnb-config-keys: bitsandbytes' 8-bit AdamW must return these keys from get_config (diffusion-pipe's
optimizers/adamw_8bit.py reads them at every step; bitsandbytes 0.50 dropped two of them).
With no GPU visible (a plain `docker build`): torch.cuda.current_device() is stubbed to return 0 (musubi's
wan/modules/t5.py calls it in a default argument at import time, which raises without a GPU), and with --comfyui
ComfyUI is put in its --cpu mode (diffusion-pipe's modules import comfy.model_management, which reads the GPU's
total memory at import). Both are said in the output.
Every module is tried; all failures are reported with their tracebacks; exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback


def has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def gpu_visible() -> bool:
    if not has_torch():
        return False
    import torch

    return torch.cuda.is_available()


def stub_cuda_device_query() -> None:
    import torch

    torch.cuda.current_device = lambda: 0
    print("check_imports: no GPU visible: torch.cuda.current_device() stubbed to return 0 for these imports", flush=True)


def comfyui_cpu_mode(comfyui: str) -> None:
    """ComfyUI's own no-GPU mode (its --cpu flag): comfy.model_management reads the GPU's memory at import."""
    sys.path.insert(0, os.path.abspath(comfyui))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    print(f"check_imports: no GPU visible: ComfyUI ({comfyui}) set to its --cpu mode for these imports", flush=True)


def bnb_config_missing(keys: list[str]) -> list[str]:
    """The keys bitsandbytes' AdamW8bit.get_config lacks; it reads only the param group and the optimizer's
    arguments, so a CPU parameter does (no GPU, no step)."""
    import bitsandbytes
    import torch

    param = torch.nn.Parameter(torch.zeros(8))
    optimizer = bitsandbytes.optim.AdamW8bit([param], lr=1e-4)
    config = optimizer.get_config(0, 0, optimizer.param_groups[0])
    return [k for k in keys if k not in config]


def fail(failed: list[str], what: str, detail: str) -> None:
    failed.append(what)
    print(f"check_imports: FAIL {what}\n{detail}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainer-dir", help="import from this folder as a script in it would")
    ap.add_argument("--bnb-config-keys", default="", help="comma-separated keys AdamW8bit.get_config must return")
    ap.add_argument("--comfyui", help="ComfyUI checkout (relative to --trainer-dir) to put in --cpu mode when no GPU is visible")
    ap.add_argument("modules", nargs="+")
    args = ap.parse_args(argv)
    if args.trainer_dir:
        os.chdir(args.trainer_dir)
        sys.path.insert(0, os.path.abspath(args.trainer_dir))
    failed = []
    if not gpu_visible():
        if has_torch():
            stub_cuda_device_query()
        if args.comfyui and os.path.isdir(args.comfyui):  # the stand-in diffusion-pipe has no ComfyUI
            try:
                comfyui_cpu_mode(args.comfyui)
            except Exception:
                fail(failed, "ComfyUI --cpu mode", traceback.format_exc())
    for name in args.modules:
        try:
            importlib.import_module(name)
            print(f"check_imports: ok   {name}", flush=True)
        except (Exception, SystemExit):  # a module that exits at import fails the check too
            fail(failed, name, traceback.format_exc())
    keys = [k for k in args.bnb_config_keys.split(",") if k]
    if keys:
        try:
            missing = bnb_config_missing(keys)
        except Exception:
            missing = [f"(get_config failed)\n{traceback.format_exc()}"]
        if missing:
            fail(failed, "bitsandbytes AdamW8bit config", f"AdamW8bit.get_config lacks {', '.join(missing)}")
        else:
            print(f"check_imports: ok   bitsandbytes AdamW8bit.get_config has {', '.join(keys)}", flush=True)
    if failed:
        print(f"check_imports: {len(failed)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
