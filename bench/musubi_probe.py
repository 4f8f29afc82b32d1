#!/usr/bin/env python3
"""Run musubi-tuner's Wan trainer unchanged, recording peak GPU memory and wall time of each step.

Usage: python bench/musubi_probe.py [wan_train_network.py arguments]   (musubi's src/ on PYTHONPATH)

It observes, it does not alter the math: it wraps two methods of musubi's NetworkTrainer,
`process_batch` (a step starts; the first call also closes the setup phase) and
`on_post_optimizer_step` (a step ends, right after optimizer.step / zero_grad).
Environment:
  BENCH_LOG      JSON-lines file the events go to (required)
  BENCH_CAP_GIB  cap the caching allocator at this many GiB (torch.cuda.set_per_process_memory_fraction)
                 to act as a smaller card; the CUDA context (~0.5 GiB) is outside the cap.
"""

from __future__ import annotations

import atexit
import json
import os
import resource
import runpy
import sys
import time

import torch

GIB = float(2**30)
LOG = os.environ["BENCH_LOG"]
_t0 = time.perf_counter()


def emit(event: str, **fields: object) -> None:
    with open(LOG, "a") as f:
        f.write(json.dumps({"event": event, "t": round(time.perf_counter() - _t0, 3), **fields}) + "\n")


def memory() -> dict[str, float]:
    free, total = torch.cuda.mem_get_info()
    return {
        "peak_alloc_gib": torch.cuda.max_memory_allocated() / GIB,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
        "reserved_gib": torch.cuda.memory_reserved() / GIB,
        # what nvidia-smi would show for the device now: reserved memory + CUDA context + other processes
        "device_used_gib": (total - free) / GIB,
        "host_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }


def main() -> None:
    props = torch.cuda.get_device_properties(0)
    cap = os.environ.get("BENCH_CAP_GIB")
    if cap:
        torch.cuda.set_per_process_memory_fraction(float(cap) * GIB / props.total_memory, 0)
    emit("start", gpu=props.name, total_gib=props.total_memory / GIB, cap_gib=float(cap) if cap else None,
         torch=torch.__version__, argv=sys.argv[1:])

    from musubi_tuner.training import trainer_base

    trainer = trainer_base.NetworkTrainer
    state: dict[str, float | int | None] = {"step": 0, "t": None}
    process_batch, post_step = trainer.process_batch, trainer.on_post_optimizer_step

    def timed_process_batch(self, *args, **kwargs):
        torch.cuda.synchronize()
        if state["step"] == 0 and state["t"] is None:
            emit("setup_done", **memory())
            torch.cuda.reset_peak_memory_stats()
        state["t"] = time.perf_counter()
        return process_batch(self, *args, **kwargs)

    def timed_post_step(self, *args, **kwargs):
        result = post_step(self, *args, **kwargs)
        torch.cuda.synchronize()
        state["step"] = int(state["step"] or 0) + 1
        emit("step", step=state["step"], dt=time.perf_counter() - float(state["t"] or 0), **memory())
        torch.cuda.reset_peak_memory_stats()
        return result

    trainer.process_batch = timed_process_batch
    trainer.on_post_optimizer_step = timed_post_step
    atexit.register(lambda: emit("exit", steps=state["step"]))

    sys.argv = ["wan_train_network.py", *sys.argv[1:]]
    runpy.run_module("musubi_tuner.wan_train_network", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
