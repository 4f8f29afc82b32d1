"""The log classifier (runner.jobs.logwatch) on the messages trainers really print, and the advice after an out-of-memory.

Message texts follow their sources: torch's c10/cuda/CUDACachingAllocator.cpp in its three wordings (before 2.1,
2.1's "capacty", since 2.2), C10_CUDA_CHECK's "CUDA error: out of memory", bitsandbytes' csrc/ops.cuh,
DeepSpeed's csrc/includes/context.h and NCCL's checks.h.
"""

from __future__ import annotations

import pytest

from runner.jobs import logwatch
from tests.conftest import EXAMPLES

NEW = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.95 GiB. GPU 0 has a total capacity of 14.57 GiB of which "
       "1.58 GiB is free. Process 2493055 has 12.02 GiB memory in use. Including non-PyTorch memory, this process has 966.00 MiB "
       "memory in use. Of the allocated memory 734.07 MiB is allocated by PyTorch, and 33.93 MiB is reserved by PyTorch but "
       "unallocated. If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to "
       "avoid fragmentation.  See documentation for Memory Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)")
TYPO_2_1 = ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 1 has a total capacty of 23.65 GiB of "
            "which 5.06 MiB is free. Of the allocated memory 22.90 GiB is allocated by PyTorch, and 280.72 MiB is reserved by PyTorch "
            "but unallocated. If reserved but unallocated memory is large try setting max_split_size_mb to avoid fragmentation.  See "
            "documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF")
ON_AN_11_5_GIB_CARD = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 40.00 MiB. GPU 0 has a total capacity of "
                       "11.50 GiB of which 17.25 MiB is free. Process 1 has 11.48 GiB memory in use.")
OLD = ("RuntimeError: CUDA out of memory. Tried to allocate 36.00 MiB (GPU 0; 7.93 GiB total capacity; 130.35 MiB already allocated; "
       "47.06 MiB free; 188.00 MiB reserved in total by PyTorch) If reserved memory is >> allocated memory try setting "
       "max_split_size_mb to avoid fragmentation.  See documentation for Memory Management and PYTORCH_CUDA_ALLOC_CONF")
OLD_ALLOWED = ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.69 GiB total capacity; 12.00 GiB "
               "already allocated; 9.37 GiB free; 14.00 GiB allowed; 12.00 GiB reserved in total by PyTorch)")
WITHOUT_FIGURES = [
    "RuntimeError: CUDA error: out of memory",
    "torch.AcceleratorError: CUDA error: out of memory",
    "RuntimeError: CUDA driver error: out of memory",
    "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "Error out of memory at line 380 in file /src/csrc/ops.cu",  # bitsandbytes, then exit(1)
    "cuda API failed with status 2: out of memory",  # bitsandbytes
    "CUDA error 2 at /opt/venv/lib/python3.12/site-packages/deepspeed/ops/csrc/includes/context.h:54",
    "Cuda failure 'out of memory'",  # NCCL, under DeepSpeed's or DDP's collectives
]
MERELY_MENTIONS_MEMORY = [
    "[2026-11-29 10:00:00,000] [INFO] [utils.py:781:see_memory_usage] MA 10.53 GB         Max_MA 11.8 GB         CA 11.8 GB         Max_CA 12 GB ",
    "[2026-11-29 10:00:00,000] [INFO] [utils.py:789:see_memory_usage] CPU Virtual Memory:  used = 20.1 GB, percent = 16.0%",
    "Model parameter memory: 2834.00 MB",
    "If reserved but unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.",
    "INFO: a CUDA out of memory error is likely at batch size 16 on 12 GB; use --fp8_t5",
    "caching text embeddings: (1.0, 33)",
    "steps: 3 loss: 0.1167 iter time (s): 2.990 samples/sec: 0.334",
]


