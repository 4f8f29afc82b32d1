#!/usr/bin/env python3
"""Runner's log reader and watchdogs on a real trainer's log: what `runner train` would have shown and done.

    python bench/watchdog_replay.py LOG --plan PLAN_DIR [--job JOB.yaml] [--nan-steps 3]

LOG is a trainer log recorded on the GPU machine by bench/gpu_smoke.py (the real trainer's output with
images/run_plan.py's step markers). Each line goes through runner.jobs.logwatch and runner.jobs.watchdog as it
does while runner follows a container; the script prints the standing runner would show, the step where the NaN
watchdog stops the run, and the out-of-memory summary with its phase. Nothing is stood in for but the container
(the lines come from a file, not from `docker logs`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.jobs import watchdog  # noqa: E402


def schedule(plan: dict, job: Path | None) -> watchdog.Schedule | None:
    """As `runner train` records it in plan.json; a plan from `runner render` has none: worked out from the job."""
    if recorded := plan.get("facts", {}).get("schedule"):
        return watchdog.Schedule.from_json(recorded)
    if job is None:
        return None
    from runner.job import render

    return watchdog.schedule_of(render.load_checked(job))


def replay(log: Path, plan: dict, nan_steps: int, job: Path | None) -> dict:
    trainer = plan["trainer"]
    reader = watchdog.LogReader(trainer, schedule(plan, job), nan_steps, "<output>", plan.get("name", "job"))
    shown, stop = [], None
    for raw in log.read_text(errors="replace").splitlines():
        for _, _, new_step, nan in reader.feed(raw):
            if new_step:
                shown.append(reader.standing.summary())
            if stop is None and (stop := nan):
                shown.append(f"STOP {stop.summary}")
    oom = reader.watch.oom
    return {"trainer": trainer, "standing": shown, "nan_stop": stop.summary if stop else None,
            "oom": oom.summary() if oom else None, "oom_phase": oom.phase if oom else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("--plan", type=Path, required=True, help="the folder `runner render` wrote for the run")
    ap.add_argument("--job", type=Path, help="the job file, for diffusion-pipe's total steps when the plan does not record them")
    ap.add_argument("--nan-steps", type=int, default=3, help="watchdog.nan_steps (runner's default: 3)")
    args = ap.parse_args()
    result = replay(args.log, json.loads((args.plan / "plan.json").read_text()), args.nan_steps, args.job)
    for s in result.pop("standing"):
        print(f"  {s}")
    print(json.dumps({"log": args.log.name, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
