"""A remote host's Docker engine, through the `docker` CLI over SSH (Fabric): same interface as LocalDocker.

The container is started detached on the host, so it outlives the SSH session; logs, wait, stop and state
are `docker` commands run later from any terminal. Host sides of the mounts are the host's own folders:
models must already be there (they are large), datasets and the rendered job are synced incrementally.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from pathlib import Path, PurePosixPath
from typing import Iterator

from rich.console import Console

from runner import preflight
from runner.errors import UserError
from runner.executors import ContainerGone, engine_lost
from runner.executors.container import LABEL_PORT, LABEL_RECORD, ContainerSpec
from runner.executors.refusals import start_refused
from runner.mounts import Mount
from runner.progress import bar as progress_bar
from runner.remote import hosts, image_transfer, layout, ssh, sync
from runner.remote.hosts import Host
from runner.shell import Result, missing_files

class RemoteDocker:
    here = False
    nodes = 1

    def __init__(self, host: Host, console: Console | None = None):
        self.spec_host = host
        self.host = host.name
        self.console = console or Console(stderr=True)
        self.shell = ssh.RemoteShell(host.name, ssh.connect(host), host)
        r = self.shell.run(["sh", "-c", 'printf "%s\\n" "$HOME"; id -u; id -g'], timeout=30)
        home, uid, gid = (r.stdout.split("\n") + ["", "", ""])[:3]
        self.home, self.user = home, f"{uid}:{gid}"
        self._info: dict | None = None
        self._ports: set[int] | None = None

    @classmethod
    def for_host(cls, name: str) -> "RemoteDocker":
        return cls(hosts.get(name))

    def close(self) -> None:
        self.shell.conn.close()

    # --- host folders ---------------------------------------------------------------------------

    def folder(self, volume: str) -> str:
        """models, data, cache or outputs on the host, with ~ expanded (docker needs absolute paths)."""
        p = getattr(self.spec_host, volume)
        return posixpath.join(self.home, p[2:]) if p.startswith("~/") else p

    @property
    def locks_folder(self) -> str:
        return posixpath.join(self.folder("cache"), "locks")

    def outputs_of(self, job_name: str) -> str:
        """The job's own output folder on the host (runner.remote.layout): the only one `runner pull` reads."""
        return posixpath.join(layout.outputs_dir(self.folder("outputs"), job_name), job_name)

    # --- preflight ------------------------------------------------------------------------------

    def info(self) -> dict:
        if self._info is None:
            self._info = preflight.docker_info(self.shell)
        return self._info

    def check_gpus(self) -> None:
        preflight.check_gpu_runtime(self.info(), self.shell)
        preflight.gpus(self.shell)

    def check_folders(self) -> None:
        paths = {v: self.folder(v) for v in ("models", "data", "cache", "outputs")}
        missing = missing_files(self.shell, "/", [paths["models"].lstrip("/")])
        if missing:
            raise UserError(f"host {self.host}", f"has no models folder {paths['models']}.",
                            f"let the host download them (`runner download PRESET --host {self.host}` makes the folder), or copy them there with scp, "
                            f"or point the host at them: `runner hosts add {self.host} --ssh {self.spec_host.ssh} --models DIR`.")
        preflight.make_dirs(self.shell, [paths["data"], paths["cache"], paths["outputs"]])
        free = preflight.free_bytes(self.shell, [paths["cache"], paths["outputs"]])
        for path, n in free.items():
            if n < preflight.MIN_FREE_GB * 2**30:
                raise UserError(f"host {self.host}: {path}", f"has {n / 2**30:.2f} GiB free; caches and LoRA saves need at least {preflight.MIN_FREE_GB:g} GiB.",
                                "free space there, or choose a larger disk with `runner hosts add NAME … --cache/--outputs DIR`.")

    def check_image(self, ref: str, build: str) -> None:
        from runner.executors.local import client

        self.check_folders()
        image_transfer.ensure(self.shell, client(), ref, build, self.info(), self.console)

    def check_models(self, root: Path, missing: dict[str, Path], download: str | None = None) -> None:
        """Model files are not synced (tens of GB): they must be on the host, in the layout of models.root."""
        host_models = self.folder("models")
        fetch = f"let the host download them: `runner download {download} --host {self.host}`, or copy" if download else "copy"
        preflight.check_model_files(host_models, root, missing, f"host {self.host}",
                                    f"{fetch} them there in the layout of models.root: `scp -r {root}/. {self.spec_host.ssh}:{host_models}/` from here.")

    def port_free(self, port: int) -> bool:
        """Not used by a runner container on the host (from any machine) nor by anything listening there."""
        if self._ports is None:
            r = self.shell.run(["docker", "ps", "--filter", f"label={LABEL_RECORD}", "--format", f'{{{{.Label "{LABEL_PORT}"}}}}'])
            taken = {int(x) for x in r.stdout.split() if x.isdigit()}
            ss = self.shell.run(["sh", "-c", "ss -Htln 2>/dev/null || netstat -tln 2>/dev/null"])
            for line in ss.stdout.splitlines():
                for field in line.split():
                    if ":" in field and field.rsplit(":", 1)[1].isdigit():
                        taken.add(int(field.rsplit(":", 1)[1]))
            self._ports = taken
        return port not in self._ports

    # --- mounts: sync and swap the host side ----------------------------------------------------

    def host_mounts(self, mounts: list[Mount], job_name: str, container: str) -> list[Mount]:
        """The job's mounts with the host side on this host. This machine's Hugging Face login stays here: a job
        there that needs a token names it in its `env:` (HF_TOKEN), which reaches the container on stdin."""
        return [dataclasses.replace(m, host=self._host_side(m, job_name, container)) for m in mounts
                if not m.volume.startswith("hf-cache/")]

    def prepare_mounts(self, spec: ContainerSpec, sources: list[Mount], by_content: bool = False) -> None:
        """Sync the datasets and the rendered job from this machine (sources) to their folders on the host
        (spec.mounts, from host_mounts); create runner's folders there."""
        how = sync.way(self.shell)
        with progress_bar("bytes", self.console) as progress:
            on_host = {m.volume: m for m in spec.mounts}  # host_mounts leaves some out (the HF login)
            for local in sources:
                if local.volume.startswith("data/") or local.volume == "job":
                    there = on_host[local.volume]
                    what = f"{local.volume} ({local.host})"
                    task = progress.add_task(f"sync {local.volume} → {self.host}", total=None)
                    skip = sync.DATASET_KEEP if local.volume.startswith("data/") else ()
                    stats = sync.upload(self.shell, Path(local.host), there.host, what, skip=skip, by_content=by_content, how=how,
                                        progress=lambda n, t=task: progress.advance(t, n))
                    progress.remove_task(task)
                    self.console.print(f"synced {what}: {stats.files} of {stats.total_files} files sent ({stats.bytes / 2**20:.1f} MiB, "
                                       f"{stats.way}{', by checksum' if by_content else ''}), {stats.deleted} removed")
                    if stats.clamped:
                        self.console.print(f"warning: {len(stats.clamped)} file(s) of {local.host} have modification times SFTP cannot "
                                           f"carry (before 1970 or after 2106: {', '.join(stats.clamped[:3])}{' …' if len(stats.clamped) > 3 else ''}); "
                                           f"their copies on {self.host} got the nearest time it can.", style="yellow", highlight=False)
        preflight.make_dirs(self.shell, [m.host for m in spec.mounts if m.volume in ("cache", "outputs", "hf-cache")])

    def pull_outputs(self, job_name: str, into: Path) -> sync.Stats:
        return sync.download(self.shell, self.outputs_of(job_name), into)

    def _host_side(self, m: Mount, job_name: str, container: str) -> str:
        """The host folder of a mount, in the run's own folders (runner.remote.layout)."""
        if m.volume == "models":
            return self.folder("models")
        if m.volume.startswith("data/"):
            # same folder name as in the container: /data/<i>-<safe name>
            return layout.data_dir(self.folder("data"), job_name, PurePosixPath(m.container).name)
        if m.volume == "hf-cache":
            return layout.hf_dir(self.folder("cache"), job_name)
        if m.volume == "job":
            return layout.job_dir(self.folder("cache"), job_name, container)
        if m.volume == "cache":
            return layout.cache_dir(self.folder("cache"), job_name)
        if m.volume == "outputs":
            return layout.outputs_dir(self.folder("outputs"), job_name)
        raise ValueError(f"no host folder is laid out for volume {m.volume!r} (runner.remote.layout)")

    # small files on the host: the dataset fingerprints kept beside the caches there
    def read_text(self, path: Path) -> str | None:
        r = self.shell.run(["cat", "--", str(path)], timeout=30)
        return r.stdout if r.ok else None

    def write_text(self, path: Path, text: str) -> None:
        self.shell.run(["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1.tmp" && mv -- "$1.tmp" "$1"', "sh", str(path)],
                       timeout=30, stdin=text.encode())

    # --- container lifecycle --------------------------------------------------------------------

    def start(self, spec: ContainerSpec) -> str:
        """`docker run` on the host; secret values go to the container's stdin afterwards, never into an argv."""
        r = self.shell.run(spec.cli_argv(), timeout=120)
        if r.ok and spec.secret_env():
            r = self._write_stdin(spec.name, spec.secrets_on_stdin())
        if not r.ok:
            self.shell.run(["docker", "rm", "--force", spec.name], timeout=60)  # `docker run` leaves a created container behind
            raise start_refused(r.stderr.strip()[:500], spec, f"Docker on {self.host}", "read the message; check the host with `ssh HOST docker info`.")
        return ""

    def _write_stdin(self, container: str, data: bytes) -> Result:
        """Write `data` to the started container's stdin through the engine's attach endpoint, reached by the docker
        CLI's own connection to it (`docker system dial-stdio`, what `DOCKER_HOST=ssh://` uses): no file, no argv."""
        request = (f"POST /containers/{container}/attach?stream=1&stdin=1 HTTP/1.1\r\nHost: docker\r\n"
                   "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n").encode()
        reply, r = self.shell.upgrade(["docker", "system", "dial-stdio"], request, data, timeout=60)
        if r.ok and not reply.startswith(b"HTTP/1.1 101"):
            return Result(1, "", f"the engine refused to attach to its stdin: {reply.decode(errors='replace').splitlines()[0] if reply else 'no reply'}")
        return r

    def logs(self, container: str, follow: bool = True) -> Iterator[str]:
        # one pipe for both streams keeps the container's order (a traceback on stderr after the stdout line before it)
        argv = ["docker", "logs", *(["--follow"] if follow else []), container]
        yield from self.shell.lines(["sh", "-c", 'exec "$@" 2>&1', "sh", *argv])

    def wait(self, container: str) -> int:
        r = self.shell.run(["docker", "wait", container], timeout=7 * 24 * 3600)
        if not r.ok or not r.stdout.strip().lstrip("-").isdigit():
            raise self._failed(r, container)
        return int(r.stdout.strip())

    def _failed(self, r, container: str) -> Exception:
        """What a failed `docker` command about `container` means: it is not there, or the engine is not."""
        if "No such container" in r.stderr or "No such object" in r.stderr:
            return ContainerGone(container)
        if "Cannot connect to the Docker daemon" in r.stderr or "Is the docker daemon running" in r.stderr:
            return engine_lost(f"Docker on {self.host}", r.stderr.strip()[:200])
        return UserError(f"container {container}", f"could not be read on {self.host} ({r.stderr.strip()[:200]}).", "`runner ps` lists the jobs there.")

    def stop(self, container: str, timeout: int = 30) -> None:
        self.shell.run(["docker", "stop", "--time", str(timeout), container], timeout=timeout + 60)

    def remove(self, container: str) -> None:
        self.shell.run(["docker", "rm", "--force", container], timeout=60)

    def state(self, container: str) -> dict:
        r = self.shell.run(["docker", "inspect", "--type", "container", "--format", "{{json .State}}", container], timeout=30)
        if r.ok:
            return json.loads(r.stdout)
        if isinstance(failure := self._failed(r, container), ContainerGone):
            return {}
        raise failure
