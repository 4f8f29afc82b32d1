"""Which model files a job uses, as host paths, with the official file names as defaults.

The official Wan2.1 directory (`models.ckpt_dir`) holds config.json, the VAE, the T5 and (I2V) the CLIP
under fixed names; single files given in the job take precedence. Paths are relative to `models.root`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runner.errors import JobInvalid, UserError
from runner.spec import Job

VAE = "Wan2.1_VAE.pth"
VAE_22 = "Wan2.2_VAE.pth"  # TI2V-5B's VAE (16x16 spatial, 48 channels); the A14B experts use Wan2.1's
T5 = "models_t5_umt5-xxl-enc-bf16.pth"
CLIP = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
T5_TOKENIZER = "google/umt5-xxl"
CLIP_TOKENIZER = "xlm-roberta-large"


@dataclass(frozen=True)
class ModelFiles:
    root: Path
    ckpt_dir: Path | None
    dit: Path | None
    t5: Path | None
    vae: Path | None
    clip: Path | None
    dit_high_noise: Path | None = None  # A14B: the high-noise expert

    @property
    def t5_outside_ckpt(self) -> bool:
        """A T5 other than the official one in ckpt_dir (diffusion-pipe then needs llm_path)."""
        return self.t5 is not None and (self.ckpt_dir is None or self.t5 != self.ckpt_dir / T5)


def resolve(job: Job, listdir: Callable[[Path], list[str]] | None = None) -> ModelFiles:
    """Host paths of the job's model files: its own fields, else its preset's files, else official names.
    listdir: the names in a folder under models.root where the files are (a sharded DiT's first shard)."""
    m = job.models
    root = m.root
    if m.preset:
        from runner.models.presets import preset_files

        given = {k: getattr(m, k) for k in FIELDS if getattr(m, k) is not None}
        m = m.model_copy(update={**preset_files(m.preset, m.format, job.trainer, job.task, root, listdir), **given})

    def under_root(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = p.expanduser()
        # normpath: a "sub/../x" inside the root renders as /models/x, one that leaves it is refused below
        return Path(os.path.normpath(p if p.is_absolute() else root / p))

    ckpt = under_root(m.ckpt_dir)

    def official(name: str) -> Path | None:
        return ckpt / name if ckpt else None

    files = ModelFiles(
        root=root,
        ckpt_dir=ckpt,
        dit=under_root(m.dit),
        t5=under_root(m.t5) or official(T5),
        vae=under_root(m.vae) or official(vae_name(job.task)),
        clip=(under_root(m.clip) or official(CLIP)) if job.task.needs_clip else None,
        dit_high_noise=under_root(m.dit_high_noise) if job.task.has_experts else None,
    )
    outside = outside_root(files)
    if outside:
        raise JobInvalid(outside)
    return files


FIELDS = ("ckpt_dir", "dit", "t5", "vae", "clip", "dit_high_noise")


def vae_name(task) -> str:
    """The official VAE file of a task's repository (runner.spec.Task)."""
    return VAE_22 if task.size == "5B" else VAE


def outside_root(files: ModelFiles) -> list[UserError]:
    """Model paths that leave models.root: the container mounts only the root (at /models), so it cannot open them."""
    root = Path(os.path.normpath(files.root))
    return [
        UserError(
            f"models.{name}",
            f"{path} is outside models.root ({root}); only models.root is mounted (at /models), so the trainer cannot open it.",
            f"move it into {root} and give models.{name} relative to it, or set models.root to a folder that holds every model file.",
        )
        for name in FIELDS
        if (path := getattr(files, name)) is not None and not path.is_relative_to(root)
    ]


# What each model path must be: models.root and ckpt_dir are folders, the weight files regular files.
EXPECTED_KIND = {"root": "folder", "ckpt_dir": "folder", "dit": "file", "t5": "file", "vae": "file", "clip": "file", "dit_high_noise": "file"}

# One round trip: the kind of each path, one per line, in order ("$1" is models.root). A dangling or looping link is
# "broken link"; a path whose real location is not under models.root's (a symlink out of it) is "outside": the
# container mounts only the root and cannot follow it.
KINDS_COMMAND = (
    'root=$(readlink -f -- "$1"); shift; for f do '
    'if [ -L "$f" ] && [ ! -e "$f" ]; then echo "broken link"; continue; fi; '
    'real=$(readlink -f -- "$f"); if [ -e "$f" ] && [ "$real" != "$root" ]; then case $real in "$root"/*) ;; *) echo outside; continue;; esac; fi; '
    'if [ -d "$f" ]; then echo folder; elif [ -f "$f" ]; then echo file; elif [ -e "$f" ]; then echo special; else echo missing; fi; done'
)


def path_kinds(shell, root: str, paths: list[str]) -> list[str]:
    """folder, file, broken link, outside, special (a FIFO, a device) or missing for each path, on the shell's machine."""
    if not paths:
        return []
    r = shell.run(["sh", "-c", KINDS_COMMAND, "sh", root, *paths], timeout=30)
    kinds = r.stdout.splitlines()
    if not r.ok or len(kinds) != len(paths):
        raise UserError(shell.name, f"cannot look up the model files there ({r.stderr.strip()[:200] or 'no answer'}).",
                        "check that the host is reachable and its models folder readable")
    return kinds
