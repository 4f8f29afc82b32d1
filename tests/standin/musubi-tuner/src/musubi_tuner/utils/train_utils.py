"""STAND-IN for musubi_tuner.utils.train_utils (runner's CI test double, no GPU, no model math).

Honours upstream's contract at 30c658c for what names a run's saves: the name formats and the functions the
training loop calls through this module at each save (`get_epoch_ckpt_name`, `get_step_ckpt_name`,
`save_and_remove_state_on_epoch_end`, `save_and_remove_state_stepwise`, `save_state_on_train_end`), with the
same signatures, so code that wraps them (runner's resume_counters.py) acts here as there.
"""

from __future__ import annotations

import os
import shutil

EPOCH_STATE_NAME = "{}-{:06d}-state"
EPOCH_FILE_NAME = "{}-{:06d}"
LAST_STATE_NAME = "{}-state"
STEP_STATE_NAME = "{}-step{:08d}-state"
STEP_FILE_NAME = "{}-step{:08d}"


def get_epoch_ckpt_name(model_name, epoch_no: int):
    return EPOCH_FILE_NAME.format(model_name, epoch_no) + ".safetensors"


def get_step_ckpt_name(model_name, step_no: int):
    return STEP_FILE_NAME.format(model_name, step_no) + ".safetensors"


def get_last_ckpt_name(model_name):
    return model_name + ".safetensors"


def _remove_old(path: str) -> None:
    if os.path.exists(path):
        print(f"removing old state: {path}", flush=True)
        shutil.rmtree(path)


def save_and_remove_state_on_epoch_end(args, accelerator, epoch_no: int):
    print(f"saving state at epoch {epoch_no}", flush=True)
    accelerator.save_state(os.path.join(args.output_dir, EPOCH_STATE_NAME.format(args.output_name, epoch_no)))
    last_n = args.save_last_n_epochs_state if args.save_last_n_epochs_state else args.save_last_n_epochs
    if last_n is not None:
        _remove_old(os.path.join(args.output_dir, EPOCH_STATE_NAME.format(args.output_name, epoch_no - args.save_every_n_epochs * last_n)))


def save_and_remove_state_stepwise(args, accelerator, step_no: int):
    print(f"saving state at step {step_no}", flush=True)
    accelerator.save_state(os.path.join(args.output_dir, STEP_STATE_NAME.format(args.output_name, step_no)))
    last_n = args.save_last_n_steps_state if args.save_last_n_steps_state else args.save_last_n_steps
    if last_n is not None:
        remove = step_no - last_n - 1
        remove -= remove % args.save_every_n_steps
        if remove > 0:
            _remove_old(os.path.join(args.output_dir, STEP_STATE_NAME.format(args.output_name, remove)))


def save_state_on_train_end(args, accelerator):
    print("saving last state.", flush=True)
    accelerator.save_state(os.path.join(args.output_dir, LAST_STATE_NAME.format(args.output_name)))
