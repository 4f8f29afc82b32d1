"""A resolved job: the job with every decision made and the facts of its target those decisions came from.

runner.job.resolve builds it once per command; the checks read it and the trainer modules render it without
reading a file or asking a machine anything more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

from runner.data.media import FolderKind, media_kind
from runner.gpu.inventory import Inventory
from runner.gpu.planner import MemoryPlan
from runner.models.modelfiles import ModelFiles
from runner.models.weights import WeightsInfo, info
from runner.spec import Job


@dataclass(frozen=True)
class Folder:
    """One dataset folder, listed once: its media and ignored files (media.media_files), None when it is not a folder."""

    media: list[Path] | None
    ignored: list[Path] = field(default_factory=list)

    @property
    def holds(self) -> FolderKind:
        return media_kind(self.media or [])


class Caches(str, Enum):
    """What the caching steps do: make them (none recorded), regenerate (the data changed), reuse (fingerprints match)."""

    make = "make"
    regenerate = "regenerate"
    reuse = "reuse"


class Earlier(str, Enum):
    """What a run does when the job's output folder holds LoRAs or checkpoints of an earlier run."""

    refuse = "refuse"  # `runner train`: stop and ask for one of the two below
    resume = "resume"  # continue the latest run from its latest checkpoint
    fresh = "fresh"  # start a new run that cannot overwrite the earlier files


Entries = dict[str, float]  # paths under a folder, three levels down ("run/x-state/file"; folders end in "/") → mtime


@dataclass(frozen=True)
class Outputs:
    """The job's output folder as the target sees it: its entries and the readers a trainer module uses for the few
    files its resume decision needs."""

    folder: str  # on the target
    entries: Entries
    read_text: Callable[[str], str | None]  # a file under folder, None when unreadable
    read_header: Callable[[str], dict | None]  # a safetensors header under folder, None when unreadable


@dataclass(frozen=True)
class Resume:
    """Where a run starts: a new run in run_folder, or the latest run continued from `checkpoint` (both relative to
    the job's output folder), with the epoch and optimizer-step counters that checkpoint had reached."""

    run_folder: str = ""  # "" = the job's output folder itself
    checkpoint: str | None = None  # None: a new run
    epoch: int = 0
    step: int = 0


@dataclass(frozen=True)
class ResolvedJob:
    job: Job  # with the memory plan applied
    target: str  # the machine the facts were gathered on
    files: ModelFiles  # host paths as the job names them (under models.root)
    folders: list[Folder]  # one per dataset, in order
    # what each model path (and models.root) is on the target: folder, file, broken link, special or missing
    kinds: dict[Path, str] = field(default_factory=dict)
    # safetensors headers read on the target, or why a model file (a .safetensors, a .pth) cannot be read there
    headers: dict[Path, dict | str] = field(default_factory=dict)
    caches: Caches = Caches.make
    memory_plan: MemoryPlan | None = None  # for the target's GPU (or the memory given); applied to `memory: auto`
    inventory: Inventory | None = None  # the target's GPUs, when they were asked for
    ram_gib: float | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)  # cache folder on the target → fingerprint to record
    notes: list[str] = field(default_factory=list)  # what the user should know about the decisions (a stale cache)
    start: Resume = Resume()  # a new run in the output folder unless resolved against earlier outputs

    def present(self, path: Path) -> bool:
        """Whether a model file or folder the job uses is on the target."""
        return self.kinds.get(path, "missing") in ("file", "folder", "special")

    def kind(self, index: int) -> FolderKind:
        """The dataset's `kind:`, or what its folder holds when it is auto."""
        d = self.job.datasets[index]
        return self.folders[index].holds if d.kind == "auto" else d.kind  # type: ignore[return-value]

    def weights(self, path: Path | None) -> WeightsInfo | None:
        """What the header of a model file says, None when it was not read (absent, not safetensors)."""
        header = self.headers.get(path) if path is not None else None
        return info(header) if isinstance(header, dict) else None

    @property
    def dit_dtype(self) -> str | None:
        w = self.weights(self.files.dit)
        return w.dtype if w else None
