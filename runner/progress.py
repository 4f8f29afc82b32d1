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


class Following:
    """The display of a followed job: a bar for the plan step running with the trainer's standing beside it
    (step of total, loss, s/step, ETA) on a terminal; elsewhere (a pipe, a file, CI) the standing as a line of
    its own every `every_s` seconds, as the bar cannot redraw there."""

    def __init__(self, console: Console | None = None, every_s: float = 30.0):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[standing]}"),
                                 console=console or Console(stderr=True), transient=True)
        self.console = self.progress.console
        self.task = self.progress.add_task("starting", total=None, standing="")
        self.every_s, self.printed_at, self.shown = every_s, None, ""

    def __enter__(self) -> "Following":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def print(self, text: str, style: str | None = None) -> None:
        self.console.print(text, markup=False, highlight=False, style=style)

    def step(self, name: str) -> None:
        """A new plan step: its name, an empty bar."""
        self.progress.update(self.task, description=name, completed=0, total=None, standing="")

    def count(self, done: int, total: int | None) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def standing(self, text: str, now: float, force: bool = False) -> None:
        """The trainer's standing; off a terminal printed as `runner: TEXT` at most every `every_s` seconds."""
        self.progress.update(self.task, standing=text)
        if self.console.is_terminal or text == self.shown:
            return
        if force or self.printed_at is None or now - self.printed_at >= self.every_s:
            self.print(f"runner: {text}", style="cyan")
            self.printed_at, self.shown = now, text
