"""`runner board`: the real TensorBoard over jobs' training curves, run from a trainer image (it has tensorboard) on the
machine that holds the logs: this one through the Docker SDK, a host through `docker run` over SSH with the port
forwarded over the same connection.

Each job's log folder (its outputs' TENSORBOARD_DIR, runner.trainers) is mounted read-only at /logs/<job name>, so
TensorBoard shows each run of a job (a fresh one, a resumed one: the trainer's run folders) as `<job>/<run folder>`, and
several jobs side by side. The container's stdin stays open to runner: when runner ends (Ctrl-C, a kill, a lost SSH
connection) TensorBoard reads end-of-file, stops, and the container removes itself; runner also removes it on the way out.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import logging
import secrets
import signal
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import paramiko
from invoke.exceptions import ThreadException

from runner import config
from runner.errors import UserError
from runner.executors import Executor, executor_for
from runner.executors.container import ContainerSpec
from runner.executors.local import LocalDocker
from runner.executors.refusals import start_refused
from runner.images import builder
from runner.job.render import TRAINERS
from runner.jobs import records
from runner.jobs.records import JobRecord
from runner.mounts import Mount
from runner.spec import Trainer

LABEL_BOARD = "io.runner.board"  # the jobs a board container serves
LOGS = PurePosixPath("/logs")
READY_S = 120  # TensorBoard imports and reads the logs before it answers
STOP_S = 10  # for TensorBoard to stop once its stdin ends, before runner removes the container
# PID 1 of the container: TensorBoard, until it exits or the container's stdin ends (runner is gone); then it stops.
# A background list's stdin is /dev/null in sh, so the watcher reads the container's stdin through fd 3.
SUPERVISE = """exec 3<&0
tensorboard "$@" </dev/null &
board=$!
{ cat <&3 >/dev/null; kill "$board" 2>/dev/null; } &
wait "$board"
"""


class BoardFailed(UserError):
    """TensorBoard did not start or stopped by itself: not a mistake in the command."""

    exit_code = 1


@dataclass
class Board:
    url: str
    host: str  # "local" or the inventory host whose logs it serves
    port: int  # on this machine
    container: str
    jobs: dict[str, str]  # label (the job's name) → its log folder on that machine
    ended: threading.Event  # TensorBoard's output ended: its container stopped
    output: collections.deque  # TensorBoard's last lines

    def as_json(self) -> dict:
        return {"url": self.url, "host": self.host, "port": self.port, "container": self.container, "jobs": self.jobs}


# --- which logs ------------------------------------------------------------------------------------


def chosen_runs(refs: list[str], host: str | None) -> tuple[str, list[JobRecord]]:
    """The machine and the trainings of the jobs `refs` name (names or run ids; none: every job that ran on `host`)."""
    every = [r for r in records.all_records() if r.kind == records.TRAIN]  # a sample run logs no curves
    if not refs:
        where = host or "local"
        runs = [r for r in every if r.host == where]
        if not runs:
            on = f" --host {host}" if host else ""
            raise UserError("runner board", f"no job has run on {f'host {host}' if host else 'this machine'} yet, so it has no curves to show.",
                            f"train one first (`runner train JOB.yaml{on}`), or name the jobs to show (`runner ps` lists them).")
        return where, runs
    runs: dict[str, JobRecord] = {}
    for ref in refs:
        matching = [r for r in every if ref in (r.id, r.name)]
        if not matching:
            run = records.find(ref)  # raises the error every command gives for a job it does not know
            raise UserError(f"run {ref}", "is a sample run (`runner sample`): it logs no training curves.",
                            f"name its job ({run.name}) or one of its training runs from `runner ps`.")
        if host is not None:
            there = [r for r in matching if r.host == host]
            if not there:
                elsewhere = ", ".join(sorted({r.host for r in matching}))
                raise UserError(f"job {ref}", f"has not run on --host {host}; its runs are on {elsewhere}.",
                                f"leave out --host (the board then runs where the job ran), or use --host {elsewhere.split(', ')[0]}.")
            matching = there
        else:
            newest = max(matching, key=lambda r: r.started or r.id)
            matching = [r for r in matching if r.host == newest.host]
        runs |= {r.id: r for r in matching}
    hosts = sorted({r.host for r in runs.values()})
    if len(hosts) > 1:
        raise UserError("runner board", f"these jobs ran on different machines ({', '.join(hosts)}); one board shows the logs of one machine.",
                        "run one `runner board --host H JOB…` per machine, each with its own --port.")
    return hosts[0], sorted(runs.values(), key=lambda r: r.started or r.id)


def _machine(executor: Executor) -> str:
    return "this machine" if executor.here else f"host {executor.host}"


def log_folders(runs: list[JobRecord], executor: Executor) -> dict[str, str]:
    """label → the folder on the executor's machine where the job's trainer writes its runs' event files: the job's
    name, or name@2… for a job whose runs wrote to more than one output folder."""
    by_name: dict[str, list[str]] = {}
    for r in runs:
        outputs = r.output_dir if executor.here else executor.outputs_of(r.name)
        folder = str(PurePosixPath(outputs) / TRAINERS[Trainer(r.trainer)].TENSORBOARD_DIR)
        folders = by_name.setdefault(r.name, [])
        if folder not in folders:
            folders.append(folder)
    return {(name if i == 0 else f"{name}@{i + 1}"): f for name, folders in by_name.items() for i, f in enumerate(folders)}


def check_logs(executor: Executor, folders: dict[str, str]) -> None:
    """Every folder holds an event file: a UserError naming the first job without one."""
    find = 'for d do find "$d" -name "events.out.tfevents.*" -print 2>/dev/null | grep -q . || printf "%s\\n" "$d"; done'
    r = executor.shell.run(["sh", "-c", find, "sh", *folders.values()], timeout=60)
    empty = set(r.stdout.splitlines())
    for label, folder in folders.items():
        if folder in empty:
            name = label.split("@")[0]
            raise UserError(f"job {name}", f"has no TensorBoard logs yet in {folder} on {_machine(executor)}: its trainer writes them once "
                            "training starts, after caching and loading the model (a run started before runner logged to TensorBoard has none).",
                            f"wait for its first steps (`runner logs -f {name}` shows them), then run `runner board {name}` again.")


def board_image(runs: list[JobRecord], executor: Executor) -> str:
    """A trainer image on the executor's machine (each has tensorboard): the newest run's, else any other run's, else
    one `runner build` makes from the current pins."""
    settings = config.load()
    current = [builder.image_ref(builder.load_pins(t.value, "default", pins_file=settings.pins), settings.ca_bundle) for t in Trainer]
    candidates = list(dict.fromkeys([r.image for r in reversed(runs)] + current))
    for ref in candidates:
        if _image_present(executor, ref):
            return ref
    trainer = runs[-1].trainer
    raise UserError(f"image {runs[-1].image}", f"is not on {_machine(executor)}, nor any other trainer image, and TensorBoard runs from one.",
                    f"run `runner build {trainer}`" + ("." if executor.here else f", then `runner train` a job with --host {executor.host} (it sends the image)."))


def _image_present(executor: Executor, ref: str) -> bool:
    if executor.here:
        return builder.find_image(executor.client, ref) is not None
    return executor.shell.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], timeout=30).ok


# --- ports -----------------------------------------------------------------------------------------


def check_local_port(port: int) -> None:
    if not LocalDocker.port_free(port):
        raise UserError("--port", f"{port} is taken on this machine (something listens on 127.0.0.1:{port}).",
                        f"choose another (`--port {port + 1 if port < 65535 else 6006}`), or stop what listens there (`ss -ltnp 'sport = :{port}'` shows it).")


def remote_port(executor: Executor, wanted: int) -> int:
    """A port free on the host for TensorBoard, `wanted` if it is."""
    for port in range(wanted, min(wanted + 100, 65536)):
        if executor.port_free(port):
            return port
    raise UserError(f"host {executor.host}", f"has no free port in {wanted}-{min(wanted + 99, 65535)} for TensorBoard.", "choose another range with --port.")


# --- the container ---------------------------------------------------------------------------------


def board_spec(image: str, folders: dict[str, str], port: int, user: str) -> ContainerSpec:
    command = ["sh", "-c", SUPERVISE, "board", "--logdir", str(LOGS), "--host", "127.0.0.1", "--port", str(port)]
    mounts = [Mount(f"logs/{label}", folder, str(LOGS / label), True) for label, folder in folders.items()]
    return ContainerSpec(image=image, name=f"runner-board-{secrets.token_hex(4)}", command=command, mounts=mounts, env={},
                         user=user, workdir="/", gpus=False, shm_size="64m", labels={LABEL_BOARD: ",".join(folders)})


def _keep_tail(chunks: Iterator[bytes], output: collections.deque, ended: threading.Event) -> None:
    """Read the container's output to its end (so it never blocks on a full pipe), keeping its last lines."""
    buf = b""
    try:
        for chunk in chunks:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            output.extend(line.decode(errors="replace") for line in lines)
    except (OSError, ValueError):
        pass  # the connection closed under the reader: runner is stopping the board
    finally:
        if buf:
            output.append(buf.decode(errors="replace"))
        ended.set()


