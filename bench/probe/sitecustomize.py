"""Observation-only memory probe for the real trainers' processes, loaded as `sitecustomize` by bench/gpu_smoke.py.

Active only when BENCH_LOG is set and the process runs one of the trainers' scripts (so launchers such as
`accelerate launch` or `deepspeed` never touch CUDA). It writes JSON lines to BENCH_LOG:
  start   the GPU, and the allocator cap when BENCH_CAP_GIB is set (set_per_process_memory_fraction: a smaller
          card for PyTorch's allocator; the CUDA context and libraries stay outside the cap, as on a real card)
  step    after every optimizer step (torch's global step hook, so any optimizer class): step time, the
          allocator's peak allocated/reserved since the last record, and device memory in use (mem_get_info)
  phase   end of a phase: its peaks and the process's peak RSS (VmHWM); diffusion-pipe's train.py caches
          latents and text embeddings in-process, so its `DatasetManager.cache` closes a "caching" phase, after
          which peaks and VmHWM are reset; the process's exit closes the last phase.
Training math is untouched: hooks only synchronize and read or reset counters."""

import atexit
import importlib.abc
import json
import os
import sys
import time

SCRIPTS = {"train.py", "wan_train_network.py", "wan_cache_latents.py", "wan_cache_text_encoder_outputs.py", "wan_generate_video.py"}
_ACTIVE = bool(os.environ.get("BENCH_LOG")) and os.path.basename(sys.argv[0] if sys.argv else "") in SCRIPTS

if _ACTIVE:
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    GIB = float(2**30)
    LOG = os.environ["BENCH_LOG"]
    RANK = int(os.environ.get("RANK", 0))  # one process per GPU under accelerate or the deepspeed launcher
    STATE = {"phase": os.environ.get("BENCH_PHASE", os.path.basename(sys.argv[0])), "step": 0, "t": time.time()}

    def _write(rec):
        rec.update(t=round(time.time(), 3), pid=os.getpid(), rank=RANK, phase=rec.get("phase", STATE["phase"]))
        with open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _vm_hwm_gib():
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return round(kb / 2**20, 3)

    def _mem():
        if not torch.cuda.is_initialized():
            return {}
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        return {"peak_alloc_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
                "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
                "reserved_gib": round(torch.cuda.memory_reserved() / GIB, 3),
                "device_used_gib": round((total - free) / GIB, 3)}

    def _reset():
        if torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def close_phase(next_phase=None):
        try:
            mem = _mem()
        except Exception as e:  # a CUDA error ended the process: keep the host figure
            mem = {"cuda_error": repr(e)[:200]}
        _write({"event": "phase", "host_peak_rss_gib": _vm_hwm_gib(), **mem})
        if next_phase:
            _reset()
            with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS
                f.write("5")
            STATE.update(phase=next_phase, t=time.time())
            if os.environ.get("BENCH_CAP_NEXT_GIB"):  # the card minus what sits outside the allocator in this phase
                torch.cuda.set_per_process_memory_fraction(float(os.environ["BENCH_CAP_NEXT_GIB"]) * GIB / props.total_memory, 0)
                _write({"event": "cap", "cap_gib": float(os.environ["BENCH_CAP_NEXT_GIB"])})

    props = torch.cuda.get_device_properties(0)
    start = {"event": "start", "gpu": props.name, "total_gib": round(props.total_memory / GIB, 3),
             "torch": torch.__version__, "argv": sys.argv}
    if os.environ.get("BENCH_CAP_GIB"):
        torch.cuda.set_per_process_memory_fraction(float(os.environ["BENCH_CAP_GIB"]) * GIB / props.total_memory, 0)
        start["cap_gib"] = float(os.environ["BENCH_CAP_GIB"])
    _write(start)

    def _after_step(optimizer, args, kwargs):
        now = time.time()
        STATE["step"] += 1
        _write({"event": "step", "step": STATE["step"], "dt": round(now - STATE["t"], 4), **_mem()})
        _reset()
        STATE["t"] = time.time()

    register_optimizer_step_post_hook(_after_step)

    def _patch_diffpipe_cache(module):
        original = module.DatasetManager.cache

        def cache(self, *a, **k):
            result = original(self, *a, **k)
            close_phase("train")
            return result

        module.DatasetManager.cache = cache

    class _PatchOnImport(importlib.abc.MetaPathFinder):
        patches = {"utils.dataset": _patch_diffpipe_cache}

        def find_spec(self, name, path, target=None):
            patch = self.patches.get(name)
            if patch is None:
                return None
            for finder in sys.meta_path:
                spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
                if spec is not None:
                    break
            else:
                return None
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                patch(module)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _PatchOnImport())
    atexit.register(close_phase)
