"""Everything the CLI shows: rich views for people, one JSON document per command for programs.

Output never cuts or wraps what people copy: piped (not a terminal) a console is as wide as its longest line, so
a path, a command, a URL or an image name stays whole on one line for grep and copy-paste; in a terminal, table
cells fold instead of ending in "…", and commands and fixes print as soft-wrapped single lines.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

PIPED_WIDTH = 100_000  # "unlimited": rich lays out to a width, and no line of runner's comes near this


def console(stderr: bool = False) -> Console:
    c = Console(stderr=stderr)
    if not c.is_terminal:
        c.width = PIPED_WIDTH
    return c


def table(*columns: str, title: str | None = None) -> Table:
    """A table whose long cells fold onto more lines in a narrow terminal rather than being cut."""
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


def line(out: Console, text: str | Text) -> None:
    """One message line; soft-wrapped, so a command or path in it stays one line when copied."""
    out.print(text, soft_wrap=True, highlight=False)


def done(out: Console, verb: str, rest: str) -> None:
    """A finished action: the verb in green, then what it made (e.g. "built runner-musubi:…")."""
    line(out, Text(verb, "green") + Text(f" {rest}"))


def emit_json(data) -> None:
    """The one JSON document of a --json command, alone on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def user_error(err: Console, error, as_json: bool) -> None:
    """A UserError on stderr: one paragraph (each, for a JobInvalid), or with --json one object listing them."""
    if as_json:
        errors = [{"where": e.where, "problem": e.problem, "fix": e.fix} for e in getattr(error, "errors", [error])]
        sys.stderr.write(json.dumps({"errors": errors, "exit_code": error.exit_code}, ensure_ascii=False) + "\n")
        return
    err.print("[bold red]error:[/bold red]", end=" ")
    err.print(str(error), markup=False, highlight=False, soft_wrap=True)  # commands in the fix stay copy-pasteable


# --- jobs: validate, render, plan, env, fields ---------------------------------------------------------------


def validated(out: Console, file: Path, job, point: str = "") -> None:
    """point: which job of a sweep it is (runner.sweep.Point.describe)."""
    line(out, Text.assemble(("ok", "green"), f" {file}{f' {point}' if point else ''}: {job.trainer.value} {job.task.value}, {len(job.datasets)} dataset(s)"))


def validated_json(file: Path, job) -> dict:
    return {"job": str(file), "name": job.name, "trainer": job.trainer.value, "task": job.task.value,
            "datasets": [str(d.path) for d in job.datasets]}


def mounts_table(plan) -> Table:
    t = table("volume", "host path", "container path", "mode", title="host → container")
    for m in plan.mounts:
        t.add_row(m.volume, m.host, m.container, "ro" if m.read_only else "rw")
    return t


def rendered_files(plan, out_dir: Path) -> list[str]:
    """What render wrote: the plan's files, plan.json, a multi-node plan's split (runner.job.render.write), command.sh."""
    from runner.job.render import EVERY_NODE_JSON, ONCE_JSON

    return sorted(plan.files) + ["plan.json"] + [n for n in (ONCE_JSON, EVERY_NODE_JSON) if (out_dir / n).is_file()] + ["command.sh"]


def rendered(out: Console, plan, out_dir: Path) -> None:
    """`runner render`: the files, the mounts, then each step's command on one (soft-wrapped) line."""
    line(out, f"{plan.trainer} job {plan.job} → {out_dir}: {', '.join(rendered_files(plan, out_dir))}")
    out.print(mounts_table(plan))
    for i, s in enumerate(plan.steps, 1):
        line(out, Text(f"{i}. {s.name}: ", style="bold") + Text(shlex.join(s.argv)))


def rendered_json(plan, out_dir: Path) -> dict:
    return {"out": str(out_dir), "files": rendered_files(plan, out_dir), "plan": json.loads(plan.to_json())}


def memory_plan(out: Console, p) -> None:
    """`runner plan`: whether the job fits, the settings picked and the estimated peaks."""
    head = Text("fits", "green") if p.fits else Text("does not fit", "red")
    per_gpu = f" per GPU × {p.layout.gpus}" + (f" ({p.layout.stages} pipeline stages)" if p.layout.stages > 1 else "") if p.layout.gpus > 1 else " GPU"
    line(out, head + Text(f" {p.task} on {p.trainer}: {p.tokens} latent tokens per step, {p.vram_gib:.1f} GiB{per_gpu}"
                          + (f", {p.ram_gib:.0f} GiB RAM" if p.ram_gib else "")))
    for name, value in plan_settings(p).items():
        line(out, f"  {name}: {value}")
    line(out, f"  estimated peak: {p.gpu_gib:.1f} GiB{per_gpu} (+{p.margin_gib:.1f} margin), {p.host_gib:.0f} GiB host RAM")
    if p.estimate_note:
        line(out, f"  {p.estimate_note}")
    for s in p.suggestions:
        line(out, f"  would fit with: {s}")