@contextlib.contextmanager
def _run_local(executor: LocalDocker, spec: ContainerSpec, board: Board):
    import docker
    from docker.utils.socket import frames_iter

    # created attached (not detached): its stdin closes when runner's attachment does (StdinOnce)
    kwargs = spec.sdk_kwargs() | {"detach": False, "stdin_open": True, "auto_remove": True}
    try:
        container = executor.client.containers.create(**kwargs)
        sock = executor.client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        container.start()
    except docker.errors.APIError as e:
        executor.remove(spec.name)
        raise start_refused(str(e.explanation or e), spec, "Docker", "read the message; `runner doctor` checks the setup.") from e
    chunks = (data for _, data in frames_iter(sock, tty=False))
    threading.Thread(target=_keep_tail, args=(chunks, board.output, board.ended), daemon=True).start()
    try:
        yield
    finally:
        raw = getattr(sock, "_sock", sock)  # the SDK wraps the upgraded connection in a SocketIO
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_WR)  # end of its stdin: TensorBoard stops
        board.ended.wait(STOP_S)
        sock.close()


@contextlib.contextmanager
def _run_remote(executor, spec: ContainerSpec, port: int, board: Board):
    """port: TensorBoard's on the host; board.port, this machine's end of the forward."""
    run = spec.cli_argv()
    # `docker run --detach …` as jobs start; a board runs attached instead, its stdin held open by this SSH channel
    assert run[:3] == ["docker", "run", "--detach"], run[:3]
    argv = ["docker", "run", "--rm", "--interactive", *run[3:]]
    channel = executor.shell.session(argv)
    chunks = iter(lambda: channel.recv(65536), b"")
    threading.Thread(target=_keep_tail, args=(chunks, board.output, board.ended), daemon=True).start()
    conn = executor.shell.conn
    try:
        # Fabric's forward gives up at the first connection the host refuses: open it once TensorBoard listens there
        _wait(board, lambda: _listening(conn.transport, port))
        with forwarded(conn, board.port, port):
            yield
    finally:
        with contextlib.suppress(OSError, EOFError):
            channel.shutdown_write()  # end of its stdin: TensorBoard stops
        board.ended.wait(STOP_S)
        channel.close()


