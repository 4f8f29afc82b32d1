"""Where a job runs: the local Docker engine (SDK) or a remote host (SSH), behind one Executor protocol.

launch, services, selftest and the CLI talk to an Executor only; what differs between this machine and a
host (where files are, how a container is started, how outputs come back) is decided here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

from runner.errors import UserError
from runner.executors.container import ContainerSpec
from runner.mounts import Mount
from runner.shell import Shell

if TYPE_CHECKING:
    from runner.remote.sync import Stats


# The line a scheduler's run prints when the scheduler restarted it (requeued, its node lost, preempted): it holds
# itself until runner renders its resume from the last checkpoint and releases it (runner.jobs.launch.resume_held);
# its state() then says "AwaitsResume".
AWAITS_RESUME = "runner: requeued;"


class ContainerGone(Exception):
    """The container is not there (removed outside runner, or being removed): its log and exit code are lost."""


class EngineLost(UserError):
    """The Docker engine stopped answering while runner used it (dockerd stopped or restarted, its host down)."""

    exit_code = 75  # EX_TEMPFAIL: the run's state is unknown until the engine is back; README "Your work is safe"


def engine_lost(engine: str, e: BaseException | str) -> EngineLost:
    return EngineLost(engine, f"stopped answering ({e}). A restart of dockerd stops its containers unless live-restore is on.",
                      "once it is back, `runner ps` shows how the run ended, `runner logs JOB` its log and `runner logs -f JOB` "
                      "follows it if it still runs.")


@runtime_checkable
class Executor(Protocol):
    host: str  # the name job records store: "local", or a hosts inventory entry
    shell: Shell  # commands on the target (GPU inventory, nvidia-smi, free disk)
    user: str  # "UID:GID" the containers run as, so files in mounts are the user's
    here: bool  # the target is this machine: the job's paths are the containers' host paths, outputs need no pull
    locks_folder: str  # where the target keeps its job locks (runner.jobs.joblock)
    nodes: int  # the machines a run started here trains on (a Slurm job's nodes; 1 for an engine)

    # --- before a job starts: each raises UserError naming the fix ---------------------------------
    def check_gpus(self) -> None: ...
    def check_image(self, ref: str, build: str) -> None:
        """The image is on the target (a remote host receives it here); build: `runner build` arguments for the fix."""
    def check_models(self, root: Path, missing: dict[str, Path], download: str | None = None) -> None:
        """Refuse the job when model files it uses are missing on the target (job field → path under root on this
        machine; runner.job.checks.missing_model_files: resolving the job looked them up there); download: the
        `runner download` arguments that fetch them (runner.models.presets.download_args), for the fix."""
    def port_free(self, port: int) -> bool: ...

    # --- mounts: the target's side of each volume --------------------------------------------------
    def host_mounts(self, mounts: list[Mount], job_name: str, container: str) -> list[Mount]:
        """The mounts with each host side as the target sees it (pure: nothing is synced or created)."""
    def prepare_mounts(self, spec: ContainerSpec, sources: list[Mount], by_content: bool = False) -> None:
        """Make spec's mounts (the target's, from host_mounts) ready: inputs present, runner's folders created;
        sources are this machine's side of the same mounts, in order (synced to a remote host; by_content: the
        datasets' fingerprints changed, so every file is compared by checksum, whatever its size and mtime)."""
    def pull_outputs(self, job_name: str, into: Path) -> Stats | None:
        """Bring a job's outputs to `into` on this machine; None where they are already here."""

    # --- small files on the target (cache fingerprints, selftest manifests) ------------------------
    def read_text(self, path: Path) -> str | None: ...
    def write_text(self, path: Path, text: str) -> None: ...

    # --- container lifecycle: ContainerGone when the container is not there, EngineLost when the engine is not ---
    def start(self, spec: ContainerSpec) -> str:
        """Start it (a scheduler: submit it); returns the scheduler's id of the run ("" where an engine starts it at once).
        A container the engine created but could not start is removed before the error is raised."""
    def logs(self, container: str, follow: bool = True) -> Iterator[str]: ...
    def wait(self, container: str) -> int: ...
    def state(self, container: str) -> dict:
        """Docker's State of the container ({} when there is none)."""
    def stop(self, container: str, timeout: int = 30) -> None: ...
    def remove(self, container: str) -> None: ...


def executor_for(host: str) -> Executor:
    """The executor of a host name as job records store it: "local", a hosts inventory entry, or "slurm:CLUSTER"."""
    from runner.remote import clusters

    if host.startswith(clusters.PREFIX):
        from runner.executors.slurm import SlurmExecutor

        return SlurmExecutor.for_cluster(host.removeprefix(clusters.PREFIX))
    if host == "local":
        from runner.executors.local import LocalDocker

        return LocalDocker()
    from runner.executors.remote import RemoteDocker  # the remote-hosts feature

    return RemoteDocker.for_host(host)
