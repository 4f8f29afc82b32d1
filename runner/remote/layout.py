"""Where a job's files live on a remote host: the one place that decides it.

A host's four folders (`runner hosts add … --models/--data/--cache/--outputs`) may be shared by several people,
each with their own runner (own state folder, own hosts file). So all of a job's files there sit in folders
named by the job's run key, `<job name>-<install id>`: the install id is random, made once per runner state folder
(<state>/install-id), so the same user re-running the same job finds its synced data, caches and outputs again
(reused caches, resume), while another runner, on this machine or another, never shares them.

    <models>/                                 read-only, never written (model files are put there by hand)
    <data>/<run>/<i>-<folder>/                dataset i, synced from this machine (sync deletes only in here)
    <cache>/<run>/cache/                      /cache: musubi's caches and runner's fingerprints beside them
    <cache>/<run>/hf/                         /hf-cache (HF_HOME)
    <cache>/<run>/jobs/<container>/           /job: the rendered job of one run (plan.json, TOMLs)
    <outputs>/<run>/                          /outputs: the job writes <outputs>/<run>/<job name>/, the only
                                              folder `runner pull` fetches
    <cache>/locks/                            one lock file per job being run (runner.jobs.joblock), named by a hash of
                                              the machine that started it and the job's output folder there

diffusion-pipe caches inside each dataset folder (<data>/<run>/<i>-<folder>/cache/, never synced or deleted).
Folders of runner versions before this layout (<data>/<job name>/, <cache>/jobs/, <cache>/hf/) are left alone.
"""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import tempfile

from runner import config
from runner.errors import UserError

INSTALL_ID = re.compile(r"^[0-9a-f]{16}$")


def install_id() -> str:
    """This state folder's id: read, or made once (two runners starting at once agree on one)."""
    path = config.state_dir() / "install-id"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".install-id.")
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(8) + "\n")
        try:
            os.link(tmp, path)  # never replaces an id another runner wrote meanwhile
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    text = path.read_text().strip()
    if not INSTALL_ID.match(text):
        raise UserError(str(path), f"holds {text[:40]!r}, not runner's install id (16 hex digits).",
                        "delete the file: runner makes a new id (jobs on remote hosts then start in new folders there).")
    return text


def run_key(job_name: str) -> str:
    return f"{job_name}-{install_id()}"


def data_dir(data: str, job_name: str, folder: str) -> str:
    """folder: the dataset's folder name in the container, <i>-<name>."""
    return posixpath.join(data, run_key(job_name), folder)


def cache_dir(cache: str, job_name: str) -> str:
    return posixpath.join(cache, run_key(job_name), "cache")


def hf_dir(cache: str, job_name: str) -> str:
    return posixpath.join(cache, run_key(job_name), "hf")


def job_dir(cache: str, job_name: str, container: str) -> str:
    return posixpath.join(cache, run_key(job_name), "jobs", container)


def outputs_dir(outputs: str, job_name: str) -> str:
    """The host side of /outputs; the job's own folder is <this>/<job name>."""
    return posixpath.join(outputs, run_key(job_name))