@contextlib.contextmanager
def forwarded(conn, local_port: int, remote_port: int):
    """Fabric's forward of this machine's 127.0.0.1:local_port to the host's 127.0.0.1:remote_port. A browser's
    connection reset while the forward was open ended that connection only, but Fabric raises it when the forward
    closes: such errors are dropped, and what ended the block (Ctrl-C) goes on."""
    try:
        with conn.forward_local(local_port, remote_port=remote_port, remote_host="127.0.0.1", local_host="127.0.0.1"):
            yield
    except ThreadException as e:
        if not all(issubclass(w.type, OSError) for w in e.exceptions):
            raise
        if e.__context__ is not None:
            raise e.__context__ from None


def _removed(executor: Executor, name: str, seconds: float = 30) -> None:
    """Remove the container and return once the engine no longer has it."""
    executor.remove(name)
    deadline = time.monotonic() + seconds
    while executor.state(name) and time.monotonic() < deadline:
        time.sleep(0.2)


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never through a proxy
    try:
        with opener.open(url + "data/logdir", timeout=5) as r:
            return r.status == 200
    except (OSError, http.client.HTTPException):
        return False


def _listening(transport: paramiko.Transport, port: int) -> bool:
    """Something listens on the host's 127.0.0.1:port (a direct-tcpip channel to it opens)."""
    quiet = _RefusedProbe()  # paramiko logs each refused channel as an error, on stderr when nothing handles its logs
    logging.getLogger("paramiko.transport").addFilter(quiet)
    try:
        transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=10).close()
        return True
    except (paramiko.ChannelException, paramiko.SSHException):
        return False
    finally:
        logging.getLogger("paramiko.transport").removeFilter(quiet)


