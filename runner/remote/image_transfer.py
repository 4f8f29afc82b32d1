"""Put a locally built image on a remote host: `docker save` from the local engine streamed into `docker load`
on the host over the SSH connection, with a progress bar in bytes. Skipped when the host has that image ID. One send
of an image to a host at a time from this machine: a second (two jobs submitted to one host at once, CI sending ahead
of its tests) waits for the first, then finds the image there.
"""

from __future__ import annotations

import time

from rich.console import Console

from runner import preflight, waits
from runner.errors import UserError
from runner.progress import bar as progress_bar
from runner.remote.ssh import RemoteShell

CHUNK = 1 << 20


def remote_image_id(shell: RemoteShell, ref: str) -> str | None:
    r = shell.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], timeout=30)
    return r.stdout.strip() if r.ok else None


def ensure(shell: RemoteShell, local_client, ref: str, build: str, host_info: dict, console: Console | None = None) -> float | None:
    """Make the host (its engine's `docker info`: host_info) hold image `ref` with the local image's ID; returns
    seconds spent sending, None if it was there."""
    from runner.images.builder import find_image

    image = find_image(local_client, ref)
    if image is None:
        raise UserError(f"image {ref}", f"is not built on this machine, so it cannot be sent to {shell.name}.",
                        f"run `runner build {build}` here first.")
    if remote_image_id(shell, ref) == image.id:
        return None
    console = console or Console(stderr=True)
    engine = host_info.get("ID", shell.name).replace(":", "")[:12]
    with waits.one_at_a_time("sends", f"{engine}-{ref}", lambda: console.print(f"waiting for another send of {ref} to {shell.name}")):
        if remote_image_id(shell, ref) == image.id:
            return None
        return _send(shell, image, ref, host_info.get("DockerRootDir", "/var/lib/docker"), console)


def _send(shell: RemoteShell, image, ref: str, docker_root: str, console: Console) -> float:
    size = int(image.attrs.get("Size", 0))
    preflight.check_free(shell, docker_root, size, f"loading image {ref}")
    started = time.monotonic()
    with progress_bar("bytes", console) as progress:
        task = progress.add_task(f"image → {shell.name}", total=size or None)
        result = shell.feed(["docker", "load"], image.save(chunk_size=CHUNK, named=ref), lambda n: progress.advance(task, n))
    seconds = time.monotonic() - started
    if not result.ok or remote_image_id(shell, ref) != image.id:
        raise UserError(f"host {shell.name}", f"`docker load` of {ref} failed ({(result.stderr or result.stdout).strip()[:300]}).",
                        "check free space of Docker's data root there (`docker system df`), then run again.")
    console.print(f"sent {ref} to {shell.name}: {size / 2**30:.2f} GiB in {seconds:.1f} s")
    return seconds
