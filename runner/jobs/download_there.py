"""`runner download PRESET --host H`: the model files are fetched by the machine that trains, not copied from here.

The plan (files, sizes, hashes) is read from the hub here, as for a local download; the bytes move on the other
machine, where runner.models.hubfetch (standard library only) fetches, resumes and verifies them exactly as a local
download does, reporting progress lines that are shown here. What differs between a GPU host and, later, a cluster's
login node is only a `Fetcher`: where the models folder is there and how the fetcher's Python runs there.

On a GPU host it runs in a one-off container of a trainer image: every host runner trains on has Docker and the image
(runner sends it when missing), while neither Python with huggingface_hub nor any Python at all is something runner
checks for or installs on a host. The hub settings travel as for a job's container: HF_ENDPOINT in its environment,
HF_TOKEN (and an endpoint with a password) on its stdin after the start (runner.executors.container), never in an
argv, a file or a log. Tokenizers are not fetched there: the image seeds them into each job's HF cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable, Protocol

from rich.console import Console
from rich.progress import Progress

from runner import config, preflight
from runner.errors import UserError
from runner.executors import Executor
from runner.executors.container import ContainerSpec
from runner.images import builder
from runner.models import download, hubfetch
from runner.models.download import Item
from runner.mounts import MODELS, Mount
from runner.spec import Trainer

LABEL = "io.runner.download"


class Fetcher(Protocol):
    where: str  # for messages: "host gpu01"
    command: str  # the runner option that names the machine: "--host gpu01"
    models: PurePosixPath  # the models folder on that machine (the jobs' models.root there)
    seen_as: PurePosixPath  # the same folder as the fetcher's Python sees it

    def run(self, folder: Path, args: list[str], env: dict[str, str], line: Callable[[str], None]) -> int:
        """Run `python hubfetch.py ARGS` there in a copy of `folder` (hubfetch.py, items.json) with `env` (secrets
        included: the fetcher keeps them out of argv, files and logs); each output line to `line`; the exit code."""


@dataclasses.dataclass
class InTrainerImage:
    """A fetcher in a one-off container of a trainer image on an executor's host, the models folder at /models."""

    executor: Executor
    image: str
    settings: config.Settings

    def __post_init__(self):
        self.where, self.command = f"host {self.executor.host}", f"--host {self.executor.host}"
        self.models = PurePosixPath(self.executor.host_mounts([Mount("models", "models", str(MODELS), False)], "", "")[0].host)
        self.seen_as = PurePosixPath(str(MODELS))

    def run(self, folder: Path, args: list[str], env: dict[str, str], line: Callable[[str], None]) -> int:
        name = f"runner-download-{secrets.token_hex(4)}"
        spec = ContainerSpec(image=self.image, name=name, command=["python", "hubfetch.py", *args], env={"PYTHONUNBUFFERED": "1", **env},
                             mounts=[Mount("job", str(folder), "/job", True), Mount("models", "models", str(MODELS), False)],
                             user=self.executor.user, workdir="/job", gpus=False, shm_size=self.settings.shm_size,
                             ulimits=self.settings.ulimits, labels={LABEL: "models"})
        target = dataclasses.replace(spec, mounts=self.executor.host_mounts(spec.mounts, "download", name))
        self.executor.prepare_mounts(target, sources=spec.mounts)
        try:
            self.executor.start(target)
            for text in self.executor.logs(name, follow=True):
                line(text)
            return self.executor.wait(name)
        finally:  # Ctrl-C or a lost connection too: the download stops, what arrived stays for the next run
            with contextlib.suppress(Exception):
                self.executor.remove(name)
                (job,) = [m.host for m in target.mounts if m.volume == "job"]
                self.executor.shell.run(["rm", "-rf", "--", job], timeout=60)


def on_host(executor: Executor, settings: config.Settings, trainers: list[Trainer], console: Console) -> InTrainerImage:
    """The fetcher for a host: its models folder made, and the first trainer image of `trainers` it already holds (else
    the first, sent from here as for a job)."""
    from runner.remote.image_transfer import remote_image_id

    models = executor.host_mounts([Mount("models", "models", str(MODELS), False)], "", "")[0].host
    preflight.make_dirs(executor.shell, [models])
    refs = [builder.image_ref(builder.load_pins(t.value, "default", pins_file=settings.pins), settings.ca_bundle) for t in trainers]
    held = [i for i, ref in enumerate(refs) if remote_image_id(executor.shell, ref)]
    chosen = held[0] if held else 0
    executor.check_image(refs[chosen], trainers[chosen].value)
    return InTrainerImage(executor, refs[chosen], settings)