class _RefusedProbe(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


def _wait(board: Board, ready) -> None:
    """Until ready() (TensorBoard listens, or answers); BoardFailed if its container stops or READY_S pass first."""
    deadline = time.monotonic() + READY_S
    while not ready():
        if board.ended.is_set():
            raise BoardFailed(f"container {board.container}", f"TensorBoard exited before it answered: {_tail(board)}",
                              "read TensorBoard's output quoted here; `runner --debug board …` shows each Docker call and SSH round trip.")
        if time.monotonic() > deadline:
            raise BoardFailed(f"container {board.container}", f"TensorBoard did not answer on {board.url} within {READY_S} s: {_tail(board)}",
                              "run the command again; `runner --debug board …` shows each Docker call.")
        time.sleep(0.3)


def _tail(board: Board) -> str:
    return " | ".join(list(board.output)[-8:]) or "(no output)"


@contextlib.contextmanager
def opened(refs: list[str], host: str | None, port: int) -> Iterator[Board]:
    """TensorBoard answering on 127.0.0.1:port over the logs of the jobs `refs` name; stopped and its container removed
    when the block ends, however it ends."""
    where, runs = chosen_runs(refs, host)
    check_local_port(port)
    executor = executor_for(where)
    try:
        folders = log_folders(runs, executor)
        check_logs(executor, folders)
        image = board_image(runs, executor)
        there = port if executor.here else remote_port(executor, port)
        spec = board_spec(image, folders, there, executor.user)
        board = Board(f"http://127.0.0.1:{port}/", where, port, spec.name, folders, threading.Event(), collections.deque(maxlen=50))
        running = _run_local(executor, spec, board) if executor.here else _run_remote(executor, spec, there, board)
        try:
            with running:
                _wait(board, lambda: _answers(board.url))
                yield board
        finally:
            _removed(executor, spec.name)
    finally:
        if not executor.here:
            executor.close()


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) raise KeyboardInterrupt meanwhile, like Ctrl-C: the board is cleaned up."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def serve(board: Board) -> None:
    """Until Ctrl-C (KeyboardInterrupt); BoardFailed if TensorBoard stops by itself first."""
    while not board.ended.wait(0.5):
        pass
    raise BoardFailed(f"container {board.container}", f"TensorBoard stopped by itself: {_tail(board)}", "run `runner board` again.")
