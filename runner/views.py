"""Rich renderings of runner's objects for the terminal."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from runner.job.plan import Plan


def mounts_table(plan: Plan) -> Table:
    t = Table(title="host → container", title_justify="left")
    for col in ("volume", "host path", "container path", "mode"):
        t.add_column(col)
    for m in plan.mounts:
        t.add_row(m.volume, m.host, m.container, "ro" if m.read_only else "rw")
    return t


def plan_summary(plan: Plan, out_dir: Path) -> Group:
    files = ", ".join(sorted(plan.files) + ["plan.json", "command.sh"])
    steps = [Text(f"{i}. {s.name}: ", style="bold") + Text(shlex.join(s.argv)) for i, s in enumerate(plan.steps, 1)]
    return Group(Text(f"{plan.trainer} job {plan.job} → {out_dir}: {files}"), mounts_table(plan), *steps)


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def selftest_table(results: list) -> Group:
    """`runner selftest`: one row per trainer, then each trainer's problems and notes."""
    t = Table(title="runner selftest (Wan2.1 T2V-1.3B, random weights)", title_justify="left")
    for col in ("trainer", "result", "steps", "s/step", "peak GiB", "plan GiB", "LoRA tensors", "rank", "B trained", "dtype"):
        t.add_column(col)
    lines = []
    for r in results:
        lo = r.lora
        b = "n/a" if lo is None else ("yes" if lo.b_nonzero else ("n/a (stand-in)" if r.standin else "no"))
        t.add_row(r.trainer, "[green]pass[/green]" if r.passed else "[red]FAIL[/red]", _num(r.steps, "d"), _num(r.s_per_step, ".2f"),
                  _num(r.peak_gib, ".1f"), _num(r.plan_gib, ".1f"), "n/a" if lo is None else f"{lo.tensors}/{lo.expected}",
                  _num(lo and lo.rank, "d"), b, lo.dtype if lo else "n/a")
        lines += [Text(f"{r.trainer}: FAIL: {p}", style="red") for p in r.problems]
        lines += [Text(f"{r.trainer}: {n}") for n in r.notes]
        if r.step_peaks_gib:
            steps = ", ".join(f"{step} {gib:.1f}" for step, gib in r.step_peaks_gib.items())
            lines.append(Text(f"{r.trainer}: peak GiB per step of the plan: {steps}"))
    if any(r.peak_gib is None for r in results):
        lines.append(Text("peak GiB / plan GiB: n/a without a GPU (RUNNER_GPUS=none)"))
    return Group(t, *lines)


def selftest_json(results: list) -> str:
    import json

    return json.dumps([r.as_dict() for r in results], indent=2)


def jobs_table(records: list) -> Table:
    """`runner ps`: one row per job run (runner.jobs.JobRecord), with why a failed one failed."""
    t = Table("id", "job", "trainer", "host", "status", "exit", "started", "why")
    for r in records:
        t.add_row(r.id, r.name, r.trainer, r.host, r.status, "" if r.exit_code is None else str(r.exit_code), r.started, r.failure)
    return t
