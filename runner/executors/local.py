"""The local Docker engine, through the Docker SDK for Python."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import time
from pathlib import Path
from typing import Iterator

from runner import config, files, preflight
from runner.errors import UserError
from runner.executors import ContainerGone, engine_lost
from runner.executors.container import ContainerSpec
from runner.executors.refusals import start_refused
from runner.mounts import Mount
from runner.shell import LocalShell


def client():
    import docker

    try:
        c = docker.from_env()
        c.ping()
        return c
    except docker.errors.DockerException as e:
        raise UserError(
            "Docker",
            f"the Docker daemon is unreachable ({e}).",
            "start it (`sudo systemctl start docker`), or add yourself to the docker group "
            "(`sudo usermod -aG docker $USER`, then log in again); DOCKER_HOST selects another engine.",
        ) from e


REMOVAL_WAIT_S = 30.0  # how long remove() waits out another removal of the same container


@contextlib.contextmanager
def engine_calls(container: str) -> Iterator[None]:
    """Docker SDK calls about `container`: ContainerGone when it is not there (or is being removed), EngineLost
    when the engine stops answering (the SDK raises requests' and urllib3's errors then)."""
    import docker
    import requests
    import urllib3

    try:
        yield
    except docker.errors.NotFound as e:
        raise ContainerGone(container) from e
    except docker.errors.APIError as e:
        if e.status_code == 409 and ("marked for removal" in str(e) or "is dead" in str(e)):
            raise ContainerGone(container) from e
        raise
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as e:
        raise engine_lost("Docker", e) from None


class LocalDocker:
    host = "local"
    here = True
    nodes = 1

    @property
    def locks_folder(self) -> str:
        return str(config.state_dir() / "locks")

    def __init__(self, docker_client=None):
        self._client = docker_client
        self.shell = LocalShell()

    @property
    def client(self):
        """The engine, reached on first use: resolving a job here (`runner validate`) needs no Docker."""
        if self._client is None:
            self._client = client()
        return self._client

    @staticmethod
    def host_mounts(mounts: list[Mount], job_name: str, container: str) -> list[Mount]:
        return mounts  # the plan's host paths are this machine's

    @staticmethod
    def pull_outputs(job_name: str, into: Path) -> None:
        return None  # the job wrote them here

    def read_text(self, path: Path) -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    def write_text(self, path: Path, text: str) -> None:
        files.write_text(path, text)

    def check_gpus(self) -> None:
        preflight.check_gpu_runtime(self.client.info(), self.shell)

    @property
    def user(self) -> str:
        return f"{os.getuid()}:{os.getgid()}"

    @staticmethod
    def port_free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    def check_image(self, ref: str, build: str) -> None:
        """build: the arguments of the `runner build` that makes `ref`, for the fix."""
        from runner.images.builder import find_image

        if find_image(self.client, ref) is None:
            raise UserError(f"image {ref}", "is not built on this machine.", f"run `runner build {build}`.")

    def check_models(self, root: Path, missing: dict[str, Path], download: str | None = None) -> None:
        command = f"runner download {download} --to {shlex.quote(str(root))}" if download else "runner download"
        preflight.check_model_files(str(root), root, missing, "this machine",
                                    f"download them (`{command}`) or correct the paths, which are relative to models.root.")

    def prepare_mounts(self, spec: ContainerSpec, sources: list[Mount], by_content: bool = False) -> None:
        """Inputs must exist; runner-owned folders (outputs, cache, HF cache) are created for the user.
        sources are spec.mounts themselves: this machine is the target."""
        for m in spec.mounts:
            p = Path(m.host)
            if m.read_only or m.volume.startswith("data/"):
                if not p.exists():
                    raise UserError(f"mount {m.volume}", f"{p} does not exist on this machine.", f"create it or fix the path that maps to {m.container}.")
            else:
                p.mkdir(parents=True, exist_ok=True)

    def start(self, spec: ContainerSpec) -> str:
        import docker

        secrets = spec.secrets_on_stdin()
        with engine_calls(spec.name):
            try:
                container = self.client.containers.run(**spec.sdk_kwargs())
            except docker.errors.APIError as e:
                self.remove(spec.name)  # run = create + start: a refused start leaves the container in Created
                raise start_refused(str(e.explanation or e), spec, "Docker", "read the message; `runner doctor` checks the setup.") from e
            if secrets:
                try:
                    self._write_stdin(container.id, secrets)
                except (OSError, docker.errors.APIError) as e:
                    self.remove(container.id)  # it would wait for them, then fail
                    raise start_refused(f"its secrets could not be written to its stdin: {e}", spec, "Docker",
                                        "run the command again; `runner doctor` checks the setup.") from e
        return ""

    def _write_stdin(self, container: str, data: bytes) -> None:
        """Write `data` to the started container's stdin (its entrypoint waits for it), through the engine's attach endpoint."""
        sock = self.client.api.attach_socket(container, params={"stdin": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)  # the SDK wraps the upgraded connection in a SocketIO
        try:
            raw.sendall(data)
            raw.shutdown(socket.SHUT_WR)
        finally:
            sock.close()

    def logs(self, container: str, follow: bool = True) -> Iterator[str]:
        with engine_calls(container):
            buf = b""
            for chunk in self.client.containers.get(container).logs(stream=True, follow=follow):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
            if buf:
                yield buf.decode(errors="replace")

    def wait(self, container: str) -> int:
        with engine_calls(container):
            return int(self.client.containers.get(container).wait()["StatusCode"])

    def stop(self, container: str, timeout: int = 30) -> None:
        with contextlib.suppress(ContainerGone), engine_calls(container):
            self.client.containers.get(container).stop(timeout=timeout)

    def remove(self, container: str) -> None:
        """Remove the container, and return once it is gone (the engine answers 409 while another removal of it runs)."""
        import docker

        deadline = time.monotonic() + REMOVAL_WAIT_S
        while True:
            try:
                with engine_calls(container):
                    self.client.containers.get(container).remove(force=True)
                return
            except ContainerGone:
                return
            except docker.errors.APIError as e:
                if e.status_code != 409 or "already in progress" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def state(self, container: str) -> dict:
        try:
            with engine_calls(container):
                return self.client.containers.get(container).attrs["State"]
        except ContainerGone:
            return {}
