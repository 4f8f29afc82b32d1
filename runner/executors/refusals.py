"""What Docker's refusal to start a container means, in one place for both engines (SDK and `docker run` over SSH)."""

from __future__ import annotations

from runner.errors import UserError
from runner.executors.container import ContainerSpec
from runner.preflight import TOOLKIT_FIX

ULIMIT_FIX = (
    "let the Docker daemon raise them (its systemd unit: LimitMEMLOCK=infinity), or set `ulimits:` in the runner "
    "config to what the host allows, e.g. `memlock: 8388608` for `ulimit -H -l` = 8192 KiB (rootless Docker, nested containers)."
)


def start_refused(message: str, spec: ContainerSpec, engine: str, fix: str) -> UserError:
    """The error for Docker's message when it would not start `spec`; engine: "Docker" or "Docker on HOST";
    fix: what to do when the message is none runner knows."""
    if "could not select device driver" in message:
        return UserError("NVIDIA Container Toolkit", f"{engine} could not give the container a GPU ({message}).", TOOLKIT_FIX)
    if "rlimit" in message:
        return UserError(f"container {spec.name}", f"{engine} could not set its ulimits {spec.ulimits} ({message}).", ULIMIT_FIX)
    return UserError(f"container {spec.name}", f"{engine} refused to start it ({message}).", fix)
