"""Several GPUs of one machine and several machines: what `gpus:` and `pipeline_stages:` render for each trainer,
the refusals, the per-GPU memory plan, the GPU env rules, and musubi's multi-node launcher with the stand-in accelerate
(two machines meeting at the rendezvous, as local processes; tests/test_multinode_docker.py does it in two containers)."""

from __future__ import annotations

import dataclasses
import json

import os
import random
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from runner.errors import JobInvalid, UserError
from runner.gpu import planner
from runner.gpu.envrules import Context, environment
from runner.gpu.inventory import Gpu, Inventory
from runner.job import render
from runner.job.resolve import Target
from runner.shell import LocalShell
from runner.trainers.multinode import MULTINODE_LAUNCH, PORT_BASE, PORT_SPAN
from tests import standin_harness as harness
from tests.conftest import write_job
from tests.fakeshell import FakeShell
from tests.test_validation import assert_refused, job_text


class GpuHost(LocalShell):
    """This machine's files with a recorded GPU inventory (tests/fixtures/nvidia-smi): two RTX 4090s without P2P."""

    name = "gpuhost"

    def __init__(self, card: str = "rtx4090x2"):
        self.recorded = FakeShell(card=card)

    def run(self, argv: list[str], timeout: float = 60):
        return self.recorded.run(argv, timeout) if argv[0] == "nvidia-smi" else super().run(argv, timeout)


def gpu_host() -> Target:
    return Target(GpuHost(), "gpuhost", gpus=True)


def plan_of(workspace: Path, text: str, tmp_path: Path, target: Target | None = None, nodes: int = 1):
    r = render.load_checked(write_job(workspace / "examples", text), target)
    return render.trainer_plan(r, tmp_path, nodes=nodes)


def train_argv(plan) -> list[str]:
    return next(s.argv for s in plan.steps if s.name == "train")


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# ---------------------------------------------------------------- what each trainer gets


def test_musubi_device_ids_become_accelerates_gpu_ids_and_the_caching_device(workspace, tmp_path):
    plan = plan_of(workspace, job_text(extra="gpus: [0, 2]\n"), tmp_path)
    config = yaml.safe_load(plan.files["accelerate.yaml"])
    assert (config["distributed_type"], config["num_processes"], config["gpu_ids"]) == ("MULTI_GPU", 2, "0,2")
    # the caching scripts are plain python on the first visible GPU: the job's first
    assert [s.env.get("CUDA_VISIBLE_DEVICES") for s in plan.steps] == ["0", "0", None]
    one = yaml.safe_load(plan_of(workspace, job_text(extra="gpus: [3]\n"), tmp_path).files["accelerate.yaml"])
    # accelerate's simple launcher sets CUDA_VISIBLE_DEVICES from gpu_ids too (utils/launch.py)
    assert (one["distributed_type"], one["num_processes"], one["gpu_ids"]) == ("NO", 1, "3")
    count = yaml.safe_load(plan_of(workspace, job_text(extra="gpus: 2\n"), tmp_path).files["accelerate.yaml"])
    assert (count["num_processes"], count["gpu_ids"]) == (2, "all")


def test_diffpipe_device_ids_become_deepspeeds_include(workspace, tmp_path):
    argv = train_argv(plan_of(workspace, job_text("diffpipe", extra="gpus: [0, 2]\n"), tmp_path))
    # deepspeed's runner refuses --num_gpus together with --include (launcher/runner.py)
    assert argv[:3] == ["deepspeed", "--include=localhost:0,2", "train.py"] and not any(a.startswith("--num_gpus") for a in argv)
    assert train_argv(plan_of(workspace, job_text("diffpipe", extra="gpus: 2\n"), tmp_path))[:2] == ["deepspeed", "--num_gpus=2"]


def test_diffpipe_pipeline_stages_go_into_its_toml(workspace, tmp_path):
    plan = plan_of(workspace, job_text("diffpipe", extra="gpus: 4\npipeline_stages: 2\n"), tmp_path)
    doc = tomllib.loads(plan.files["diffpipe.toml"])
    assert doc["pipeline_stages"] == 2 and train_argv(plan)[1] == "--num_gpus=4"


