import pytest
from tests.fakeshell import FakeShell

from runner.errors import UserError
from runner.gpu import variant
from runner.gpu.envrules import Context, environment
from runner.gpu.inventory import gather


def env(card: str, **kw) -> dict[str, str]:
    overrides = kw.pop("overrides", None)
    return {v.name: v.value for v in environment(Context(gather(FakeShell(card=card)), "diffpipe", **kw), overrides)}


def test_rtx40_gets_nccl_p2p_off_with_upstream_source():
    vars_ = environment(Context(gather(FakeShell(card="rtx4090x2")), "diffpipe", gpus_used=2))
    p2p = next(v for v in vars_ if v.name == "NCCL_P2P_DISABLE")
    assert p2p.value == "1" and "RTX 4000 series needs" in p2p.source
    assert {v.name: v.value for v in vars_}["NCCL_IB_DISABLE"] == "1"


def test_rtx40_single_gpu_also_gets_it():
    # upstream's wording is unconditional; with one GPU the variables are inert
    assert env("rtx4060ti16")["NCCL_P2P_DISABLE"] == "1"


def test_datacenter_card_gets_only_cuda_home():
    assert env("h100") == {"CUDA_HOME": "/usr/local/cuda"}


def test_low_vram_plan_gets_expandable_segments():
    assert env("h100", low_vram=True)["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"


def test_user_override_wins():
    vars_ = environment(Context(gather(FakeShell(card="rtx4090x2")), "musubi"), {"NCCL_P2P_DISABLE": "0"})
    v = next(v for v in vars_ if v.name == "NCCL_P2P_DISABLE")
    assert v.value == "0" and v.source == "job file"


def test_variant_by_compute_capability():
    assert variant.choose("musubi", gather(FakeShell(card="rtx5090"))).tag == "cu128"
    assert variant.choose("musubi", gather(FakeShell(card="rtx4090x2"))).tag == "cu124"
    assert variant.choose("diffpipe", gather(FakeShell(card="h100"))).tag == "cu128"


def test_old_driver_refused_with_fix():
    with pytest.raises(UserError) as e:
        variant.choose("musubi", gather(FakeShell(card="rtx3090")))
    assert "535.183.01" in e.value.where and ">= 550.54.15" in e.value.problem and "update the NVIDIA driver" in e.value.fix
    with pytest.raises(UserError, match="570.124.06"):
        variant.choose("diffpipe", gather(FakeShell(card="rtx4090x2")))  # 550 driver, 12.8 image


def test_no_gpu_refused():
    with pytest.raises(UserError, match="no NVIDIA GPU/driver visible on laptop"):
        variant.choose("musubi", gather(FakeShell(name="laptop")))
