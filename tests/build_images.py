"""Build CI's images all at once, each exactly as the tests' fixtures build it (runner_env: the stand-in pins, this
machine's CA bundle), then send each to the SSH test hosts the tests run it on, through runner's own transfer
(runner.remote.image_transfer, the host engine's data root), as soon as it is built and the hosts are up. .ci/run
starts this in the background ahead of the tests; a fixture's `runner build` of an image still being built waits for
it (runner's build lock) and then finds it built; a test sending an image still being sent to a host waits for that
send (runner's send lock) and then finds it there.

    python -m tests.build_images [IMAGE ...]     (default: the images the tests use)
"""

from __future__ import annotations

import io
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.dockerfixtures import runner_env

# the hosts each image is sent to by the tests: the captioner (6.45 GB per engine) by test_caption_image on gpu01 only
HOSTS = {"caption": ("gpu01",), "musubi": ("gpu01", "gpu02"), "diffpipe": ("gpu01", "gpu02")}
IMAGES = tuple(HOSTS)
HOSTS_UP_WAIT = 900  # seconds: .ci/run starts the SSH test hosts after this starts


def main(images: list[str]) -> int:
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"{text} ({time.monotonic() - started:.0f} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="runner-ci-images-") as tmp:
        env = runner_env(Path(tmp))
        refs = {name: _ref(name, env) for name in images}  # before the senders start: _ref sets this process's environment
        senders = {host: Sender(host, say) for host in sorted({h for name in images for h in HOSTS.get(name, ())})}
        failed = _build(images, env, Path(tmp), say, lambda name: [senders[h].queue.put((name, refs[name])) for h in HOSTS.get(name, ())])
        for sender in senders.values():
            sender.queue.put(None)
        for sender in senders.values():
            sender.join()
            failed += sender.failed
    return 1 if failed else 0


def _build(images: list[str], env: dict[str, str], tmp: Path, say, built) -> int:
    """`runner build` of every image at once; calls built(name) as each one succeeds; returns how many failed."""
    failed = 0
    logs = {name: tmp / f"{name}.log" for name in images}
    builds = {name: subprocess.Popen(["runner", "build", name], env=env, stdout=logs[name].open("w"), stderr=subprocess.STDOUT) for name in images}
    while builds:
        for name, proc in list(builds.items()):
            if proc.poll() is None:
                continue
            out = logs[name].read_text(errors="replace")
            del builds[name]
            if proc.returncode:
                failed += 1
                say(f"{name}: the build failed (exit {proc.returncode}):\n{out[-3000:]}\n")
            else:
                say(f"{name}: {out.strip().splitlines()[-1]}")
                built(name)
        time.sleep(1)
    return failed


def _ref(name: str, env: dict[str, str]) -> str:
    """The image `runner build NAME` made under `env`, by runner's own settings and tag."""
    from runner import config
    from runner.images import builder

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        settings = config.load()
        return builder.image_ref(builder.load_pins(name, "default", settings.pins), settings.ca_bundle)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Sender(threading.Thread):
    """Sends the images put on its queue to one test host, one after another, once the hosts answer."""

    def __init__(self, host: str, say):
        super().__init__(name=f"send-{host}")
        self.host, self.say, self.failed = host, say, 0
        self.queue: queue.Queue = queue.Queue()
        self.start()

    def run(self) -> None:
        from tests.remotefixtures import remote_missing_reason

        deadline = time.monotonic() + HOSTS_UP_WAIT
        while (reason := remote_missing_reason()) and time.monotonic() < deadline:
            time.sleep(2)
        while (item := self.queue.get()) is not None:
            if reason:
                self.failed += 1
                self.say(f"{item[0]}: not sent to {self.host}: {reason}")
                continue
            try:
                self._send(*item)
            except Exception as e:  # reported; the tests then send it themselves
                self.failed += 1
                self.say(f"{item[0]}: sending {item[1]} to {self.host} failed: {e}")

    def _send(self, name: str, ref: str) -> None:
        import docker
        from rich.console import Console

        from runner.executors.remote import RemoteDocker
        from runner.remote import image_transfer
        from runner.remote.hosts import Host
        from tests.remotefixtures import ADDRESS, CLIENT_KEY, KNOWN_HOSTS

        host = RemoteDocker(Host(name=self.host, ssh=f"runnertest@{ADDRESS[self.host]}", key=str(CLIENT_KEY), known_hosts=str(KNOWN_HOSTS)))
        try:
            seconds = image_transfer.ensure(host.shell, docker.from_env(), ref, name, host.info(), Console(file=io.StringIO()))
        finally:
            host.close()
        self.say(f"{name}: {ref} " + (f"sent to {self.host} in {seconds:.0f} s" if seconds is not None else f"already on {self.host}"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(IMAGES)))