@pytest.mark.parametrize("text,gpu,total,free,tried", [
    (NEW, 0, 14.57, 1.58, 1.95),
    (TYPO_2_1, 1, 23.65, 5.06 / 1024, 20 / 1024),
    (OLD, 0, 7.93, 47.06 / 1024, 36 / 1024),
    (OLD_ALLOWED, 0, 23.69, 9.37, 2.0),
])
def test_torch_allocator_messages_are_read_with_their_figures(text, gpu, total, free, tried):
    assert logwatch.classify(text).oom
    oom = logwatch.OutOfMemory.parse(text, "train")
    assert (oom.gpu, oom.total_gib, oom.free_gib, oom.tried_gib) == (gpu, pytest.approx(total), pytest.approx(free), pytest.approx(tried))
    assert f"GPU {gpu} has {total:.2f} GiB in all" in oom.memory


@pytest.mark.parametrize("text", WITHOUT_FIGURES)
def test_other_out_of_memory_messages_are_found_without_figures(text):
    assert logwatch.classify(text).oom
    oom = logwatch.OutOfMemory.parse(text, "train")
    assert oom.total_gib is None and oom.memory == "the message reports no GPU memory figures"
    assert oom.summary() == "CUDA out of memory in train"


@pytest.mark.parametrize("text", MERELY_MENTIONS_MEMORY)
def test_a_line_that_merely_mentions_memory_is_not_an_out_of_memory(text):
    assert not logwatch.classify(text).oom
    assert logwatch.scan([text], "diffpipe").oom is None


def test_other_kinds_of_line():
    assert logwatch.classify("[runner] step 2/3 cache-text-encoder start: python x.py").step == "cache-text-encoder"
    assert logwatch.classify("[runner] step 2/3 cache-text-encoder start: python x.py").marker == "2/3 cache-text-encoder start"
    assert logwatch.classify("steps:  40%|####  | 4/10 [00:02<00:03, 2.1it/s]").progress == (4, 10)
    assert logwatch.classify("steps: 3 loss: nan iter time (s): 0.1").nan
    assert logwatch.classify("Traceback (most recent call last):").traceback
    assert logwatch.classify('  File "/opt/diffusion-pipe/utils/dataset.py", line 1226, in _handle_task').frame == "/opt/diffusion-pipe/utils/dataset.py"
    assert logwatch.classify("caching latents: /data/0-clips").caching == logwatch.CACHE_LATENTS


def test_musubi_phase_is_the_step_running():
    watch = logwatch.scan(["[runner] step 1/3 cache-latents exit 0", "[runner] step 2/3 cache-text-encoder start: python -m …",
                           "Traceback (most recent call last):", NEW], "musubi")
    assert watch.oom.phase == "cache-text-encoder" and watch.oom.total_gib == pytest.approx(14.57)


DIFFPIPE_CACHING = ["[runner] step 1/1 train start: deepspeed --num_gpus=1 train.py --deepspeed --config /job/diffpipe.toml",
                    "caching latents: /data/0-clips", "caching latents: (1.0, 33)", "[CACHE] Initializing",
                    "caching text embeddings: /data/0-clips", "caching text embeddings: (1.0, 33)"]


def test_diffpipe_caching_is_told_from_training_by_the_traceback():
    in_caching = logwatch.scan(DIFFPIPE_CACHING + [
        "Traceback (most recent call last):",
        '  File "/opt/diffusion-pipe/train.py", line 516, in <module>',
        '  File "/opt/diffusion-pipe/utils/dataset.py", line 1189, in cache',
        '  File "/opt/diffusion-pipe/utils/dataset.py", line 1226, in _handle_task',
        '  File "/opt/venv/lib/python3.12/site-packages/torch/nn/modules/module.py", line 1369, in to',
        NEW], "diffpipe")
    assert in_caching.oom.phase == logwatch.CACHE_TEXT
    # after caching, diffusion-pipe reloads its caches (printing the same "caching …" lines), then moves the DiT to the GPU
    in_training = logwatch.scan(DIFFPIPE_CACHING + [
        "Traceback (most recent call last):",
        '  File "/opt/diffusion-pipe/train.py", line 618, in <module>',
        '  File "/opt/venv/lib/python3.12/site-packages/deepspeed/__init__.py", line 203, in initialize',
        NEW], "diffpipe")
    assert in_training.oom.phase == logwatch.TRAIN


