"""Whether a machine can run a job, and how: env, plan, doctor."""

from __future__ import annotations

from pathlib import Path

import typer

from runner import cli, views
from runner.cli import HostOpt, JobArg, JsonOpt, RamOpt, VramOpt, app, read_first, resolved_with_gpus, target


@app.command("env")
def env_cmd(
    job: Path = typer.Argument(None, help="the job file (YAML); without it, the GPU rules alone"),
    host: str = HostOpt,
    as_json: bool = JsonOpt('{"variables": [{"name", "value", "reason", "source"}]}'),
) -> None:
    """Print the environment runner would inject into the training container, and why."""
    from runner.gpu.envrules import env_for_job

    variables = env_for_job(*resolved_with_gpus(job, host))
    views.emit_json(views.records_json("variables", variables)) if as_json else cli.out.print(views.env_table(variables))


@app.command("plan")
def plan_cmd(
    job: Path = JobArg,
    vram: float = VramOpt("GPU memory in GiB (default: the smallest GPU of the machine)"),
    ram: float = RamOpt("host RAM in GiB (default: the machine's)"),
    host: str = HostOpt,
    caption: str = typer.Option(None, "--caption", help="also the GPU memory of captioning the job's clips with this captioner preset (`runner caption --model`), an estimate"),
    as_json: bool = JsonOpt('{"fits", "task", "trainer", "tokens", "vram_gib", "ram_gib", "gpu_gib", "margin_gib", "host_gib", '
                            '"caching_gpu_gib", "training_gpu_gib", "suggestions", "settings": {the job settings picked}, and the planner\'s raw fields; '
                            'with --caption: "captioning": {"model", "frames", "vision_tokens", "peak_gib", …, "measured": true}}'),
) -> None:
    """Pick precision, checkpointing, block swap and optimizer so the job fits the GPU, from measured memory: the plan
    `memory: auto` gets when the job is resolved on this machine or --host.

    Exits 1 when nothing fits."""
    from runner.job.render import memory_plan

    read = read_first(job)
    captioning = caption_memory(read[0], caption) if caption else None  # a bad preset is refused before the target is asked
    p = memory_plan(job, target(host, gpus=True), vram, ram, read)
    if as_json:
        views.emit_json(views.memory_plan_json(p) | ({"captioning": views.caption_memory_json(caption, captioning)} if captioning else {}))
    else:
        views.memory_plan(cli.out, p)
        if captioning:
            views.line(cli.out, f"captioning with {caption}: {captioning.describe()}")
    if not p.fits:
        raise typer.Exit(1)


@app.command("doctor")
def doctor_cmd(job: Path = typer.Argument(None, help="a job file: also check its volume dirs and plan's RAM"),
               host: str = HostOpt, as_json: bool = JsonOpt('{"ready", "checks": [{"name", "ok", "detail", "fix", "required"}]}')) -> None:
    """Check that this host can run training: Docker, NVIDIA Container Toolkit, GPUs, driver, disk, RAM, /dev/shm.

    Exits 1 when a required check fails."""
    from runner.executors.doctor import doctor_for_job, ready

    checks = doctor_for_job(*resolved_with_gpus(job, host))
    if as_json:
        views.emit_json(views.doctor_json(checks, ready(checks)))
    else:
        views.doctor(cli.out, checks)
    if not ready(checks):
        if not as_json:
            views.line(cli.err, "environment not ready: fix the FAIL lines above")
        raise typer.Exit(1)


def caption_memory(job, preset: str):
    """The captioner's GPU memory for the job's clips: its largest frame bucket, sampled at the training fps."""
    from runner.caption.run import FRAME_PIXELS
    from runner.caption.work import STYLES
    from runner.gpu.captioning import estimate, job_frames
    from runner.models import captioner
    from runner.spec import DEFAULT_VIDEO_FRAMES

    model = captioner.get(preset, "--caption")
    frames = job_frames([d.frames for d in job.datasets], DEFAULT_VIDEO_FRAMES[-1])
    return estimate(model, frames, FRAME_PIXELS, max(n for _, n in STYLES.values()))
