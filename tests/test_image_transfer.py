"""runner.remote.image_transfer against the SSH test hosts: an image built here is sent (`docker save` streamed into
`docker load` there) and the host then holds the same image ID; two sends of one image to one host at once (two jobs
submitted together, CI sending ahead of its tests) load it once: the second waits for the first, then finds it there.
"""

from __future__ import annotations

import io
import threading
import uuid

import pytest
from rich.console import Console

from runner.executors.remote import RemoteDocker
from runner.remote import image_transfer
from runner.remote.hosts import Host
from tests.dockerfixtures import BASE_IMAGE
from tests.remotefixtures import ADDRESS, CLIENT_KEY, KNOWN_HOSTS, engine, require_remote


@pytest.fixture
def tiny_image():
    """A small image of our own (the base image and one file), under a unique tag; removed here and on the hosts."""
    require_remote()
    import docker

    client = docker.from_env()
    ref = f"runner-test-send:{uuid.uuid4().hex[:10]}"
    dockerfile = f"FROM {BASE_IMAGE}\nRUN echo {ref} > /marker\n".encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=ref, network_mode="host", rm=True, forcerm=True)
    yield client, ref
    for host in ADDRESS:
        try:
            engine(host).images.remove(ref)
        except docker.errors.ImageNotFound:
            pass
    client.images.remove(ref)


def _host(name: str) -> RemoteDocker:
    return RemoteDocker(Host(name=name, ssh=f"runnertest@{ADDRESS[name]}", key=str(CLIENT_KEY), known_hosts=str(KNOWN_HOSTS)))


def test_a_sent_image_is_on_the_host_with_the_same_id_and_not_sent_again(tiny_image):
    client, ref = tiny_image
    host = _host("gpu01")
    try:
        seconds = image_transfer.ensure(host.shell, client, ref, "test", host.info(), Console(file=io.StringIO()))
        assert isinstance(seconds, float) and seconds > 0
        assert engine("gpu01").images.get(ref).id == client.images.get(ref).id
        assert image_transfer.ensure(host.shell, client, ref, "test", host.info(), Console(file=io.StringIO())) is None
    finally:
        host.close()


def test_two_sends_of_one_image_to_one_host_at_once_load_it_once(tiny_image):
    client, ref = tiny_image
    hosts = [_host("gpu02"), _host("gpu02")]  # two SSH connections, as two runner processes have
    consoles = [io.StringIO(), io.StringIO()]
    results: list = [None, None]
    start = threading.Barrier(2)

    def send(i: int) -> None:
        start.wait()
        results[i] = image_transfer.ensure(hosts[i].shell, client, ref, "test", hosts[i].info(), Console(file=consoles[i]))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        for h in hosts:
            h.close()
    sent = [r for r in results if r is not None]
    assert len(sent) == 1 and sent[0] > 0, f"sent {len(sent)} times: {results}"
    waited = [c.getvalue() for r, c in zip(results, consoles) if r is None]
    assert f"waiting for another send of {ref} to gpu02" in waited[0], waited
    assert engine("gpu02").images.get(ref).id == client.images.get(ref).id
