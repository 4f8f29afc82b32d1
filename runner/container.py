"""How a trainer container is started, in one place: volumes, env, GPUs, shared memory, ulimits, user.

The same ContainerSpec becomes Docker SDK arguments (local engine) or a `docker run` argv (remote hosts,
over SSH), so every host gets identical containers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.mounts import Mount

RUN_PLAN = ["python", "/opt/runner/run_plan.py", "/job/plan.json"]


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    name: str
    command: list[str]
    mounts: list[Mount]
    env: dict[str, str]
    user: str  # "UID:GID" of the invoking user, so files written to mounts are theirs
    workdir: str
    gpus: bool = True
    shm_size: str = "16g"
    ulimits: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def sdk_kwargs(self) -> dict:
        from docker.types import DeviceRequest, Ulimit

        kw = dict(
            image=self.image,
            command=self.command,
            name=self.name,
            user=self.user,
            environment=self.env,
            working_dir=self.workdir,
            volumes={m.host: {"bind": m.container, "mode": "ro" if m.read_only else "rw"} for m in self.mounts},
            network_mode="host",
            shm_size=self.shm_size,
            ulimits=[Ulimit(name=n, soft=v, hard=v) for n, v in self.ulimits.items()],
            labels=self.labels,
            detach=True,
        )
        if self.gpus:
            kw["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return kw

    def cli_argv(self) -> list[str]:
        """`docker run` arguments for an engine reached through a shell (quote with shlex.join)."""
        argv = ["docker", "run", "--detach", "--name", self.name, "--user", self.user, "--workdir", self.workdir]
        argv += ["--network", "host", "--shm-size", self.shm_size]
        argv += [f"--ulimit={n}={v}:{v}" for n, v in self.ulimits.items()]
        if self.gpus:
            argv += ["--gpus", "all"]
        for m in self.mounts:
            argv += ["--volume", f"{m.host}:{m.container}:{'ro' if m.read_only else 'rw'}"]
        for k, v in self.env.items():
            argv += ["--env", f"{k}={v}"]
        for k, v in self.labels.items():
            argv += ["--label", f"{k}={v}"]
        return argv + [self.image, *self.command]
