"""Run a rendered plan against the stand-in trainers on this machine, without Docker.

Container paths in plan.json and the rendered TOMLs are rewritten to their host side (the plan's own mounts),
the trainer folder becomes tests/standin/<trainer>, `python` becomes this interpreter, the stand-in launchers
are put first on PATH and musubi's src/ on PYTHONPATH (what `pip install -e` does in the image). The steps then
run through images/run_plan.py, as inside the image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "tests" / "standin"
TRAINER_DIRS = {"musubi": STANDIN / "musubi-tuner", "diffpipe": STANDIN / "diffusion-pipe"}


def _mapper(pairs: list[tuple[str, str]]):
    pairs = sorted(pairs, key=lambda p: -len(p[0]))
    pattern = re.compile("|".join(rf"(?<![\w/.-]){re.escape(c)}(?=[/\"'\s,\]]|$)" for c, _ in pairs))
    table = dict(pairs)
    return lambda text: pattern.sub(lambda m: table[m.group(0)], text)


def host_plan(rendered: Path, out: Path) -> dict:
    """Rewrite a rendered folder (plan.json + files) into `out` with host paths; returns the rewritten plan."""
    plan = json.loads((rendered / "plan.json").read_text())
    workdir = TRAINER_DIRS[plan["trainer"]]
    pairs = [(m["container"], m["host"]) for m in plan["mounts"] if m["volume"] != "job"]
    pairs += [("/job", str(out)), (plan["workdir"], str(workdir))]
    to_host = _mapper(pairs)
    out.mkdir(parents=True, exist_ok=True)
    for name in plan["files"]:
        (out / name).write_text(to_host((rendered / name).read_text()))
    for step in plan["steps"]:
        argv = [to_host(a) for a in step["argv"]]
        if argv[0] == "python":
            argv[0] = sys.executable
        step["argv"] = argv
    plan["workdir"] = str(workdir)
    plan["output_dir"] = to_host(plan["output_dir"])
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    return plan


def env(extra: dict | None = None) -> dict:
    e = dict(os.environ)
    bins = [str(d / "bin") for d in TRAINER_DIRS.values()] + [str(Path(sys.executable).parent)]
    e["PATH"] = os.pathsep.join(bins + [e.get("PATH", "")])
    e["PYTHONPATH"] = os.pathsep.join([str(TRAINER_DIRS["musubi"] / "src"), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    e["PYTHONUNBUFFERED"] = "1"
    e.setdefault("STANDIN_STEP_SECONDS", "0")
    e.update(extra or {})
    return e


def run_plan(plan_dir: Path, extra_env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "images" / "run_plan.py"), str(plan_dir / "plan.json")],
        env=env(extra_env), capture_output=True, text=True, timeout=timeout,
    )


def run(argv: list[str], cwd: Path, extra_env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    argv = [sys.executable if a == "python" else a for a in argv]
    return subprocess.run(argv, cwd=cwd, env=env(extra_env), capture_output=True, text=True, timeout=timeout)
