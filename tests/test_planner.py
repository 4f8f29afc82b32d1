import json
from pathlib import Path

import pytest

from runner.gpu.memmodel import dit_bf16_gib, gpu_gib
from runner.gpu.memory_fit import FIT
from runner.gpu.planner import CACHING, VERIFIED, margin_gib, model_size, plan, plan_for_job
from runner.spec import Job, load_job

DATA = Path(__file__).parent.parent / "bench" / "data"
RUNS = [json.loads(line) for line in (DATA / "musubi_h100.jsonl").read_text().splitlines()]
PHASES = [json.loads(line) for name in ("gpu_h200.jsonl", "gpu_h200_wan22.jsonl") for line in (DATA / name).read_text().splitlines()]
EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))
RTX_4090_GIB = 24564 / 1024  # memory.total as nvidia-smi reports it


def predicted(r: dict) -> float:
    return gpu_gib(FIT, r["task"], r["weights"], r["checkpointing"], r["swap"], r["tokens"] * r["batch"])


@pytest.mark.parametrize("run", [r for r in RUNS if r["rc"] == 0], ids=lambda r: r["name"])
def test_musubi_training_model_is_never_below_a_measured_run_and_within_its_stated_error(run):
    error = predicted(run) - run["train_peak_reserved_gib"]
    assert 0 <= error <= FIT.max_abs_error_gib + 1e-9


def test_stated_error_is_small():
    assert FIT.max_abs_error_gib < 0.3 and FIT.max_rel_error < 0.06


@pytest.mark.parametrize("row", [r for r in PHASES if r.get("device_peak_gib")], ids=lambda r: f"{r['name']}:{r['phase']}")
def test_estimate_of_every_measured_phase_is_at_least_the_device_peak_and_at_most_15_percent_above(row):
    import sys

    sys.path.insert(0, str(DATA.parent))
    from fit_planner import estimate

    assert row["device_peak_gib"] <= estimate(FIT, row) <= 1.15 * row["device_peak_gib"]


@pytest.mark.parametrize("row", [r for r in PHASES if r["trainer"] == "diffpipe" and r["phase"] == "train" and not r["swap"]],
                         ids=lambda r: r["name"])
def test_diffpipe_host_ram_estimate_covers_every_measured_run_bf16_or_cast_file(row):
    """diffusion-pipe reads the whole DiT into RAM: a bf16 file once, an fp16 one (Wan2.2's, TI2V-5B's) twice for a while."""
    from runner.gpu.memmodel import host_gib

    bf16 = row.get("dit_file_dtype", "bf16") == "bf16"
    estimate = host_gib(FIT, row["task"], row["checkpointing"], row["tokens"], trainer="diffpipe", dit_file_bf16=bf16)
    assert row["host_peak_rss_gib"] <= estimate <= 1.15 * row["host_peak_rss_gib"]


def test_the_planner_reads_the_dit_files_dtype_from_its_name():
    """Wan2.1 14B's ComfyUI file is bf16 (read once), Wan2.2 A14B's fp16 (read and cast): about 13 GiB more host RAM."""
    wan21, wan22 = (plan_for_job(load_job(EXAMPLES[0].parent / name), 80.0, 256.0) for name in ("t2v-14B-24gb-diffpipe.yaml", "t2v-A14B-diffpipe.yaml"))
    cast, same = FIT.trainer_host_dit_factor[("diffpipe", "cast")], FIT.trainer_host_dit_factor[("diffpipe", "same")]
    assert wan22.host_gib - wan21.host_gib >= (cast - same) * dit_bf16_gib("14B") - 0.1


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


def test_small_card_goes_fp8_and_caches_with_fp8_t5():
    p = plan("t2v-1.3B", "musubi", 832, 480, 81, 1, 12.0, 64)
    assert p.fits and p.transformer_dtype == "float8" and p.low_vram
    assert p.text_encoder_dtype == "float8" and p.memory_update()["text_encoder_batch"] == 16


def test_diffpipe_12gb_caches_with_fp8_umt5_because_bf16_umt5_alone_is_12_6_gib():
    p = plan("t2v-1.3B", "diffpipe", 832, 480, 33, 1, 12.0, 64)
    assert p.fits and p.transformer_dtype == "bfloat16" and p.text_encoder_dtype == "float8" and "text_encoder_batch" not in p.memory_update()
    assert p.gpu_gib == max(p.caching_gpu_gib, p.training_gpu_gib)


