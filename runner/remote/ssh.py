"""SSH to inventory hosts through Fabric, with strict host-key checking, and a Shell that runs argv there.

Fabric's default policy adds unknown host keys silently; here known_hosts is loaded explicitly and an unknown
or changed key is refused with the command that fixes it. Every remote command is an argv joined with
shlex.join, so no argument (job name, path, caption) is ever interpreted by the remote shell.
"""

from __future__ import annotations

import logging
import shlex
import socket
import time
from pathlib import Path
from typing import Iterator

import paramiko
from fabric import Config, Connection

from runner.errors import UserError
from runner.remote.hosts import Host
from runner.shell import Result

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
KEEPALIVE = 5


class _Refuse(paramiko.MissingHostKeyPolicy):
    """RejectPolicy that remembers the key it refused, to show its fingerprint."""

    offered: paramiko.PKey | None = None

    def missing_host_key(self, client, hostname, key):
        self.offered = key
        raise paramiko.SSHException(f"unknown host key for {hostname}")


def fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:…", the form `ssh-keygen -lf` prints


def _known_hosts_file(host: Host, conn: Connection) -> Path:
    if host.known_hosts:
        return Path(host.known_hosts).expanduser()
    alias = conn.ssh_config.get("userknownhostsfile")
    return Path(alias.split()[0]).expanduser() if alias else Path("~/.ssh/known_hosts").expanduser()


def _lookup_name(conn: Connection) -> str:
    return conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"


def connect(host: Host, timeout: float = CONNECT_TIMEOUT) -> Connection:
    """An open Fabric connection to `host`, or a UserError that says what to do."""
    kwargs = {"key_filename": [str(Path(host.key).expanduser())]} if host.key else {}
    if host.key:
        kwargs["look_for_keys"] = False
    conn = Connection(
        host.address, user=host.user, port=host.port, connect_timeout=int(timeout), connect_kwargs=kwargs,
        config=Config(),  # reads ~/.ssh/config: aliases, HostName, User, Port, IdentityFile
    )
    known = _known_hosts_file(host, conn)
    policy = _Refuse()
    conn.client.set_missing_host_key_policy(policy)
    if known.is_file():
        conn.client.get_host_keys().load(str(known))  # read only: nothing is ever written to known_hosts
    where = f"host {host.name} ({conn.user}@{conn.host}:{conn.port})"
    scan = f"ssh-keyscan{'' if conn.port == 22 else f' -p {conn.port}'} {shlex.quote(conn.host)}"
    log.debug("%s: connecting, host keys from %s", where, known)
    started = time.monotonic()
    try:
        conn.open()
    except paramiko.BadHostKeyException as e:
        raise UserError(
            where,
            f"offered host key {fingerprint(e.key)}, but {known} records {fingerprint(e.expected_key)} for it: the host was "
            "reinstalled or someone is in between, so runner refuses to connect.",
            f"ask the host's admin which key is right (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host); if the new one "
            f"is, run `ssh-keygen -f {shlex.quote(str(known))} -R {shlex.quote(_lookup_name(conn))}`, then `{scan} >> {shlex.quote(str(known))}`.",
        ) from None
    except paramiko.SSHException as e:
        if policy.offered is not None:
            raise UserError(
                where,
                f"is not in {known}: its host key {fingerprint(policy.offered)} is unknown, so runner refuses to connect.",
                f"check that fingerprint against the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` there), then run "
                f"`{scan} >> {shlex.quote(str(known))}` (or `runner hosts add {host.name} … --known-hosts FILE`).",
            ) from None
        _raise_connect(where, e, host)
    except (OSError, EOFError) as e:
        _raise_connect(where, e, host)
    conn.transport = conn.client.get_transport()
    conn.transport.set_keepalive(KEEPALIVE)
    log.debug("%s: connected in %.2fs", where, time.monotonic() - started)
    return conn


def _raise_connect(where: str, e: BaseException, host: Host):
    if isinstance(e, paramiko.AuthenticationException):
        raise UserError(where, f"refused the login ({e}).",
                        f"check the user and key (`runner hosts add {host.name} --ssh user@address --key FILE`); `ssh {host.ssh}` must work without a password.") from None
    if isinstance(e, (socket.timeout, TimeoutError)):
        problem = f"did not answer within {CONNECT_TIMEOUT} s (network down, host off, or a firewall)."
    else:
        problem = f"cannot be reached ({e.__class__.__name__}: {e})."
    raise UserError(where, problem + " Nothing was started.",
                    f"check that `ssh {host.ssh}` works from here; fix the address with `runner hosts add {host.name} --ssh user@address[:port]`.") from None


