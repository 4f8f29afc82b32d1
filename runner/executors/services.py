"""Long-lived trainer containers for interactive work: `runner up`, `runner down`, `runner shell`.

They use the same ContainerSpec as jobs, with the folders from the runner config mounted at the fixed
container paths, so `docker compose run` (compose/) and `runner up` give the same environment.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty

from runner import config, mounts
from runner.errors import UserError
from runner.executors import Executor
from runner.executors.container import ContainerSpec
from runner.executors.local import LocalDocker, client
from runner.images import builder
from runner.job.render import TRAINERS
from runner.mounts import Mount

LABEL_SERVICE = "io.runner.service"
WORKDIRS = {t.value: m.WORKDIR for t, m in TRAINERS.items()}


def service_name(trainer: str) -> str:
    return f"runner-{trainer}"


def service_mounts(settings: config.Settings) -> list[Mount]:
    return [
        Mount("models", str(settings.models), str(mounts.MODELS), True),
        Mount("data", str(settings.data), str(mounts.DATA), False),
        Mount("cache", str(settings.cache), str(mounts.CACHE), False),
        Mount("outputs", str(settings.outputs), str(mounts.OUTPUTS), False),
        *mounts.hf_mounts(config.default_hf_home()),
    ]


def service_spec(trainer: str, ref: str, settings: config.Settings, gpus: bool, user: str) -> ContainerSpec:
    env = {"HF_HOME": str(mounts.HF_HOME), "PYTHONUNBUFFERED": "1", **config.network_env(settings)}
    return ContainerSpec(
        image=ref, name=service_name(trainer), command=["sleep", "infinity"], mounts=service_mounts(settings), env=env,
        user=user, workdir=WORKDIRS[trainer], gpus=gpus, shm_size=settings.shm_size, ulimits=settings.ulimits,
        labels={LABEL_SERVICE: trainer},
    )


def up(executor: Executor, trainer: str, settings: config.Settings, gpus: bool, log) -> str:
    """Build the image for these GPUs here if needed and start the trainer's container on the executor; returns its name."""
    name = service_name(trainer)
    state = executor.state(name)
    if state.get("Running"):
        log(f"{name} is already running")
        return name
    table = "default"
    if gpus:
        from runner.gpu import variant
        from runner.gpu.inventory import gather

        executor.check_gpus()
        table = variant.choose(trainer, gather(executor.shell)).pins_table
    pins = builder.load_pins(trainer, table, pins_file=settings.pins)
    ref = builder.build(client(), pins, settings.ca_bundle, settings.pip_index_url, log)
    executor.check_image(ref, trainer if table == "default" else f"{trainer} --variant {table}")
    if state:
        executor.remove(name)
    spec = service_spec(trainer, ref, settings, gpus, executor.user)
    for m in spec.mounts:  # the configured folders are runner's to create; an empty models folder mounts fine
        if not os.path.isfile(m.host):  # an HF login token file
            os.makedirs(m.host, exist_ok=True)
    executor.prepare_mounts(spec, sources=spec.mounts)
    executor.start(spec)
    return name


def down(executor: Executor, trainers: list[str]) -> list[str]:
    stopped = []
    for t in trainers:
        name = service_name(t)
        if executor.state(name):
            executor.remove(name)
            stopped.append(name)
    return stopped


def shell(executor: LocalDocker, trainer: str, command: list[str]) -> int:
    """An interactive shell in the running service container (a TTY bridged over this machine's Docker API socket)."""
    name = service_name(trainer)
    if not executor.state(name).get("Running"):
        raise UserError(name, "is not running.", f"start it with `runner up {trainer}`.")
    api = executor.client.api
    interactive = sys.stdin.isatty()
    exec_id = api.exec_create(name, command, tty=interactive, stdin=interactive, user=executor.user)["Id"]
    if interactive:
        sock = api.exec_start(exec_id, tty=True, socket=True)
        _bridge(getattr(sock, "_sock", sock))
    else:
        for out, err in api.exec_start(exec_id, stream=True, demux=True):
            for stream, data in ((sys.stdout, out), (sys.stderr, err)):
                if data:
                    stream.buffer.write(data)
                    stream.flush()
    return int(api.exec_inspect(exec_id)["ExitCode"] or 0)


def _bridge(raw) -> None:
    """Raw terminal ↔ exec socket until the shell exits."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        stdin_open = True
        while True:
            readable, _, _ = select.select([raw] + ([fd] if stdin_open else []), [], [])
            if raw in readable:
                data = raw.recv(65536)
                if not data:
                    return
                os.write(sys.stdout.fileno(), data)
            if fd in readable:
                data = os.read(fd, 65536)
                if not data:
                    stdin_open = False
                    raw.shutdown(1)
                else:
                    raw.sendall(data)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
