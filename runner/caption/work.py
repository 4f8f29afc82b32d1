"""Which files of a folder get a caption, what the captioner is asked, and how a caption lands next to its file.

Captions go where both trainers read them: `<stem><caption extension>` beside the picture or video (runner.data.check).
A caption that is there is kept; with --overwrite it is replaced and the old one kept beside it as
`<caption>.runner-backup-<UTC time>` (no trainer reads that name). A caption is written to a temporary name in the same
folder and linked or renamed into place, so a kill leaves either the whole caption or none, and without --overwrite a
caption that appeared meanwhile (written by hand) is never replaced: the link fails and runner's is dropped.

An --overwrite pass remembers the captions it already replaced (in runner's state folder), so that running it again
after a kill continues the pass instead of replacing its own captions a second time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from runner import config, files, inputs
from runner.data.media import entry_problem, folder_problem, kind_of, media_files
from runner.errors import UserError

BACKUP = ".runner-backup-"
# what the captioner is asked, and how many tokens it may answer with
STYLES = {
    "short": ("Describe this {kind} in one sentence for a text-to-video training caption: the subject, the action and the "
              "setting. Answer with the caption only.", 80),
    "detailed": ("Describe this {kind} in detail for a text-to-video training caption: the subjects and their appearance, the "
                 "actions and motion, the camera movement, the setting, the lighting and the style. Answer with the caption "
                 "only, as one paragraph.", 300),
}


@dataclass(frozen=True)
class Request:
    directory: Path
    extension: str = ".txt"
    trigger: str = ""
    style: str = "short"
    prompt: str | None = None  # the text of --prompt FILE, instead of the style's
    overwrite: bool = False

    @property
    def max_new_tokens(self) -> int:
        return STYLES[self.style][1]

    def prompt_for(self, kind: str) -> str:
        return (self.prompt or STYLES[self.style][0]).replace("{kind}", kind)


def read_prompt(path: Path) -> str:
    text = inputs.read_text(path, "prompt file").strip()
    if not text:
        raise UserError(str(path), "is empty: the captioner needs an instruction.",
                        "write what the caption should say into it, e.g. \"Describe this video in one sentence.\"")
    return text


def check_folder(directory: Path) -> None:
    problem = folder_problem(directory)
    if problem:
        raise UserError(str(directory), f"{problem}.", "give the folder of pictures and videos to caption.")


def check_trigger(trigger: str) -> str:
    word = trigger.strip()
    if not word or any(c in word for c in "\r\n\0"):
        raise UserError("--trigger", f"{trigger!r} is not a trigger word: it must be text on one line.",
                        "give the word the LoRA learns, e.g. --trigger sks_dog.")
    return word


def caption_of(media: Path, extension: str) -> Path:
    return media.with_name(media.stem + extension)


@dataclass
class Listing:
    todo: list[Path] = field(default_factory=list)  # media that get a caption now
    kept: list[Path] = field(default_factory=list)  # media whose caption stays
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # entries with a media name that are no file to read


def listing(req: Request, replaced: set[str]) -> Listing:
    """replaced: names whose captions this --overwrite pass already wrote (state.replaced)."""
    media, _ = media_files(req.directory, req.extension)
    out = Listing()
    for m in media:
        problem = entry_problem(m, req.directory)
        if problem:
            out.unreadable.append((m, problem))
        elif caption_of(m, req.extension).exists() and (not req.overwrite or m.name in replaced):
            out.kept.append(m)
        else:
            out.todo.append(m)
    return out


def final_text(raw: str, trigger: str) -> str:
    """The caption as written: the trigger word first, then the model's words on one line."""
    words = " ".join(raw.split())
    if trigger and words:
        return f"{trigger}, {words}"
    return trigger or words


def place(media: Path, text: str, req: Request, stamp: str) -> tuple[str, Path | None]:
    """Write the caption of `media`. Returns ("written" or "kept", the backup of the caption it replaced or None)."""
    target = caption_of(media, req.extension)
    tmp = target.with_name(f".{target.name}.runner-{secrets.token_hex(4)}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    try:
        if not req.overwrite:
            try:
                os.link(tmp, target)  # never replaces a caption that appeared meanwhile
            except FileExistsError:
                return "kept", None
            return "written", None
        backup = None
        if target.exists():
            backup = target.with_name(target.name + BACKUP + stamp)
            os.link(target, backup)  # the old caption stays, under a name no trainer reads
        os.replace(tmp, target)
        return "written", backup
    finally:
        tmp.unlink(missing_ok=True)


def utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class State:
    """runner's own record of one folder's captioning (state folder captions/<hash of host and folder>/): the
    captions staged by the container and the names an unfinished --overwrite pass already replaced."""

    def __init__(self, host: str, directory: Path):
        key = hashlib.sha256(f"{host}\0{directory.resolve()}".encode()).hexdigest()[:16]
        self.key, self.directory = key, directory
        self.folder = config.state_dir() / "captions" / key
        self.file = self.folder / "overwrite-pass.json"

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """One `runner caption` per folder and host at a time (a lock file runner holds while it captions)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(str(self.directory), "is being captioned by another `runner caption` of this machine right now.",
                                "wait for it to finish (or stop it), then run this again: it continues where that one stopped.") from None
            yield

    def replaced(self) -> set[str]:
        try:
            return set(json.loads(self.file.read_text())["replaced"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def add_replaced(self, name: str) -> None:
        files.write_text(self.file, json.dumps({"replaced": sorted(self.replaced() | {name})}))

    def pass_finished(self) -> None:
        self.file.unlink(missing_ok=True)


def kind(media: Path) -> str:
    return "video" if kind_of(media) == "video" else "image"
