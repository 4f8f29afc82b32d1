"""`runner sample` is launched like a training run, against the real Docker engine with the stand-in musubi image:
it takes the job's lock (refused while the job trains, and a training refused while it samples), it has a record
(`runner ps` shows its kind, `runner logs` and `runner stop` work on it) and its secrets reach the container on stdin.

Stood in: the GPU (RUNNER_GPUS=none) and musubi-tuner (tests/standin/: wan_generate_video.py sleeps
STANDIN_STEP_SECONDS per inference step, so a sample run lasts while the test looks at it).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.dockerfixtures import runner
from tests.test_lifecycle import built, containers, env, job, popen, records, wait_for  # noqa: F401 (fixtures)

SAMPLES = """samples:
  prompts: ["a red ball bouncing on grass"]
  width: 320
  height: 192
  frames: 9
  steps: 20
"""
SECRET = "hf_sample_secret_4f1c"


def trained(workspace: Path, env: dict) -> tuple[Path, str]:
    """A musubi job trained once (its LoRAs saved), unique by name; its next runs' steps last STANDIN_STEP_SECONDS 2."""
    path, name = job(workspace, extra=SAMPLES + "schedule: {epochs: 2}\n")
    r = runner(["train", path], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    path.write_text(path.read_text().replace("STANDIN_STEP_SECONDS: '0'", f"STANDIN_STEP_SECONDS: '2'\n  HF_TOKEN: {SECRET}"))
    return path, name


def said(r) -> str:
    return " ".join(r.stderr.split())


def ps(env: dict) -> dict[str, dict]:
    r = runner(["ps", "--json"], env)
    assert r.returncode == 0, r.stderr
    return {j["id"]: j for j in json.loads(r.stdout)["jobs"]}


def test_sampling_while_the_job_trains_is_refused_and_launches_nothing(workspace, env):
    path, name = trained(workspace, env)
    samples = workspace / "examples" / "outputs" / name / "samples"
    r = runner(["train", path, "--fresh", "--detach"], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (training,) = [x for x in records(env) if x["status"] == "running"]

    r = runner(["sample", path], env, cwd=workspace)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"is already running as run {training['id']} (training," in said(r) and "samples.during_training" in said(r), r.stderr
    assert f"runner stop {training['id']}" in said(r) and "Traceback" not in r.stderr
    assert [x["kind"] for x in records(env)] == ["train", "train"], "no record of a sample run that never ran"
    assert not [c for c in containers(f"runner-{name}-sample-")], "no sample container"
    assert not samples.exists(), "nothing written"

    assert runner(["stop", training["id"]], env).returncode == 0
    path.write_text(path.read_text().replace("STANDIN_STEP_SECONDS: '2'", "STANDIN_STEP_SECONDS: '0'"))
    r = runner(["sample", path], env, cwd=workspace)  # the lock was given back: sampling runs, and is recorded
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    (run,) = [x for x in ps(env).values() if x["kind"] == "sample"]
    assert run["status"] == "exited" and run["exit_code"] == 0 and run["name"] == name and run["id"].startswith(f"{name}-sample-")
    assert not Path(run["locked"]).exists(), "an ended sample run gives the lock back"
    assert len(list(samples.glob("*/*/*.mp4"))) == 1 and (samples / "index.html").is_file()
    logged = runner(["logs", run["id"]], env)
    assert logged.returncode == 0 and "STAND-IN for musubi-tuner wan_generate_video" in logged.stdout, logged.stdout[-2000:]
    table = runner(["ps"], env).stdout
    assert "kind" in table and " sample " in table and " train " in table, table


def test_a_sample_run_holds_the_lock_and_runner_stop_ends_it(workspace, env):
    path, name = trained(workspace, env)
    sampling = popen(["sample", path], env, cwd=workspace)  # 20 inference steps of 2 s: it runs while we look
    try:
        wait_for(lambda: any(x["kind"] == "sample" and x["status"] == "running" for x in records(env)), 120, "the sample run to start")
        (run,) = [x for x in records(env) if x["kind"] == "sample"]
        assert ps(env)[run["id"]]["status"] == "running"

        # its secret reached the container on stdin: not in its configuration, named in plan.json
        import docker

        config_env = docker.from_env().containers.get(run["container"]).attrs["Config"]["Env"]
        assert not [e for e in config_env if SECRET in e] and "RUNNER_SECRET_ENV=HF_TOKEN" in config_env, config_env
        plan = json.loads((Path(env["RUNNER_STATE"]) / "jobs" / run["id"] / "job" / "plan.json").read_text())
        assert "HF_TOKEN" in plan["container"]["secret_env"] and SECRET not in json.dumps(plan)

        r = runner(["train", path, "--fresh"], env, cwd=workspace)
        assert r.returncode == 2 and f"is already running as run {run['id']} (sampling," in said(r), r.stdout[-2000:] + r.stderr[-2000:]
        again = runner(["sample", path], env, cwd=workspace)
        assert again.returncode == 2 and f"is already running as run {run['id']} (sampling," in said(again), again.stderr

        wait_for(lambda: "wan_generate_video" in runner(["logs", run["id"]], env).stdout, 60, "the sample run's log")
        stopped = runner(["stop", run["id"]], env)
        assert stopped.returncode == 0 and f"stopped {run['id']}" in stopped.stdout, stopped.stdout + stopped.stderr
        out, err = sampling.communicate(timeout=120)
    finally:
        if sampling.poll() is None:
            sampling.kill()
    assert sampling.returncode == 0 and "was stopped with `runner stop`" in out + err, out[-2000:] + err[-2000:]
    (ended,) = [x for x in records(env) if x["kind"] == "sample"]
    assert ended["status"] == "stopped" and not Path(ended["locked"]).exists()
    assert containers(run["container"]) == {}, "the stopped run's container is removed"
    assert (Path(env["RUNNER_STATE"]) / "jobs" / run["id"] / "sample.log").is_file(), "its log is kept: `runner logs` shows it"
    assert SECRET not in (Path(env["RUNNER_STATE"]) / "jobs" / run["id"] / "sample.log").read_text()


def test_a_sample_run_out_of_gpu_memory_is_recorded_as_such(workspace, env):
    path, name = trained(workspace, env)
    path.write_text(path.read_text().replace(f"  HF_TOKEN: {SECRET}", "  STANDIN_OOM_IN: sample"))
    r = runner(["sample", path], env, cwd=workspace)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-2000:]
    assert "CUDA ran out of GPU memory in sampling" in " ".join(r.stdout.split()) and "samples smaller" in r.stdout, r.stdout[-3000:]
    (run,) = [x for x in ps(env).values() if x["kind"] == "sample"]
    assert run["status"] == "failed" and run["failure"].startswith("CUDA out of memory in sampling"), run
    assert not Path(run["locked"]).exists()