def test_warmup_and_learning_rate_mean_the_same_on_any_gpu_count(workspace, tmp_path):
    """warmup_steps are optimizer steps on both trainers: musubi's scheduler is stepped once per process (accelerate),
    so it gets warmup × processes; diffusion-pipe steps its LinearLR once per optimizer step. Neither scales the lr."""
    extra = "schedule:\n  warmup_steps: 8\noptimizer:\n  lr: 0.0001\n"
    for gpus, musubi_warmup in (("1", "8"), ("[0, 2]", "16"), ("4", "32")):
        argv = train_argv(plan_of(workspace, job_text(extra=extra + f"gpus: {gpus}\n"), tmp_path))
        assert (flag(argv, "--lr_warmup_steps"), flag(argv, "--learning_rate")) == (musubi_warmup, "0.0001")
        doc = tomllib.loads(plan_of(workspace, job_text("diffpipe", extra=extra + f"gpus: {gpus}\n"), tmp_path).files["diffpipe.toml"])
        assert (doc["warmup_steps"], doc["optimizer"]["lr"]) == (8, 0.0001)
    # on 2 machines of 2 GPUs musubi runs 4 processes
    argv = train_argv(plan_of(workspace, job_text(extra=extra + "gpus: 2\n"), tmp_path, nodes=2))
    assert flag(argv, "--lr_warmup_steps") == "32"


# ---------------------------------------------------------------- `gpus: all` and the machine's GPUs


def test_gpus_all_is_resolved_once_against_the_inventory_and_recorded(workspace, tmp_path):
    job = write_job(workspace / "examples", job_text(extra="gpus: all\n"))
    plan = render.render(job, tmp_path / "out", target=gpu_host())
    assert plan.settings["gpus"] == [0, 1]
    assert yaml.safe_load(plan.files["accelerate.yaml"])["gpu_ids"] == "0,1"
    assert '"gpus": [\n      0,\n      1\n    ]' in (tmp_path / "out" / "plan.json").read_text()


@pytest.mark.parametrize("gpus, expected", [
    ("3", "3 GPUs, but gpuhost has 2 (0: NVIDIA GeForce RTX 4090, 1: NVIDIA GeForce RTX 4090)"),
    ("[0, 2]", "names device 2, which gpuhost does not have"),
])
def test_gpus_the_machine_does_not_have_are_refused(workspace, tmp_path, gpus, expected):
    job = write_job(workspace / "examples", job_text(extra=f"gpus: {gpus}\n"))
    with pytest.raises(JobInvalid) as e:
        render.render(job, tmp_path / "out", target=gpu_host())
    assert expected in str(e.value) and f"{job}:" in str(e.value) and "Fix:" in str(e.value)
    assert not (tmp_path / "out").exists()


BAD = [
    ("gpus: [0, 0]\n", "names device 0 more than once"),
    ("gpus: []\n", "empty list of device ids"),
    ("gpus: [-1]\n", "holds -1, which is not a device id"),
    ("gpus: [1.5]\n", "holds 1.5, which is not a device id"),
    ("gpus: 0\n", "0 GPUs: a job trains on at least 1"),
    ("gpus: ALL\n", "is a count of GPUs (2), `all`"),
    ("gpus: true\n", "is a count of GPUs (2), `all`"),
    ("gpus: all\n", "is `all`, but no NVIDIA GPU/driver visible"),
]


@pytest.mark.parametrize("extra, expected", BAD, ids=[b[0].strip() for b in BAD])
def test_bad_gpus_values_are_refused(cli, workspace, extra, expected):
    assert_refused(cli, workspace, job_text(extra=extra), "gpus", expected)


PIPELINE_BAD = [
    ("diffpipe", "gpus: 4\npipeline_stages: 3\n", "3 does not divide the job's 4 GPUs", "use a divisor of 4 (1, 2, 4)"),
    ("musubi", "gpus: 2\npipeline_stages: 2\n", "musubi-tuner trains on several GPUs only by data parallel", "remove pipeline_stages"),
    ("diffpipe", "gpus: 2\npipeline_stages: 2\nmemory:\n  blocks_to_swap: 10\n", "Block swapping only works with pipeline_stages=1", "either block swap"),
    ("diffpipe", "gpus: 32\npipeline_stages: 32\n", "32 is more stages than Wan2.1-1.3B has blocks (30)", "at most 30"),
    ("diffpipe", "pipeline_stages: 0\n", "pipeline_stages", "greater than or equal to 1"),
]


@pytest.mark.parametrize("trainer, extra, problem, fix", PIPELINE_BAD, ids=[b[1].replace("\n", " ") for b in PIPELINE_BAD])
def test_bad_pipeline_stages_are_refused(cli, workspace, trainer, extra, problem, fix):
    assert_refused(cli, workspace, job_text(trainer, extra=extra), problem, fix)


# ---------------------------------------------------------------- per-GPU memory


