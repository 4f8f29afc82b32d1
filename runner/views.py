"""Rich renderings of runner's objects for the terminal."""

from __future__ import annotations

import shlex
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from runner.plan import Plan


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


def jobs_table(records: list) -> Table:
    """`runner ps`: one row per job run (runner.jobs.JobRecord), with why a failed one failed."""
    t = Table("id", "job", "trainer", "host", "status", "exit", "started", "why")
    for r in records:
        t.add_row(r.id, r.name, r.trainer, r.host, r.status, "" if r.exit_code is None else str(r.exit_code), r.started, r.failure)
    return t
