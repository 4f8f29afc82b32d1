"""Rich progress bars on stderr, shared by the long-running commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


@contextmanager
def counting(label: str, console: Console | None = None) -> Iterator[Callable[[int], Callable[[], None]]]:
    """Yields `start(total)`, which returns `advance()`; the bar is transient and never touches stdout."""
    console = console or Console(stderr=True)
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True) as progress:

        def start(total: int) -> Callable[[], None]:
            task = progress.add_task(label, total=total)
            return lambda: progress.advance(task)

        yield start


@contextmanager
def transfer(console: Console | None = None) -> Iterator[Progress]:
    """A byte-counting progress for downloads: one task per file plus whatever total the caller adds."""
    console = console or Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        yield progress
