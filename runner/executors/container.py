"""How a trainer container is started, in one place: volumes, env, GPUs, shared memory, ulimits, user.

The same ContainerSpec becomes Docker SDK arguments (local engine) or a `docker run` argv (remote hosts,
over SSH), so every host gets identical containers. Its record in plan.json (`record()`) holds secrets by
name only; `from_record` starts the same container again, taking their values from the environment.

Secrets (runner.plan.is_secret) never enter the container's configuration: it is created with stdin open and
their names in RUNNER_SECRET_ENV; once started, the executor writes `NAME=value` lines to its stdin through the
engine's attach endpoint, and images/entrypoint.sh exports them and execs the command. So no argv, file,
`docker inspect` or image holds a value, and every start of a container (a resumed job is a new one) is given them
again; a container restarted outside runner receives none and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from runner.errors import UserError
from runner.plan import is_secret
from runner.mounts import Mount, docker_volumes

RUN_PLAN = ["python", "/opt/runner/run_plan.py", "/job/plan.json"]
# the labels a job's container carries: which record started it, for which job, on which rendezvous port
LABEL_RECORD = "io.runner.record"
LABEL_JOB = "io.runner.job"
LABEL_PORT = "io.runner.master-port"
SECRET_NAMES = "RUNNER_SECRET_ENV"  # the names whose values images/entrypoint.sh reads from stdin, space-separated


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
    gpu_ids: tuple[int, ...] = ()  # with gpus: the host's GPUs (nvidia-smi indices) the container gets; () = all of them
    gpu_count: int = 0  # GPUs the job trains on per machine: what a scheduler reserves (engines give the container all of them)
    shm_size: str = "16g"
    ulimits: dict[str, int] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if SECRET_NAMES in self.env:
            raise UserError(f"env.{SECRET_NAMES}", "is runner's own: it tells the container which secrets to read on its stdin.",
                            f"remove {SECRET_NAMES} from env:.")
        for k, v in self.secret_env().items():
            if "\n" in v or "\0" in v:
                raise UserError(f"env {k}", "holds a line break or a NUL byte, and secrets reach the container one line each.",
                                "remove it from the value.")

    def secret_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if is_secret(k, v)}

    def config_env(self) -> dict[str, str]:
        """The environment the container is created with: the values that are not secret, and the secrets' names."""
        secret = self.secret_env()
        env = {k: v for k, v in self.env.items() if k not in secret}
        return {**env, SECRET_NAMES: " ".join(secret)} if secret else env

    def secrets_on_stdin(self) -> bytes:
        """What the entrypoint reads from stdin: one `NAME=value` line per secret (b"" when there are none)."""
        return "".join(f"{k}={v}\n" for k, v in self.secret_env().items()).encode()

    def record(self) -> dict:
        """plan.json's fields for this container: `env` (secrets by name only, in `container.secret_env`), `mounts`,
        and `container`: how it is started. Its name and labels are the run's, not the plan's."""
        secret = self.secret_env()
        return {
            "env": {k: v for k, v in self.env.items() if k not in secret},
            "mounts": list(self.mounts),
            "container": {"image": self.image, "command": self.command, "user": self.user, "workdir": self.workdir, "gpus": self.gpus,
                          "gpu_ids": list(self.gpu_ids), "shm_size": self.shm_size, "ulimits": self.ulimits, "secret_env": sorted(secret)},
        }

    @classmethod
    def from_record(cls, plan: Mapping, name: str, environ: Mapping[str, str]) -> "ContainerSpec":
        """The container a plan.json describes, named `name`; secret values come from `environ`, as `docker run --env NAME`."""
        container = dict(plan["container"])
        secret = container.pop("secret_env")
        unset = [k for k in secret if k not in environ]
        if unset:
            raise UserError("plan.json", f"names secret variables that are not set here: {', '.join(unset)}.", "export them, then start it again.")
        env = {**plan["env"], **{k: environ[k] for k in secret}}
        container["gpu_ids"] = tuple(container.get("gpu_ids", ()))
        return cls(name=name, mounts=[Mount(**m) for m in plan["mounts"]], env=env, **container)

    def sdk_kwargs(self) -> dict:
        from docker.types import DeviceRequest, Ulimit

        kw = dict(
            image=self.image,
            command=self.command,
            name=self.name,
            user=self.user,
            environment=self.config_env(),
            stdin_open=bool(self.secret_env()),
            working_dir=self.workdir,
            volumes=docker_volumes(self.mounts),
            network_mode="host",
            shm_size=self.shm_size,
            ulimits=[Ulimit(name=n, soft=v, hard=v) for n, v in self.ulimits.items()],
            labels=self.labels,
            detach=True,
        )
        if self.gpus and self.gpu_ids:
            kw["device_requests"] = [DeviceRequest(device_ids=[str(i) for i in self.gpu_ids], capabilities=[["gpu"]])]
        elif self.gpus:
            kw["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        return kw

    def cli_argv(self, detach: bool = True) -> list[str]:
        """`docker run` arguments for an engine reached through a shell (quote with shlex.join); detach False: in the
        foreground, the container removed when it exits (a Slurm task runs as long as its container)."""
        argv = ["docker", "run", "--detach" if detach else "--rm", "--name", self.name, "--user", self.user, "--workdir", self.workdir]
        if self.secret_env():
            argv.append("--interactive")
        argv += ["--network", "host", "--shm-size", self.shm_size]
        argv += [f"--ulimit={n}={v}:{v}" for n, v in self.ulimits.items()]
        if self.gpus:
            # several ids need the inner quotes: docker reads --gpus as CSV, where "device=0,1" would split at the comma
            argv += ["--gpus", f'"device={",".join(map(str, self.gpu_ids))}"' if self.gpu_ids else "all"]
        for v in docker_volumes(self.mounts):
            argv += ["--volume", v]
        for k, v in self.config_env().items():
            argv += ["--env", f"{k}={v}"]
        for k, v in self.labels.items():
            argv += ["--label", f"{k}={v}"]
        return argv + [self.image, *self.command]