def test_caching_can_be_the_larger_phase():
    p = plan("t2v-1.3B", "diffpipe", 832, 480, 33, 1, 24.0, 64)
    assert p.text_encoder_dtype == "bfloat16" and p.caching_gpu_gib > p.training_gpu_gib == pytest.approx(10.17, abs=0.05)
    assert p.gpu_gib == p.caching_gpu_gib


@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
def test_8gb_card_does_not_fit_model_caching_and_says_so(trainer):
    p = plan("t2v-1.3B", trainer, 832, 480, 33, 1, 8.0, 64)
    assert not p.fits and any(s.startswith("model caching alone needs") for s in p.suggestions)


def test_diffpipe_14b_host_ram_covers_the_whole_bf16_dit_read_into_ram():
    p = plan("t2v-14B", "diffpipe", 512, 512, 33, 1, RTX_4090_GIB, 128)
    assert p.fits and p.host_gib >= 41


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
@pytest.mark.parametrize("card", [8, 12, 16, 24, 48])
def test_every_auto_plan_for_the_examples_uses_settings_that_ran_on_a_gpu(example, trainer, card):
    job = load_job(example)
    p = plan_for_job(job.model_copy(update={"trainer": type(job.trainer)(trainer)}), card, 64)
    training = (p.transformer_dtype[:4].replace("floa", "fp8").replace("bflo", "bf16"), p.checkpointing, p.blocks_to_swap, p.optimizer_8bit)
    assert training in VERIFIED[(trainer, model_size(job.task.value))]
    caching = ("fp8" if p.text_encoder_dtype == "float8" else "bf16", p.text_encoder_batch)
    assert caching in CACHING[trainer]


def test_ti2v_5b_on_diffpipe_rests_on_its_one_measured_size_and_covers_what_it_needed():
    """The 5B run (480x288x17, one H200): 13.18 GiB caching, 13.86 training, 21.1 GiB host RAM."""
    p = plan("ti2v-5B", "diffpipe", 480, 288, 17, 1, 24.0, 64)
    assert p.fits and p.basis == "one size" and p.estimate_note.startswith("MEASURED AT ONE SIZE, SLOPE SCALED: ti2v-5B")
    assert p.training_gpu_gib >= 13.86 and p.caching_gpu_gib >= 13.18 and p.host_gib >= 21.1
    assert plan("t2v-1.3B", "diffpipe", 480, 288, 17, 1, 24.0, 64).estimate_note is None


def test_diffpipe_caches_5b_with_its_larger_vae_still_reserved_under_umt5():
    """The 5B run's caching reserved 0.56 GiB more than the 1.3B's at the same umT5 allocation peak (10.85 GiB): the VAE
    left in PyTorch's cache. The model adds the whole difference of the two VAEs' bf16 weights, an upper bound."""
    five, small = (FIT.caching["diffpipe"].gpu_gib("bf16", 1, 480 * 288, size) for size in ("5B", "1.3B"))
    assert five - small == pytest.approx((704.7e6 - 126.9e6) * 2 / 2**30)


def test_musubi_5b_stays_scaled_and_says_so():
    p = plan("ti2v-5B", "musubi", 480, 288, 17, 1, 24.0, 64)
    assert p.basis == "scaled" and p.estimate_note.startswith("UNMEASURED: ti2v-5B: estimate scaled from 1.3B")


def test_14b_on_24gb_needs_fp8_offload_and_swap_like_upstreams_recipe():
    p = plan("t2v-14B", "diffpipe", 512, 512, 81, 1, RTX_4090_GIB, 64, dit_file_bf16=True)  # the recipe's bf16 file
    assert p.fits and p.transformer_dtype == "float8" and p.activation_checkpointing == "unsloth" and p.blocks_to_swap >= 10
    assert p.optimizer_type == "AdamW8bitKahan"


def test_cannot_fit_says_what_would():
    p = plan("t2v-1.3B", "musubi", 832, 480, 81, 1, 10.0, 64)
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
    p = plan_for_job(job, 11.0, 64)
    assert p.tokens == 32760
    memory = job.memory.model_copy(update=p.memory_update())
    assert memory.transformer_dtype == "float8" and memory.blocks_to_swap == p.blocks_to_swap and memory.auto
