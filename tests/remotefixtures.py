"""Fake remote GPU hosts for tests: two OpenSSH servers in network namespaces, each with its own dockerd.

CI (.ci/run) starts them with `bash tests/infra/netns-hosts.sh up` (tests/infra/README.md). Tests skip with
the reason when they are down, and fail instead when RUNNER_REQUIRE_REMOTE=1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.dockerfixtures import REPO, docker_missing_reason, runner

INFRA = Path("/var/lib/runner-test")
CLIENT_KEY = INFRA / "client_key"
KNOWN_HOSTS = INFRA / "known_hosts"
ADDRESS = {"gpu01": "10.231.7.11", "gpu02": "10.231.7.12"}
SRV = Path("/srv/runner-test")
NETNS = REPO / "tests" / "infra" / "netns-hosts.sh"


def remote_missing_reason() -> str | None:
    if not CLIENT_KEY.is_file() or not KNOWN_HOSTS.is_file():
        return f"no test SSH hosts ({CLIENT_KEY} missing); run `bash tests/infra/netns-hosts.sh up`"
    for host, addr in ADDRESS.items():
        try:
            socket.create_connection((addr, 22), timeout=2).close()
        except OSError as e:
            return f"test SSH host {host} ({addr}:22) does not answer ({e}); run `bash tests/infra/netns-hosts.sh up`"
    return docker_missing_reason()


def require_remote() -> None:
    reason = remote_missing_reason()
    if reason:
        if os.environ.get("RUNNER_REQUIRE_REMOTE") == "1":
            pytest.fail(f"RUNNER_REQUIRE_REMOTE=1 but {reason}")
        pytest.skip(reason)


def netns(*args: str) -> None:
    subprocess.run(["bash", str(NETNS), *args], check=True, capture_output=True, timeout=60)


def engine(host: str):
    """The host's own Docker engine, inspected directly from this (root) side for assertions."""
    import docker

    return docker.DockerClient(base_url=f"unix:///run/runner-test/{host}/docker.sock")


def host_dirs(host: str, tag: str | None = None) -> dict[str, str]:
    """Per-test folders on the host, so tests never see each other's data or outputs."""
    tag = tag or uuid.uuid4().hex[:8]
    return {v: f"{SRV}/{host}/{v}/t-{tag}" for v in ("data", "cache", "outputs")}


def add_host(env: dict[str, str], name: str, host: str, models: str, dirs: dict[str, str], known_hosts: Path = KNOWN_HOSTS,
             ssh: str | None = None) -> None:
    args = ["hosts", "add", name, "--ssh", ssh or f"runnertest@{ADDRESS[host]}", "--key", CLIENT_KEY, "--known-hosts", known_hosts,
            "--models", models, *[a for v, d in dirs.items() for a in (f"--{v}", d)]]
    r = runner(args, env)
    assert r.returncode == 0, r.stderr


def run_key(env: dict[str, str], job_name: str) -> str:
    """The job's folder name on a host for the runner state of `env` (runner.remote.layout)."""
    return f"{job_name}-{(Path(env['RUNNER_STATE']) / 'install-id').read_text().strip()}"
