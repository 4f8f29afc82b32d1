"""runner.job.resolve: the memory planner's choices pass the same checks as settings written by hand; model facts
come from the target."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.errors import JobInvalid, UserError
from runner.job.resolve import here, resolve
from runner.spec import read_job

VRAM_GIB = (8, 12, 16, 24, 48)


def _errors(job) -> set[tuple[str, str]]:
    """What the checks find in the job as written, the rules on its model files (their headers) included."""
    try:
        resolve(job, here())
    except JobInvalid as e:
        return {(x.where, x.problem) for x in e.errors}
    return set()


@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
def test_every_memory_auto_plan_passes_the_checks(workspace, trainer):
    examples = sorted((workspace / "examples").glob("*.yaml"))
    assert len(examples) >= 6
    planned = 0
    for example in examples:
        text = re.sub(r"(?m)^trainer: \w+", f"trainer: {trainer}", example.read_text())
        text = re.sub(r"(?m)^(memory|gpus):.*\n(?:[ #].*\n|\n)*", "", text)  # set below: a key set twice is refused
        for gpus in (1, 2):
            job_file = example.with_name(f"auto-{trainer}-{gpus}.yaml")
            job_file.write_text(text + f"\ngpus: {gpus}\n")
            as_written = _errors(read_job(job_file)[0])
            job_file.write_text(text + f"\ngpus: {gpus}\nmemory: auto\n")
            for vram in VRAM_GIB:
                try:
                    resolved = resolve(read_job(job_file)[0], here(), vram_gib=vram, ram_gib=64, plan_needed=True)
                except JobInvalid as e:
                    # the example is invalid for this trainer as written; the plan must add nothing to that
                    added = {(x.where, x.problem) for x in e.errors} - as_written
                    assert not added, f"{example.name} on {trainer}, {gpus} GPU(s), {vram} GiB: the plan breaks {added}"
                    continue
                except UserError as e:  # no setting fits this card: the planner says so instead of choosing
                    assert e.where == "memory: auto", f"{example.name} on {trainer}, {gpus} GPU(s), {vram} GiB: {e}"
                    continue
                assert resolved.memory_plan is not None and resolved.job.memory.blocks_to_swap == resolved.memory_plan.blocks_to_swap
                planned += 1
    assert planned >= len(examples) * 2  # most plans apply; the bar is that none is refused


def test_model_facts_come_from_the_target_not_from_here(workspace, tmp_path):
    """A target whose models folder is elsewhere (as a host's is): the first shard of the official 14B DiT and the
    DiT's dtype are read there, where this machine has neither."""
    from runner.job.resolve import Target
    from runner.shell import LocalShell
    from tests import modelfixtures

    host = modelfixtures.models_root(tmp_path / "host-models")
    shard = modelfixtures.dit(host / "Wan2.1-T2V-14B" / "diffusion_pytorch_model-00001-of-00006.safetensors", size="14B", dtype="F8_E4M3")
    job_file = workspace / "examples" / "official-14b.yaml"
    job_file.write_text("name: o\ntrainer: musubi\ntask: t2v-14B\nmodels:\n  root: ../models\n  preset: t2v-14B\n  format: official\n"
                        "datasets:\n  - path: data/clips\nmemory:\n  transformer_dtype: float8\n")
    assert not (workspace / "models" / "Wan2.1-T2V-14B" / shard.name).exists()
    with pytest.raises(UserError, match="first shard is not under"):
        resolve(read_job(job_file)[0], here())
    shell = LocalShell()
    resolved = resolve(read_job(job_file)[0], Target(shell, "gpuhost", models=lambda root: str(host)))
    assert resolved.files.dit.relative_to(resolved.files.root) == Path("Wan2.1-T2V-14B") / shard.name
    assert resolved.dit_dtype == "float8"


def test_runner_plan_is_the_plan_resolve_makes(workspace, cli):
    """`runner plan` resolves the job like render and train: the plan it prints is the one `memory: auto` applies,
    and when nothing fits it still prints the planner's best try and suggestions, exiting 1."""
    import json

    from runner.job import render

    job = workspace / "examples" / "auto.yaml"
    job.write_text((workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text() + "memory: auto\n")
    code, stdout, stderr = cli("plan", job, "--vram", "24", "--ram", "64", "--json")
    applied = render.load_checked(job, vram_gib=24, ram_gib=64, plan_needed=True)
    assert code == 0, stderr
    printed = json.loads(stdout)
    assert printed["gpu_gib"] == applied.memory_plan.gpu_gib and printed["settings"]
    assert all(getattr(applied.job.memory, k) == v for k, v in printed["settings"].items() if k != "optimizer")
    code, stdout, stderr = cli("plan", job, "--vram", "2", "--ram", "64", "--json")
    plan = json.loads(stdout)
    assert code == 1 and plan["fits"] is False and plan["suggestions"], stderr
    hand = workspace / "examples" / "hand.yaml"
    hand.write_text((workspace / "examples" / "t2v-1.3B-musubi.yaml").read_text())
    code, _, stderr = cli("plan", hand)  # no GPU here and no --vram: nothing to plan for
    assert code == 2 and "--vram" in stderr


def test_memory_auto_that_only_the_host_ram_refuses_says_host_ram(cli, workspace):
    """diffusion-pipe reads Wan2.2's fp16 A14B DiT whole and casts it (56 GiB measured): on a 48 GiB card with 32 GiB
    of RAM the GPU would do, the host's RAM does not, and the error says which."""
    job = workspace / "examples" / "a14b-auto.yaml"
    text = (workspace / "examples" / "t2v-A14B-diffpipe.yaml").read_text()
    job.write_text(text.replace("memory:\n  transformer_dtype: float8\n", "memory: auto\n"))
    code, _, stderr = cli("render", job, "--out", workspace / "r", "--vram", "48", "--ram", "32")
    assert code == 2 and "memory: auto" in stderr and "32 GiB of host RAM" in stderr and "more host RAM" in stderr, stderr
    assert not (workspace / "r").exists()
    code, _, stderr = cli("render", job, "--out", workspace / "r", "--vram", "2", "--ram", "256")
    assert code == 2 and "2 GiB of GPU memory" in stderr, stderr