def test_planner_plans_per_gpu_memory_for_ddp_and_pipeline_stages():
    from runner.gpu.memmodel import NCCL_GIB
    from runner.gpu.wan import ARCH

    args = ("t2v-1.3B", "diffpipe", 832, 480, 81, 1, 80.0, 256.0)
    one = planner.plan(*args)
    ddp = planner.plan(*args, layout=planner.Layout(gpus=2))
    piped = planner.plan(*args, layout=planner.Layout(gpus=2, stages=2))
    assert (one.transformer_dtype, one.blocks_to_swap) == (ddp.transformer_dtype, ddp.blocks_to_swap) == ("bfloat16", 0)
    # DDP: every GPU holds the whole model, plus its gradient buckets and NCCL's buffers
    assert ddp.training_gpu_gib > one.training_gpu_gib + NCCL_GIB["diffpipe"] - 0.01
    # two stages: each GPU holds at most 15 of the 30 bf16 blocks
    assert piped.training_gpu_gib == pytest.approx(one.training_gpu_gib + NCCL_GIB["diffpipe"] - 15 * ARCH["1.3B"].block_gib(2), abs=0.02)
    # diffusion-pipe reads the DiT into every process's RAM: two processes, twice the host memory
    assert ddp.host_gib == pytest.approx(2 * one.host_gib, rel=0.05)