def openssh_argv(host: Host, conn: Connection) -> list[str]:
    """The OpenSSH command (without the destination) that reaches `host` as connect() does: the same user, port, key
    and known_hosts file, strict host-key checking, never a prompt. rsync runs through it."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={_known_hosts_file(host, conn)}",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", f"ServerAliveInterval={KEEPALIVE}", "-o", "ServerAliveCountMax=3"]
    if host.key:
        argv += ["-i", str(Path(host.key).expanduser()), "-o", "IdentitiesOnly=yes"]
    if host.user:
        argv += ["-l", host.user]
    if host.port:
        argv += ["-p", str(host.port)]
    return argv


class ConnectionLost(UserError):
    pass


def lost(host: str, e: BaseException | str) -> ConnectionLost:
    return ConnectionLost(f"host {host}", f"the SSH connection was lost ({e}). A job started there keeps running.",
                          "run the command again once the host is reachable (`runner logs -f JOB` reattaches to a job).")


class RemoteShell:
    """Shell over one SSH connection: run(argv) → Result, plus streaming and stdin for big transfers."""

    def __init__(self, name: str, conn: Connection, host: Host | None = None):
        self.name, self.conn, self.host = name, conn, host  # host: for OpenSSH's own tools (rsync), when known

    def _channel(self, argv: list[str], timeout: float | None = None):
        command = shlex.join(argv)
        log.debug("%s: %s", self.name, command)
        try:
            ch = self.conn.transport.open_session(timeout=timeout)
            ch.settimeout(timeout)
            ch.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as e:
            raise lost(self.name, e) from None
        return ch

    def session(self, argv: list[str]) -> paramiko.Channel:
        """argv started with its stdin open, stderr merged into stdout: the caller reads it and closes the channel (the
        command then reads end-of-file, as it does when the connection dies)."""
        ch = self._channel(argv)
        ch.set_combine_stderr(True)
        return ch

    def run(self, argv: list[str], timeout: float = 60, stdin: bytes | None = None) -> Result:
        started = time.monotonic()
        result = self._run(argv, timeout, stdin)
        log.debug("%s: %s → exit %d in %.2fs", self.name, argv[0], result.returncode, time.monotonic() - started)
        return result

    def upgrade(self, argv: list[str], request: bytes, then: bytes, timeout: float = 60) -> tuple[bytes, Result]:
        """Run argv, a byte pipe to a server (`docker system dial-stdio`); send `request`, read the head of the server's
        reply (up to a blank line), then send `then` on the upgraded connection and close it. Returns the reply's head
        and the command's result. `then` travels on the channel only: a container's secrets go this way, unlogged."""
        ch = self._channel(argv, timeout)
        head = b""
        try:
            ch.sendall(request)
            while b"\r\n\r\n" not in head and (chunk := ch.recv(4096)):
                head += chunk
        except (socket.timeout, OSError, EOFError, paramiko.SSHException) as e:
            ch.close()
            raise lost(self.name, e) from None
        upgraded = b"\r\n\r\n" in head
        return head.split(b"\r\n\r\n")[0], self._collect(ch, argv, timeout, then if upgraded else None)

    def _run(self, argv: list[str], timeout: float, stdin: bytes | None) -> Result:
        return self._collect(self._channel(argv, timeout), argv, timeout, stdin)

    def _collect(self, ch, argv: list[str], timeout: float, stdin: bytes | None) -> Result:
        """Send stdin and close it, then read the command's output until it exits."""
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            if stdin is not None:
                ch.sendall(stdin)
            ch.shutdown_write()
            while not (ch.exit_status_ready() and not ch.recv_ready() and not ch.recv_stderr_ready()):
                if time.monotonic() > deadline:
                    ch.close()
                    return Result(124, out.decode(errors="replace"), f"{shlex.join(argv)}: timed out after {timeout:.0f}s")
                if ch.recv_ready():
                    out += ch.recv(65536)
                elif ch.recv_stderr_ready():
                    err += ch.recv_stderr(65536)
                elif ch.closed and not ch.exit_status_ready():
                    raise lost(self.name, "channel closed")
                else:
                    time.sleep(0.005)
            code = ch.recv_exit_status()
        except (socket.timeout, OSError, EOFError, paramiko.SSHException) as e:
            raise lost(self.name, e) from None
        finally:
            ch.close()
        return self._result(code, out, err)

    def _result(self, code: int, out: bytes, err: bytes) -> Result:
        if code == -1:  # the channel closed without the command's exit status
            raise lost(self.name, "no exit status")
        return Result(code, out.decode(errors="replace"), err.decode(errors="replace"))

    def lines(self, argv: list[str]) -> Iterator[str]:
        """stdout and stderr of a long-running command, line by line; ConnectionLost if the link dies first."""
        ch = self._channel(argv)
        ch.set_combine_stderr(True)
        ch.settimeout(None)
        ch.shutdown_write()
        buf = b""
        try:
            while True:
                try:
                    chunk = ch.recv(65536)
                except (socket.timeout, OSError, EOFError, paramiko.SSHException) as e:
                    raise lost(self.name, e) from None
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.split(b"\n")
                for line in done:
                    yield line.decode(errors="replace")
            if buf:
                yield buf.decode(errors="replace")
            # EOF without an exit status: the connection or the session was killed, not the command ending
            if not ch.status_event.wait(30) or ch.recv_exit_status() == -1:
                raise lost(self.name, "the session ended before the command did")
        finally:
            ch.close()

    def feed(self, argv: list[str], chunks: Iterator[bytes], progress=None) -> Result:
        """Run argv with `chunks` as its stdin (e.g. `docker load`), reporting bytes sent to progress(n)."""
        ch = self._channel(argv)
        err = bytearray()
        try:
            for chunk in chunks:
                ch.sendall(chunk)
                while ch.recv_stderr_ready():
                    err += ch.recv_stderr(65536)
                if progress:
                    progress(len(chunk))
            ch.shutdown_write()
            ch.settimeout(None)
            out = bytearray()
            while (b := ch.recv(65536)):
                out += b
            while ch.recv_stderr_ready():
                err += ch.recv_stderr(65536)
            code = ch.recv_exit_status()
        except (socket.timeout, OSError, EOFError, paramiko.SSHException) as e:
            if ch.exit_status_ready() and ch.recv_exit_status() > 0:
                while ch.recv_stderr_ready():
                    err += ch.recv_stderr(65536)
                return Result(ch.recv_exit_status(), "", err.decode(errors="replace"))
            raise lost(self.name, e) from None
        finally:
            ch.close()
        return self._result(code, out, err)
