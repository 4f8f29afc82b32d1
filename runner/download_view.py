"""Printing a download plan."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from runner.download import Item, State

_LABEL = {"present": "[green]verified[/]", "unverified": "check hash", "partial": "[yellow]resume[/]", "missing": "fetch"}


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


def print_plan(rows: list[tuple[Item, State]], console: Console) -> None:
    table = Table(title="files")
    for column in ("repository", "file", "size", "to", "state"):
        table.add_column(column, overflow="fold")
    for item, state in rows:
        table.add_row(item.repo, item.filename, _gb(item.size), str(item.dest.parent), _LABEL[state])
    console.print(table)
    todo = [item for item, state in rows if state in ("missing", "partial")]
    console.print(f"{len(rows)} file(s), {_gb(sum(i.size for i, _ in rows))} in all; to fetch: {len(todo)} file(s), {_gb(sum(i.size for i in todo))}")
