import json
from pathlib import Path

import pytest

from runner.gpu.memmodel import gpu_gib
from runner.gpu.memory_fit import FIT
from runner.gpu.planner import margin_gib, plan, plan_for_job
from runner.spec import Job

DATA = Path(__file__).parent.parent / "bench" / "data" / "musubi_h100.jsonl"
RUNS = [json.loads(line) for line in DATA.read_text().splitlines()]
RTX_4090_GIB = 24564 / 1024  # memory.total as nvidia-smi reports it


def predicted(r: dict) -> float:
    return gpu_gib(FIT, r["task"], r["weights"], r["checkpointing"], r["swap"], r["tokens"] * r["batch"])


@pytest.mark.parametrize("run", [r for r in RUNS if r["rc"] == 0], ids=lambda r: r["name"])
def test_model_within_stated_error_of_every_measured_run(run):
    assert abs(predicted(run) - run["train_peak_reserved_gib"]) <= FIT.max_abs_error_gib + 1e-9


def test_stated_error_is_small():
    assert FIT.max_abs_error_gib < 0.5 and FIT.max_rel_error < 0.05


@pytest.mark.parametrize("run", [r for r in RUNS if r["cap_gib"]], ids=lambda r: r["name"])
def test_capped_runs_fit_exactly_where_the_planner_says(run):
    """Runs under an allocator cap (an emulated smaller card): the planner's need with margin decides fit or OOM."""
    need = predicted(run)
    assert (need + margin_gib(need, FIT) <= run["cap_gib"]) == (not run["oom"])


@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
def test_seed_bar_1_3b_832x480x81_fits_a_24gb_rtx_4090(trainer):
    p = plan("t2v-1.3B", trainer, 832, 480, 81, 1, RTX_4090_GIB, 64)
    assert p.fits and p.gpu_gib + p.margin_gib <= RTX_4090_GIB
    assert p.activation_checkpointing is True and p.transformer_dtype == "bfloat16"


@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
def test_16gb_card_fits_81_frames_too(trainer):
    assert plan("t2v-1.3B", trainer, 832, 480, 81, 1, 16380 / 1024, 32).fits


def test_small_card_goes_fp8_then_swap_and_8bit():
    p = plan("t2v-1.3B", "musubi", 832, 480, 81, 1, 12.0, 64)
    assert p.fits and p.transformer_dtype == "float8" and p.blocks_to_swap > 0 and p.optimizer_type == "adamw8bit"
    assert p.low_vram


def test_14b_on_24gb_needs_fp8_offload_and_swap_like_upstreams_recipe():
    p = plan("t2v-14B", "diffpipe", 512, 512, 81, 1, RTX_4090_GIB, 64)
    assert p.fits and p.transformer_dtype == "float8" and p.activation_checkpointing == "unsloth" and p.blocks_to_swap >= 10
    assert p.optimizer_type == "AdamW8bitKahan"


def test_cannot_fit_says_what_would():
    p = plan("t2v-1.3B", "musubi", 832, 480, 81, 1, 6.0, 64)
    assert not p.fits
    assert any(s.startswith("fewer frames: ") for s in p.suggestions)
    assert any(s.startswith("lower resolution: ") for s in p.suggestions)


def test_too_little_ram_suggests_more():
    p = plan("t2v-14B", "musubi", 832, 480, 81, 1, RTX_4090_GIB, 16)
    assert not p.fits and any("more host RAM" in s for s in p.suggestions)


def test_plan_for_job_uses_largest_bucket_and_maps_to_memory_fields():
    job = Job.model_validate({
        "name": "seed", "trainer": "musubi", "task": "t2v-1.3B", "models": {}, "memory": "auto",
        "datasets": [{"path": "clips", "resolutions": [[832, 480], 480], "frames": [33, 81]}],
    })
    p = plan_for_job(job, 12.0, 64)
    assert p.tokens == 32760
    memory = job.memory.model_copy(update=p.memory_update())
    assert memory.transformer_dtype == "float8" and memory.blocks_to_swap == p.blocks_to_swap and memory.auto
