"""Random-weight model files on the host that trains: one one-off container of the trainer image writes them
(runner/selftest/make_files.py) into <models folder>/runner-selftest/<hash>/, in the layout of `runner download`.

The folder is named by a hash of everything that decides its bytes (the tensor tables, the writer's source,
the seed), so a later selftest on that host reuses it and a changed table never mixes with old files.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from rich.console import Console

from runner import config
from runner.errors import UserError
from runner.executors.container import ContainerSpec
from runner.models.presets import Format
from runner.mounts import MODELS, Mount
from runner.selftest import arch
from runner.spec import Trainer

FOLDER = "runner-selftest"
WRITER = Path(__file__).with_name("make_files.py")
MANIFEST = "RUNNER-SELFTEST.json"
SEED = 0


@dataclass(frozen=True)
class ModelSet:
    relative: PurePosixPath  # under the models folder: runner-selftest/<hash>
    fill: str  # random (real values) | holes (zeros: the image has no torch, so no trainer in it computes)
    labels: dict[str, str] = field(default_factory=dict)  # e.g. which tokenizer was written


def content_hash(task: str = "t2v-1.3B") -> str:
    table = json.dumps({"files": arch.all_files(task), "seed": SEED}, sort_keys=True).encode()
    return hashlib.sha256(table + WRITER.read_bytes()).hexdigest()[:16]


def host_models_folder(executor, settings: config.Settings) -> str:
    """The models folder on the executor's host: the runner config's locally, the host inventory's remotely."""
    (m,) = executor.host_mounts([Mount("models", str(settings.models), str(MODELS), False)], "selftest", "selftest")
    return m.host


def ensure(executor, image: str, settings: config.Settings, fmt: Format, trainers: list[Trainer], console: Console,
           task: str = "t2v-1.3B") -> ModelSet:
    """The files `trainers` need in format `fmt` for `task`, made in `image` on the executor's host unless already there."""
    digest = content_hash(task)
    relative = PurePosixPath(FOLDER) / digest
    folder = PurePosixPath(host_models_folder(executor, settings)) / relative
    needed = arch.files(fmt, trainers, task)
    manifest = _manifest(executor, folder)
    if manifest and all(manifest["files"].get(f["path"]) == manifest["fill"] for f in needed):
        console.print(f"model files: reusing {folder} ({manifest['fill']})")
        return ModelSet(relative, manifest["fill"], manifest.get("labels", {}))
    console.print(f"model files: writing {len(needed)} files of {task} with random weights into {folder} on {executor.host}")
    with tempfile.TemporaryDirectory(prefix="runner-selftest-") as tmp:
        job = Path(tmp)
        (job / "make_files.py").write_bytes(WRITER.read_bytes())
        (job / "spec.json").write_text(json.dumps({"hash": digest, "seed": SEED, "files": needed}))
        name = f"runner-selftest-models-{digest}"
        spec = ContainerSpec(
            image=image, name=name, command=["python", "/job/make_files.py", "/job/spec.json", str(MODELS / relative)],
            mounts=[Mount("job", str(job), "/job", True), Mount("models", str(settings.models), str(MODELS), False)],
            env={"PYTHONUNBUFFERED": "1"}, user=executor.user, workdir="/job", gpus=False, shm_size=settings.shm_size,
            ulimits=settings.ulimits, labels={"runner.selftest": "models"},
        )
        executor.remove(name)  # a container left by an interrupted selftest
        target = replace(spec, mounts=executor.host_mounts(spec.mounts, "selftest", name))
        executor.prepare_mounts(target, sources=spec.mounts)
        executor.start(target)
        tail = []
        for line in executor.logs(name, follow=True):
            console.print(line, markup=False, highlight=False)
            tail = (tail + [line])[-20:]
        code = executor.wait(name)
        executor.remove(name)
    manifest = _manifest(executor, folder)
    if code != 0 or not manifest:
        raise UserError(f"selftest model files on {executor.host}", f"the writer exited with {code} in {image}:\n" + "\n".join(tail),
                        f"check that the models folder ({folder.parent.parent}) is writable by you and has about 30 GB free.")
    return ModelSet(relative, manifest["fill"], manifest.get("labels", {}))


def _manifest(executor, folder: PurePosixPath) -> dict | None:
    text = executor.read_text(Path(str(folder)) / MANIFEST)
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
