"""Printing a dataset check: a rich table for people, JSON for machines."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from runner.dataset import CheckReport

_STYLE = {"ok": "green", "warn": "yellow", "drop": "red", "error": "bold red"}


def print_report(report: CheckReport, console: Console) -> None:
    table = Table(title=f"{report.directory}", show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("size")
    table.add_column("frames", justify="right")
    table.add_column("fps", justify="right")
    table.add_column("caption")
    for trainer in report.settings.trainers:
        table.add_column(trainer.value, overflow="fold")
    for f in report.files:
        frames = f"{f.frames}{'*' if f.frames_from == 'packets' else ''}" if f.kind == "video" and not f.error else ""
        captions = sorted(set(f.captions.values()))
        cells = [
            f.name,
            f"{f.width}x{f.height}" if f.width else "",
            frames,
            f"{f.fps:g}" if f.fps else "",
            "/".join(captions),
        ]
        for trainer in report.settings.trainers:
            v = f.verdicts[trainer.value]
            cells.append(f"[{_STYLE[v.level]}]{v.level}[/]: {v.text}" if v.level != "ok" else v.text)
        table.add_row(*cells, style=None)
    console.print(table)
    if any(f.frames_from == "packets" for f in report.files):
        console.print("* the container has no frame count (e.g. Matroska/WebM): counted by demuxing packets, not from metadata")
    for p in report.problems:
        who = f"{p.trainer}: " if p.trainer else ""
        console.print(f"[{_STYLE[p.level]}]{p.level}[/] {who}{p.text}")
    for trainer, tally in report.counts().items():
        console.print(f"{trainer}: " + ", ".join(f"{n} {level}" for level, n in tally.items() if n))
    s = report.settings
    console.print(
        f"settings: task {s.task.value}, frames {s.frames}, source_fps {s.source_fps}, captions *{s.caption_extension}"
    )
    verdict = "[bold red]would fail or drop data[/]" if report.failed else "[green]every file trains[/]"
    console.print(f"{len(report.files)} media file(s): {verdict}")


def report_json(report: CheckReport) -> str:
    data = report.model_dump(mode="json")
    data["failed"] = report.failed
    data["counts"] = report.counts()
    return json.dumps(data, indent=2, ensure_ascii=False)
