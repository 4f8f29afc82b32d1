"""Rich progress bars on stderr, shared by the long-running commands: one set of columns, counting items or bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

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


def bar(unit: Literal["items", "bytes"], console: Console | None = None, transient: bool = True) -> Progress:
    """What is being done, a bar, how far (n/total items, or bytes and speed), time left; never on stdout."""
    amount = (MofNCompleteColumn(),) if unit == "items" else (DownloadColumn(), TransferSpeedColumn())
    return Progress(TextColumn("{task.description}"), BarColumn(), *amount, TimeRemainingColumn(),
                    console=console or Console(stderr=True), transient=transient)


@contextmanager
def counting(label: str, console: Console | None = None) -> Iterator[Callable[[int], Callable[[], None]]]:
    """Yields `start(total)`, which returns `advance()`; the bar is transient."""
    with bar("items", console) as progress:

        def start(total: int) -> Callable[[], None]:
            task = progress.add_task(label, total=total)
            return lambda: progress.advance(task)

        yield start


@contextmanager
def transfer(console: Console | None = None) -> Iterator[Progress]:
    """A byte-counting progress for downloads that stays on screen: one task per file plus whatever total the caller adds."""
    with bar("bytes", console, transient=False) as progress:
        yield progress