def plan(preset: str, fmt, trainers: list[Trainer], fetcher: Fetcher) -> list[Item]:
    """The preset's files for the models folder there (the tokenizers come with the image: see the module's doc)."""
    items = download.plan(preset, fmt, trainers, Path(str(fetcher.models)), Path("/nonexistent/hf-cache"))
    return [i for i in items if i.folder is not None]


def states(items: list[Item], fetcher: Fetcher, console: Console) -> list[tuple[Item, str]]:
    """Each file's state there: present, unverified, partial or missing."""
    found: dict[str, str] = {}
    _run(items, fetcher, "states", console, lambda e: found.update({e["file"]: e["state"]}) if "state" in e else None)
    return [(i, found[_seen(i, fetcher)]) for i in items]


def fetch(items: list[Item], fetcher: Fetcher, preset: str, console: Console, progress: Progress) -> dict[str, int]:
    """Bring every file to `present` there; counts as download.fetch returns them."""
    counts = {"fetched": 0, "verified": 0, "skipped": 0}
    by_file = {_seen(i, fetcher): i for i in items}
    total = progress.add_task("total", total=sum(i.size for i in items))
    tasks: dict[str, int] = {}
    failed: list[dict] = []

    def event(e: dict) -> None:
        item = by_file[e["file"]]
        if "done" in e:
            if e["file"] not in tasks:
                tasks[e["file"]] = progress.add_task(item.filename, total=item.size)
            progress.update(tasks[e["file"]], completed=e["done"])
        elif "state" in e:
            counts[e["state"]] += 1
            progress.advance(total, item.size)
            if e["file"] in tasks:
                progress.update(tasks[e["file"]], completed=item.size, visible=False)
        elif "error" in e:
            failed.append(e)

    code = _run(items, fetcher, "fetch", console, event, check=False)
    if code != 0:
        e = failed[0] if failed else {"file": "", "error": f"the fetcher exited with {code}"}
        item = by_file.get(e["file"])
        raise UserError(f"{fetcher.where}: {item.repo}/{item.filename}" if item else fetcher.where,
                        f"the download there failed ({e['error']}); what arrived is kept there.",
                        f"run `runner download {preset} {fetcher.command}` again: it resumes; if a hash mismatch repeats, "
                        "the mirror (HF_ENDPOINT) serves a different file.")
    return counts


def _seen(item: Item, fetcher: Fetcher) -> str:
    return str(fetcher.seen_as / PurePosixPath(str(item.dest)).relative_to(fetcher.models))


def _run(items: list[Item], fetcher: Fetcher, mode: str, console: Console, event: Callable[[dict], None], check: bool = True) -> int:
    spec = {"root": str(fetcher.seen_as), "items": [{"repo": i.repo, "revision": i.revision, "filename": i.filename, "size": i.size,
                                                     "sha256": i.sha256, "blob_id": i.blob_id, "dest": _seen(i, fetcher)} for i in items]}
    endpoint, token = download.hub_endpoint(), download.hub_token()
    env = {"HF_ENDPOINT": endpoint, **({"HF_TOKEN": token} if token else {})}

    def line(text: str) -> None:
        if text.startswith(hubfetch.PREFIX):
            event(json.loads(text[len(hubfetch.PREFIX):]))
        else:
            console.print(text, markup=False, highlight=False)

    with tempfile.TemporaryDirectory(prefix="runner-download-") as tmp:
        folder = Path(tmp)
        (folder / "hubfetch.py").write_bytes(Path(hubfetch.__file__).read_bytes())
        (folder / "items.json").write_text(json.dumps(spec))
        code = fetcher.run(folder, [mode, "items.json"], env, line)
    if check and code != 0:
        raise UserError(fetcher.where, f"could not look at the models folder {fetcher.models} (the fetcher exited with {code}).",
                        "read the lines above; check that the folder is writable by the SSH user.")
    return code