def plan_settings(p) -> dict:
    settings = {"transformer_dtype": p.transformer_dtype, "activation_checkpointing": p.activation_checkpointing,
                "blocks_to_swap": p.blocks_to_swap, "optimizer": p.optimizer_type or "job / trainer default",
                "text_encoder_dtype": p.text_encoder_dtype}
    return settings | ({"text_encoder_batch": p.text_encoder_batch} if p.trainer == "musubi" else {})


def caption_memory_json(model: str, m) -> dict:
    return {"model": model, **asdict(m), "peak_gib": round(m.peak_gib, 2), "measured": True}


def memory_plan_json(p) -> dict:
    return {**asdict(p), "settings": plan_settings(p) | {"optimizer": p.optimizer_type}}


def records_table(records, columns: dict[str, str]) -> Table:
    """A table of dataclass records: column title → attribute."""
    t = table(*columns)
    for r in records:
        t.add_row(*(str(getattr(r, attr)) for attr in columns.values()))
    return t


def env_table(variables) -> Table:
    return records_table(variables, {"variable": "name", "value": "value", "why": "reason", "source": "source"})


def fields_table(docs) -> Table:
    return records_table(docs, {"field": "name", "type": "type", "default": "default", "description": "description"})


def records_json(key: str, records) -> dict:
    return {key: [asdict(r) for r in records]}


# --- machines: doctor, images, hosts ------------------------------------------------------------------------


def doctor(out: Console, checks) -> None:
    for c in checks:
        mark = Text("ok  ", "green") if c.ok else (Text("FAIL", "red") if c.required else Text("warn", "yellow"))
        line(out, mark + Text(f" {c.name}: {c.detail}"))
        if not c.ok and c.fix:
            line(out, f"       fix: {c.fix}")


def doctor_json(checks, ready: bool) -> dict:
    return {"ready": ready, "checks": [asdict(c) for c in checks]}


def images_table(rows: list[dict]) -> Table:
    t = table("image", "trainer", "variant", "size", "trainer commit", "base image")
    for row in rows:
        pins = row["pins"]
        t.add_row("\n".join(row["tags"]) or row["id"], row["trainer"], row["variant"], f"{row['size'] / 2**30:.2f} GiB",
                  pins.get("commit", "")[:12], pins.get("base_image", ""))
    return t


def hosts_table(hosts) -> Table:
    t = table("name", "ssh", "key", "models", "data", "cache", "outputs")
    for h in hosts:
        t.add_row(h.name, h.ssh, h.key or "", h.models, h.data, h.cache, h.outputs)
    return t


def clusters_table(clusters) -> Table:
    t = table("name", "scheduler", "login", "partition", "account", "runtime", "models", "data", "cache", "outputs")
    for c in clusters:
        t.add_row(c.name, c.scheduler, c.ssh, c.partition or "", c.account or "", c.runtime.value, c.models, c.data, c.cache, c.outputs)
    return t


def build_log(out: Console):
    """A callback printing a build's (or `runner up`'s) output lines as they come, unstyled."""
    return lambda text: out.print(text, markup=False, highlight=False, soft_wrap=True)


# --- job runs: ps, logs, pull --------------------------------------------------------------------------------


def jobs_table(records: list) -> Table:
    """`runner ps`: one row per job run (runner.jobs.records.JobRecord), with why a failed one failed."""
    t = table("id", "job", "kind", "trainer", "host", "gpus", "status", "exit", "started", "why")
    for r in records:
        t.add_row(r.id, r.name, r.kind, r.trainer, r.host, ",".join(map(str, r.gpu_ids)) or "all", r.status, "" if r.exit_code is None else str(r.exit_code),
                  r.started, r.failure)
    return t


def log_text(out: Console, text: str) -> None:
    out.print(text, markup=False, highlight=False, end="", soft_wrap=True)


def pulled(out: Console, stats, record) -> None:
    line(out, f"pulled {stats.files} of {stats.total_files} files ({stats.bytes / 2**20:.1f} MiB) from {record.host} into {record.output_dir}")


# --- data and models: dataset check, dataset prepare, download ----------------------------------------------