TWO_GPU_RUNS = [json.loads(line) for line in (Path(__file__).parents[1] / "bench" / "data" / "gpu_h200x2.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("row", [r for r in TWO_GPU_RUNS if r["phase"] == "train"], ids=lambda r: f"{r['name']}:rank{r['rank']}")
def test_ddp_plan_covers_each_gpu_of_the_measured_two_gpu_runs(row):
    """The real trainers on two H200s (bench/README.md "Two GPUs of one host"), data parallel and diffusion-pipe's two
    pipeline stages: the per-GPU estimate is at least what each GPU peaked at, and at most 15 % above."""
    trainer = row["trainer"]
    one = planner.plan("t2v-1.3B", trainer, row["width"], row["height"], row["frames"], 1, 141.0, 256.0)
    layout = planner.Layout(gpus=2, stages=row.get("pipeline_stages", 1))
    two = planner.plan("t2v-1.3B", trainer, row["width"], row["height"], row["frames"], 1, 141.0, 256.0, layout=layout)
    assert (one.transformer_dtype, one.checkpointing) == (two.transformer_dtype, two.checkpointing) == ("bfloat16", "gc")
    assert row["device_peak_gib"] <= two.training_gpu_gib <= 1.15 * row["device_peak_gib"]


def test_pipeline_stages_plan_without_block_swap():
    # the 14B candidate that ran swaps 32 blocks; diffusion-pipe asserts pipeline_stages == 1 for block swap
    args = ("t2v-14B", "diffpipe", 832, 480, 81, 1, 48.0, 512.0)
    assert planner.plan(*args).blocks_to_swap == 32
    assert planner.plan(*args, layout=planner.Layout(gpus=2, stages=2)).blocks_to_swap == 0


def test_musubi_processes_share_the_memory_mapped_dit():
    one = planner.plan("t2v-14B", "musubi", 832, 480, 33, 1, 80.0, 512.0)
    two = planner.plan("t2v-14B", "musubi", 832, 480, 33, 1, 80.0, 512.0, layout=planner.Layout(gpus=2))
    assert one.host_gib < two.host_gib < 2 * one.host_gib


# ---------------------------------------------------------------- GPU environment for N GPUs


def inventory(p2p: dict[str, str], name: str = "NVIDIA A100-SXM4-80GB") -> Inventory:
    gpus = [Gpu(index=i, name=name, memory_mib=81920, compute_capability="8.0") for i in range(4)]
    return Inventory(host="h", gpus=gpus, p2p=p2p)


def env_of(ctx: Context) -> dict[str, str]:
    return {v.name: v.value for v in environment(ctx)}


def test_nccl_p2p_rule_looks_at_the_gpus_the_job_uses():
    inv = inventory({"0-1": "OK", "0-2": "NS", "0-3": "NS", "1-2": "NS", "1-3": "NS", "2-3": "OK"})
    assert "NCCL_P2P_DISABLE" not in env_of(Context(inv, "musubi", 2))  # GPUs 0 and 1 talk P2P
    assert "NCCL_P2P_DISABLE" not in env_of(Context(inv, "musubi", 2, device_ids=(2, 3)))
    assert env_of(Context(inv, "musubi", 2, device_ids=(0, 2)))["NCCL_P2P_DISABLE"] == "1"
    assert env_of(Context(inv, "musubi", 4))["NCCL_IB_DISABLE"] == "1"


def test_several_machines_keep_infiniband():
    inv = inventory({}, name="NVIDIA GeForce RTX 4090")
    one = env_of(Context(inv, "musubi", 2))
    two = env_of(Context(inv, "musubi", 2, nodes=2))
    assert (one["NCCL_P2P_DISABLE"], one["NCCL_IB_DISABLE"]) == ("1", "1")
    assert two["NCCL_P2P_DISABLE"] == "1" and "NCCL_IB_DISABLE" not in two


def test_a_run_on_several_nodes_gets_the_multinode_rules(workspace):
    """launch passes the run's node count (its record's, on a requeue too) to the rules of its container's env."""
    from runner.jobs.launch import gpu_environment

    job = render.load_checked(write_job(workspace / "examples", job_text(extra="gpus: 2\n"))).job
    inv = inventory({}, name="NVIDIA GeForce RTX 4090").model_copy(update={"driver_version": "570.86.10", "cuda_version": "12.8"})
    assert gpu_environment(inv, job)[0]["NCCL_IB_DISABLE"] == "1"
    assert "NCCL_IB_DISABLE" not in gpu_environment(inv, job, nodes=2)[0]


def test_device_ids_are_nvidia_smis_order():
    assert env_of(Context(inventory({}), "diffpipe", 2, device_ids=(0, 2)))["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "CUDA_DEVICE_ORDER" not in env_of(Context(None, "diffpipe", 1))


# ---------------------------------------------------------------- several machines


def test_musubi_multinode_plan_launches_through_the_rendered_launcher(workspace, tmp_path):
    plan = plan_of(workspace, job_text(extra="gpus: 2\n"), tmp_path, nodes=2)
    argv = train_argv(plan)
    assert argv[:5] == ["python", "/job/multinode_launch.py", "2", "accelerate", "launch"]
    config = yaml.safe_load(plan.files["accelerate.yaml"])
    # accelerate counts the processes of every machine; rank, address and port come at run time
    assert (config["num_machines"], config["num_processes"], config["distributed_type"]) == (2, 4, "MULTI_GPU")
    assert "main_process_port" not in config and "--machine_rank" not in argv
    assert plan.files["multinode_launch.py"] == MULTINODE_LAUNCH
    once, every = render.node_plans(plan)
    assert [s.name for s in once.steps] == ["cache-latents", "cache-text-encoder"] and [s.name for s in every.steps] == ["train"]


def test_a_multinode_job_folder_holds_the_plan_split_for_the_nodes(workspace, tmp_path):
    plan = plan_of(workspace, job_text(extra="gpus: 1\n"), tmp_path, nodes=2)
    render.write(plan, tmp_path / "two", nodes=2)
    once, every = (json.loads((tmp_path / "two" / name).read_text()) for name in (render.ONCE_JSON, render.EVERY_NODE_JSON))
    assert [s["name"] for s in once["steps"]] == ["cache-latents", "cache-text-encoder"] and [s["name"] for s in every["steps"]] == ["train"]
    assert once["workdir"] == every["workdir"] == plan.workdir
    reused = dataclasses.replace(plan, steps=[s for s in plan.steps if s.name == "train"])  # caches reused: nothing to run once
    render.write(reused, tmp_path / "two", nodes=2)
    assert not (tmp_path / "two" / render.ONCE_JSON).exists() and (tmp_path / "two" / render.EVERY_NODE_JSON).is_file()
    render.write(plan, tmp_path / "one")
    assert not {render.ONCE_JSON, render.EVERY_NODE_JSON} & {p.name for p in (tmp_path / "one").iterdir()}


def test_diffpipe_refuses_several_machines_with_the_reason(workspace, tmp_path):
    with pytest.raises(UserError) as e:
        plan_of(workspace, job_text("diffpipe", extra="gpus: 2\n"), tmp_path, nodes=2)
    assert e.value.where == "--nodes" and "one machine only" in e.value.problem and "#397" in e.value.problem
    assert "trainer: musubi" in e.value.fix


@pytest.fixture
def launcher(tmp_path: Path) -> Path:
    path = tmp_path / "multinode_launch.py"
    path.write_text(MULTINODE_LAUNCH)
    return path


@pytest.mark.parametrize("nodelist, first", [
    ("gpu[07-09,12],login1", "gpu07"), ("node1", "node1"), ("n[001-004]", "n001"), ("a1,b[2-3]", "a1"),
    ("rack[1-2]-gpu[3,5]", "rack1-gpu3"), ("gpu-a[10-11],gpu-b[1-2]", "gpu-a10"),
])
def test_launcher_takes_the_first_host_of_slurms_list(launcher, nodelist, first):
    assert runpy.run_path(str(launcher))["first_host"](nodelist) == first


@pytest.mark.parametrize("env, problem", [
    ({"SLURM_NODEID": ""}, "SLURM_NODEID='': it should be set by Slurm"),
    ({"SLURM_JOB_NUM_NODES": "3"}, "rendered for 2 machines, but Slurm gave it 3 nodes"),
    ({"SLURM_NODEID": "2"}, "SLURM_NODEID=2 is not below the 2 machines"),
    ({"SLURM_JOB_NODELIST": "gpu[01-02"}, "is not a Slurm host list"),
])
def test_launcher_refuses_what_slurm_did_not_set(launcher, tmp_path, env, problem):
    base = {"SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": "7"}
    r = harness.run(["python", str(launcher), "2", "accelerate", "launch", "x.py"], tmp_path, {**base, **env})
    assert r.returncode == 2 and problem in r.stderr, r.stderr


def _machines(launcher: Path, tmp_path: Path, job_id: int, ranks=(0, 1), timeout: str = "60") -> list[subprocess.Popen]:
    script = tmp_path / "show.py"
    script.write_text("import os\nprint('trained as rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'], 'on', os.environ['MASTER_ADDR'])\n")
    argv = [sys.executable, str(launcher), "2", "accelerate", "launch", "--num_processes", "2", "--num_machines", "2", "--multi_gpu", str(script)]
    procs = []
    for rank in ranks:
        env = harness.env({"SLURM_NODEID": str(rank), "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "localhost,gpu02",
                           "SLURM_JOB_ID": str(job_id), "STANDIN_RDZV_TIMEOUT": timeout})
        procs.append(subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def test_two_machines_meet_at_the_first_hosts_port(launcher, tmp_path):
    job_id = random.randrange(10**6)
    port = PORT_BASE + job_id % PORT_SPAN
    # machine 1 first: it retries until machine 0 listens
    outs = [p.communicate(timeout=60) for p in _machines(launcher, tmp_path, job_id, ranks=(1, 0))]
    rank1, rank0 = outs
    for out, err in outs:
        assert "ranks met: world size 2, machine ranks [0, 1]" in out, out + err
        assert f"main process localhost:{port}" in out
    assert "trained as rank 0 of 2 on localhost" in rank0[0] and "trained as rank 1 of 2 on localhost" in rank1[0]


def test_a_machine_that_nobody_meets_times_out_clearly(launcher, tmp_path):
    (alone,) = _machines(launcher, tmp_path, random.randrange(10**6), ranks=(1,), timeout="1")
    out, err = alone.communicate(timeout=30)
    assert alone.returncode == 1 and "DistNetworkError: The client socket has timed out after 1000ms" in err, err
    (first,) = _machines(launcher, tmp_path, random.randrange(10**6), ranks=(0,), timeout="1")
    out, err = first.communicate(timeout=30)
    assert first.returncode == 1 and "Timed out after 1 seconds waiting for clients. 1/2 clients joined." in err, err


def test_train_refuses_gpus_all_without_gpus(cli, workspace, monkeypatch):
    monkeypatch.setenv("RUNNER_GPUS", "none")  # CI's containers without GPUs: no inventory to resolve `all` against
    monkeypatch.setenv("RUNNER_STATE", str(workspace / "state"))
    job = write_job(workspace / "examples", job_text(extra="gpus: all\n"))
    code, out, err = cli("train", job)
    assert code == 2 and "gpus: is `all`, and RUNNER_GPUS=none starts containers without GPUs" in err and "Fix:" in err, err


def test_render_nodes_writes_what_each_node_runs_and_refuses_diffpipe(cli, workspace, tmp_path):
    job = write_job(workspace / "examples", job_text(extra="gpus: 1\n"))
    code, out, err = cli("render", job, "--out", tmp_path / "two", "--nodes", "2", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert {render.ONCE_JSON, render.EVERY_NODE_JSON, "multinode_launch.py"} <= set(shown["files"]) <= {p.name for p in (tmp_path / "two").iterdir()}
    assert yaml.safe_load((tmp_path / "two" / "accelerate.yaml").read_text())["num_machines"] == 2
    diffpipe = write_job(workspace / "examples", job_text("diffpipe"), "dp.yaml")
    code, _, err = cli("render", diffpipe, "--out", tmp_path / "dp", "--nodes", "2")
    assert code == 2 and "--nodes: is 2, and diffusion-pipe 8f83dbf trains on one machine only" in " ".join(err.split()), err
    assert not (tmp_path / "dp").exists()