def test_a_ranks_prefix_is_read_through():
    watch = logwatch.scan(DIFFPIPE_CACHING + [
        "[rank0]: Traceback (most recent call last):",
        '[rank0]:   File "/opt/diffusion-pipe/utils/dataset.py", line 1226, in _handle_task',
        f"[rank0]: {NEW}"], "diffpipe")
    assert watch.oom.phase == logwatch.CACHE_TEXT and watch.oom.total_gib == pytest.approx(14.57)


def test_the_first_out_of_memory_is_kept():
    watch = logwatch.scan(["[runner] step 3/3 train start: accelerate launch …", OLD, "[runner] step 3/3 train exit 1", NEW], "musubi")
    assert watch.oom.total_gib == pytest.approx(7.93) and watch.oom.phase == "train"


# --- the advice -----------------------------------------------------------------------------------


def test_report_gives_the_settings_runner_plan_picks_for_the_card():
    # measured on an H200: diffusion-pipe's caching moves the whole bf16 umT5 to the GPU (~12.6 GiB on the device)
    job = EXAMPLES / "t2v-1.3B-diffpipe.yaml"
    oom = logwatch.OutOfMemory.parse(ON_AN_11_5_GIB_CARD, logwatch.CACHE_TEXT)
    report = logwatch.oom_report(oom, str(job), oom.total_gib, None, stopped=True)
    assert report.startswith("CUDA ran out of GPU memory in cache-text-encoder: GPU 0 has 11.50 GiB in all, 0.02 GiB was free")
    assert "runner stopped its container" in report
    assert f"`runner plan {job} --vram 11.5` picks " in report and "memory.text_encoder_dtype: float8" in report
    assert "\n" not in report


def test_report_on_a_card_too_small_even_for_caching_says_so():
    oom = logwatch.OutOfMemory.parse(OLD, logwatch.CACHE_TEXT)
    report = logwatch.oom_report(oom, str(EXAMPLES / "t2v-1.3B-diffpipe.yaml"), oom.total_gib, None, stopped=True)
    assert "Nothing fits this job in 7.93 GiB" in report and "model caching alone needs about" in report


def test_report_when_nothing_fits_gives_the_planners_suggestions():
    oom = logwatch.OutOfMemory.parse(OLD, "train")
    report = logwatch.oom_report(oom, str(EXAMPLES / "t2v-14B-24gb-diffpipe.yaml"), 2.0, None, stopped=False)
    assert "Nothing fits this job in 2 GiB" in report and "a GPU with more memory" in report
    assert "stopped its container" not in report


def test_report_for_a_job_that_already_runs_with_the_plan(tmp_path):
    job = tmp_path / "auto.yaml"
    job.write_text((EXAMPLES / "t2v-1.3B-musubi.yaml").read_text() + "memory: auto\n")
    report = logwatch.oom_report(logwatch.OutOfMemory.parse(NEW, "train"), str(job), 14.57, None, stopped=False)
    assert "The job already runs with what `runner plan" in report and "Lower the resolution or the frame count, or use a GPU with more memory." in report


def test_report_without_card_memory_or_job_says_how_to_plan(tmp_path):
    oom = logwatch.OutOfMemory.parse(WITHOUT_FIGURES[0], "train")
    for job, vram in ((EXAMPLES / "t2v-1.3B-musubi.yaml", None), (tmp_path / "gone.yaml", 24.0)):
        report = logwatch.oom_report(oom, str(job), vram, None, stopped=False)
        assert f"Run `runner plan {job} --vram N` with the card's memory in GiB and set what it picks under `memory:`." in report