_STYLE = {"ok": "green", "warn": "yellow", "drop": "red", "error": "bold red"}


def dataset_report(report, out: Console) -> None:
    """`runner dataset check`: one row per media file and what each trainer does with it, then the tallies."""
    t = table("file", "size", "frames", "fps", "caption", *(trainer.value for trainer in report.settings.trainers), title=str(report.directory))
    for f in report.files:
        frames = f"{f.frames}{'*' if f.frames_from == 'packets' else ''}" if f.kind == "video" and not f.error else ""
        cells = [f.name, f"{f.width}x{f.height}" if f.width else "", frames, f"{f.fps:g}" if f.fps else "", "/".join(sorted(set(f.captions.values())))]
        for trainer in report.settings.trainers:
            v = f.verdicts[trainer.value]
            cells.append(f"[{_STYLE[v.level]}]{v.level}[/]: {v.text}" if v.level != "ok" else v.text)
        t.add_row(*cells)
    out.print(t)
    if any(f.frames_from == "packets" for f in report.files):
        line(out, "* the container has no frame count (e.g. Matroska/WebM): counted by demuxing packets, not from metadata")
    for p in report.problems:
        out.print(f"[{_STYLE[p.level]}]{p.level}[/] {p.trainer + ': ' if p.trainer else ''}{p.text}", soft_wrap=True, highlight=False)
    for trainer, tally in report.counts().items():
        line(out, f"{trainer}: " + ", ".join(f"{n} {level}" for level, n in tally.items() if n))
    s = report.settings
    c = report.caption_coverage()
    line(out, f"captions: {c['captioned']} of {c['of']} file(s) captioned" + (f"; `runner caption {report.directory}` writes the missing ones" if c["without"] else ""))
    line(out, f"settings: task {s.task.value}, frames {s.frames}, source_fps {s.source_fps}, captions *{s.caption_extension}")
    verdict = Text("would fail or drop data", "bold red") if report.failed else Text("every file trains", "green")
    line(out, Text(f"{len(report.files)} media file(s): ") + verdict)


def dataset_report_json(report) -> dict:
    return report.model_dump(mode="json") | {"failed": report.failed, "counts": report.counts(), "captions": report.caption_coverage()}


def prepared(out: Console, err: Console, report) -> None:
    for r in report.results:
        if r.error:
            err.print(Text("failed", "red") + Text(f" {r.source}: {r.error}"), soft_wrap=True, highlight=False)
    line(out, report.summary())


_LABEL = {"present": "[green]verified[/]", "unverified": "check hash", "partial": "[yellow]resume[/]", "missing": "fetch"}


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


def _todo(rows) -> list:
    return [item for item, state in rows if state in ("missing", "partial")]


def download_plan(out: Console, rows) -> None:
    """`runner download`: every file with its size, folder and state, then what is left to fetch."""
    t = table("repository", "file", "size", "to", "state", title="files")
    for item, state in rows:
        t.add_row(item.repo, item.filename, _gb(item.size), str(item.dest.parent), _LABEL[state])
    out.print(t)
    todo = _todo(rows)
    line(out, f"{len(rows)} file(s), {_gb(sum(i.size for i, _ in rows))} in all; to fetch: {len(todo)} file(s), {_gb(sum(i.size for i in todo))}")


def download_json(rows, counts: dict | None) -> dict:
    todo = _todo(rows)
    files = [{"repo": i.repo, "revision": i.revision, "filename": i.filename, "size": i.size, "dest": str(i.dest), "state": s} for i, s in rows]
    return {"files": files, "bytes": sum(i.size for i, _ in rows), "to_fetch": {"files": len(todo), "bytes": sum(i.size for i in todo)},
            "result": counts}


def downloaded(out: Console, counts: dict) -> None:
    line(out, f"fetched {counts['fetched']}, verified {counts['verified']}, already verified {counts['skipped']}: every file matches the hub")


# --- selftest ------------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def selftest_table(results: list) -> Group:
    """`runner selftest`: one row per trainer, then each trainer's problems and notes."""
    t = table("trainer", "result", "steps", "s/step", "peak GiB", "plan GiB", "LoRA tensors", "rank", "B trained", "dtype",
              title="runner selftest (Wan2.1 T2V-1.3B, random weights)")
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


def selftest_data(results: list) -> list:
    """`runner selftest --json`: a list, one object per trainer (runner.selftest.Result.as_dict)."""
    return [r.as_dict() for r in results]


def selftest_json(results: list) -> str:
    return json.dumps(selftest_data(results), indent=2)
