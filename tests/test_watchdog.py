"""Progress and watchdogs of a followed run, with a real Docker engine and the stand-in trainers (tests/standin/):
each watchdog stops its run within its bound and the record and message say which; the progress lines show step
of total, loss, s/step and ETA for both trainers (read from what runner prints, not from timing).

The stand-ins print the trainers' own lines (musubi's tqdm bar with avr_loss, DeepSpeed's 'steps: N loss: X iter
time (s): …', the epoch lines) and fake a NaN loss, a hang or a CUDA out-of-memory on request (STANDIN_* knobs).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from runner.jobs import logwatch, watchdog
from tests.dockerfixtures import runner
from tests.test_docker import built, env  # noqa: F401  (the images built once per session, a runner env per test)

EXAMPLE = {"musubi": "t2v-1.3B-musubi", "diffpipe": "t2v-1.3B-diffpipe"}
NAME = {"musubi": "ball-1p3b", "diffpipe": "ball-1p3b-dp"}
STEPS_PER_EPOCH, EPOCHS = 3, 16  # the examples: three clips, batch 1, 16 epochs
# runner's standing line off a terminal: 'runner: step 4/48 · epoch 2/16 · loss 0.1125 · 0.05 s/step · ETA 0:00:02'
STANDING = re.compile(r"^runner: step (\d+)/(≈?)(\d+) · epoch (\d+)/(\d+) · loss (\S+) · (\d+\.\d+) s/step · ETA (≈?)(\d+):(\d\d):(\d\d)$", re.M)


def job(workspace: Path, trainer: str, watchdog: str, **knobs: str) -> Path:
    path = workspace / "examples" / f"watchdog-{trainer}.yaml"
    env = "".join(f"  {k}: '{v}'\n" for k, v in knobs.items())
    path.write_text((workspace / "examples" / f"{EXAMPLE[trainer]}.yaml").read_text() + f"watchdog:\n{watchdog}env:\n{env}")
    return path


def said(r) -> str:
    return " ".join(r.stdout.split())  # runner's paragraphs unwrapped from the terminal width


def record(env: dict[str, str]) -> dict:
    (only,) = [json.loads(p.read_text()) for p in (Path(env["RUNNER_STATE"]) / "jobs").glob("*/record.json")]
    return only


def steps_logged(trainer: str, log: str) -> list[int]:
    if trainer == "diffpipe":
        return [int(n) for n in re.findall(r"^steps: (\d+) loss: ", log, re.M)]
    return [int(n) for n in re.findall(r"\| (\d+)/\d+ \[", log)]


@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
def test_nan_loss_for_k_steps_stops_the_run_and_keeps_the_saves(workspace, env, trainer):
    # NaN from step 5 on; epoch 1 (steps 1-3) was saved before it; K = 2 stops it at step 6
    r = runner(["train", job(workspace, trainer, "  nan_steps: 2\n", STANDIN_NAN_FROM_STEP="5", STANDIN_STEP_SECONDS="0.3")], env, cwd=workspace)
    text = said(r)
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-2000:]
    assert "was NaN or Inf for 2 optimizer steps in a row (steps 5 to 6), so runner stopped the run (watchdog.nan_steps: 2)" in text
    assert "Likely causes: a learning rate too high" in text and "memory.transformer_dtype float8" in text
    rec = record(env)
    assert (rec["status"], rec["stopped_by"], rec["exit_code"]) == ("failed", "nan", 3)
    assert rec["failure"] == "watchdog nan: loss NaN/Inf for 2 steps in a row (steps 5-6)"
    outputs = workspace / "examples" / "outputs" / NAME[trainer]
    if trainer == "musubi":
        good = outputs / f"{NAME[trainer]}-000001.safetensors"
        assert f"The last save before the NaN, {good}, is good; every save is kept, nothing was deleted." in text
        assert good.is_file()
    else:
        assert "The last save before the NaN, epoch1/ in the newest run folder under" in text
        assert list(outputs.glob("*/epoch1/adapter_model.safetensors"))
    shown = runner(["logs", NAME[trainer]], env)  # the kept log, with runner's report at its end
    assert shown.returncode == 3 and "so runner stopped the run (watchdog.nan_steps: 2)" in said(shown)
    # within its bound: the step that made the streak K is the last one the trainer finished (SIGTERM comes at once)
    assert max(steps_logged(trainer, shown.stdout)) <= 7
    assert "watchdog nan" in runner(["ps"], {**env, "COLUMNS": "400"}).stdout


@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
def test_a_trainer_silent_for_m_minutes_is_stopped_as_hung(workspace, env, trainer):
    began = time.monotonic()
    r = runner(["train", job(workspace, trainer, "  hang_minutes: 0.1\n", STANDIN_HANG_AT_STEP="3")], env, cwd=workspace)
    took = time.monotonic() - began
    text = said(r)
    assert r.returncode == 3, r.stdout[-3000:] + r.stderr[-2000:]
    assert "The trainer printed nothing for 0.1 minutes at step 2/" in text and "so runner stopped it as hung (watchdog.hang_minutes: 0.1)" in text
    rec = record(env)
    assert (rec["stopped_by"], rec["exit_code"]) == ("hang", 3) and rec["failure"].startswith("watchdog hang: no output for 0.1 min at step 2/")
    # 6 s of silence, then SIGTERM ends the stand-in at once; the rest is starting and removing the container
    assert took < 6 + 45, took


def test_a_hang_after_out_of_memory_is_caught_by_the_hang_watchdog_when_the_oom_one_is_off(workspace, env):
    r = runner(["train", job(workspace, "diffpipe", "  oom: false\n  hang_minutes: 0.1\n", STANDIN_OOM_IN="cache-text-encoder")], env, cwd=workspace)
    assert r.returncode == 3, r.stdout[-3000:]
    assert "The trainer printed nothing for 0.1 minutes in cache-text-encoder" in said(r)
    assert record(env)["stopped_by"] == "hang"


def test_out_of_memory_names_the_phase_and_the_setting_for_it(workspace, env):
    r = runner(["train", job(workspace, "diffpipe", "  oom: true\n", STANDIN_OOM_IN="cache-latents")], env, cwd=workspace)
    text = said(r)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "CUDA ran out of GPU memory in cache-latents" in text and "runner stopped its container" in text
    assert "In cache-latents, caching latents runs the VAE over each clip" in text and "lower datasets[].resolutions or datasets[].frames" in text
    rec = record(env)
    assert rec["stopped_by"] == "oom" and rec["failure"].startswith("CUDA out of memory in cache-latents")


def test_musubi_out_of_memory_while_caching_text_names_its_batch_setting(workspace, env):
    r = runner(["train", job(workspace, "musubi", "  oom: true\n", STANDIN_OOM_IN="cache-text-encoder")], env, cwd=workspace)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "memory.text_encoder_dtype: float8 (about 4 GiB less); musubi also takes fewer captions per umT5 batch: memory.text_encoder_batch: 4" in said(r)
    assert record(env)["stopped_by"] == ""  # musubi exits by itself


@pytest.mark.parametrize("trainer", ["musubi", "diffpipe"])
def test_progress_shows_step_of_total_loss_seconds_per_step_and_eta(workspace, env, trainer):
    r = runner(["train", job(workspace, trainer, "  nan_steps: 3\n", STANDIN_STEP_SECONDS="0.1")], env, cwd=workspace)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    seen = STANDING.findall(r.stdout)
    assert seen, r.stdout[-3000:]
    total = STEPS_PER_EPOCH * EPOCHS
    for step, approx, of, epoch, epochs, loss, per_step, eta_approx, h, m, s in seen:
        assert int(of) == total and int(epochs) == EPOCHS and 1 <= int(step) <= total
        # the epoch of the step, or the next one once its last step is done; musubi prints epochs on stdout and its bar
        # on stderr, two pipes the engine may interleave a line early or late
        assert int(epoch) - ((int(step) - 1) // STEPS_PER_EPOCH + 1) in ((-1, 0, 1) if trainer == "musubi" else (0, int(step) % STEPS_PER_EPOCH == 0))
        assert 0.1 <= float(loss) <= 0.15  # the stand-in's losses: 0.1 + 0.05 / step
        assert 0.05 < float(per_step) < 5
        assert approx == eta_approx
        eta = int(h) * 3600 + int(m) * 60 + int(s)
        assert abs(eta - (total - int(step)) * float(per_step)) <= 1
    first, last = seen[0], seen[-1]
    if trainer == "musubi":  # its first step's rate is tqdm's time since the bar was drawn: no s/step or ETA from it
        assert f"runner: step 1/{total} · epoch 1/{EPOCHS} · loss " in r.stdout and "· ? s/step · ETA ?" in r.stdout
    else:
        assert first[0] == "1"
    if trainer == "diffpipe":  # no total in its lines: estimated from the data and schedule until epoch 1 ends, then known
        assert first[1] == "≈" and last[1] == "" and int(last[3]) == EPOCHS
    else:  # musubi's bar carries its total
        assert all(a == "" for _, a, *rest in seen)
    follow = runner(["logs", NAME[trainer]], env)
    assert "[runner] done" in follow.stdout


# --- the arithmetic, on the trainers' lines as they print them ----------------------------------------------------


def feed(standing: watchdog.Standing, *lines: str) -> list[bool]:
    return [standing.feed(logwatch.classify(line)) for line in lines]


def test_diffpipe_total_is_estimated_from_the_data_then_known_from_its_first_epoch(tmp_path):
    from runner.spec import load_job
    from runner.trainers.resolved import Folder, ResolvedJob

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: x\ntrainer: diffpipe\ntask: t2v-1.3B\nmodels: {preset: t2v-1.3B}\n"
                        "datasets:\n  - {path: a, repeats: 3, resolutions: [512, [832, 480]]}\n  - {path: b}\n"
                        "schedule: {batch_size: 2, gradient_accumulation_steps: 2, epochs: 10, max_steps: 100}\ngpus: 2\n")
    job = load_job(job_file)
    folders = [Folder([tmp_path / "a" / f"{i}.mp4" for i in range(5)]), Folder([tmp_path / "b" / "0.png"])]
    schedule = watchdog.schedule_of(ResolvedJob(job=job, target="here", files=None, folders=folders))
    # (5 × 3 × 2 + 1) = 31 examples over a global batch of 2 × 2 × 2 = 8: 3 steps an epoch, 10 epochs, max_steps 100
    assert (schedule.per_epoch, schedule.total, schedule.estimated) == (3, 30, True)
    standing = watchdog.Standing("diffpipe", schedule)
    feed(standing, *[f"steps: {n} loss: 0.1 iter time (s): 2.000 samples/sec: 4.0" for n in (1, 2, 3, 4)])
    assert standing.summary() == "step 4/≈30 · epoch 1/10 · loss 0.1 · 2.00 s/step · ETA ≈0:00:52"
    feed(standing, "Started new epoch: 2")  # its buckets rounded down: 4 steps an epoch, not 3
    assert standing.summary() == "step 4/40 · epoch 2/10 · loss 0.1 · 2.00 s/step · ETA 0:01:12"


def test_musubi_standing_comes_from_its_bar_and_survives_carriage_returns():
    standing = watchdog.Standing("musubi", watchdog.Schedule(None, None, 16))
    new = feed(standing, "epoch 1/16", "steps:   0%|          | 0/48 [00:00<?, ?it/s]",
               "steps:   2%|          | 1/48 [00:03<02:21,  3.00s/it]", "steps:   2%|          | 1/48 [00:03<02:21,  3.00s/it, avr_loss=0.123]",
               "steps:   4%|          | 2/48 [00:06<02:18,  3.00s/it, avr_loss=0.121]")
    assert new == [False, False, True, False, True]
    assert standing.summary() == "step 2/48 · epoch 1/16 · loss 0.121 · 3.00 s/step · ETA 0:02:18"


def test_musubi_standing_reads_only_its_training_bar():
    """Lines of the real musubi-tuner on the H200 (bench/data/gpu_h200_logs/mu33tb.log): the DiT's loading bar in the
    train step is not training, and tqdm's rate after the first step (1198 it/s) is not a step's time."""
    standing = watchdog.Standing("musubi", watchdog.Schedule(None, None, 1))
    new = feed(standing, "Loading wan2.1_t2v_1.3B_bf16.safetensors:  18%|█▊        | 149/825 [00:00<00:00, 846.43it/s]",
               "epoch 1/1", "steps:  25%|██▌       | 1/4 [00:00<00:00, 1198.37it/s, avr_loss=1.83]",
               "Sampling timesteps for prompt 1:  40%|####      | 8/20 [00:04<00:06,  2.00it/s]")
    assert new == [False, False, True, False]
    assert standing.summary() == "step 1/4 · epoch 1/1 · loss 1.83 · ? s/step · ETA ?"
    feed(standing, "steps:  50%|█████     | 2/4 [00:00<00:00,  2.13it/s, avr_loss=1.75]")
    assert standing.summary() == "step 2/4 · epoch 1/1 · loss 1.75 · 0.47 s/step · ETA 0:00:01"


@pytest.mark.parametrize("losses,stops_at", [
    (["0.1", "nan", "nan", "0.1", "nan", "inf", "nan"], 7),  # a finite step resets the streak; Inf counts as NaN
    (["0.1", "nan", "nan", "0.1", "0.1"], None),
])
def test_nan_watch_counts_steps_in_a_row(losses, stops_at):
    standing = watchdog.Standing("diffpipe", None)
    nans = watchdog.NanWatch(3, "diffpipe", "/out/x", "x")
    stopped = None
    for n, loss in enumerate(losses, 1):
        line = logwatch.classify(f"steps: {n} loss: {loss} iter time (s): 1.000 samples/sec: 1.0")
        if (stop := nans.feed(line, standing, standing.feed(line))) and stopped is None:
            stopped = n
            assert stop.summary == "watchdog nan: loss NaN/Inf for 3 steps in a row (steps 5-7)"
    assert stopped == stops_at


def test_sampling_is_a_phase_of_musubis_train_step():
    watch = logwatch.scan(["[runner] step 3/3 train start: accelerate launch …", "steps:  10%|#  | 5/48 [00:15<02:09,  3.00s/it, avr_loss=0.1]",
                           "INFO musubi_tuner.training.trainer_base: generating sample images at step / サンプル画像生成 ステップ: 5",
                           "Sampling timesteps for prompt 1:  40%|####      | 8/20 [00:04<00:06,  2.00it/s]",
                           "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.55 GiB of which 1.00 GiB is free."], "musubi")
    assert watch.oom.phase == logwatch.SAMPLING
    assert logwatch.phase_fix(logwatch.SAMPLING, "musubi").startswith("In sampling, sampling runs the DiT")
