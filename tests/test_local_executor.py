"""The local executor against the real Docker engine (the base image only: no trainer image needed)."""

from __future__ import annotations

import threading

from tests.dockerfixtures import BASE_IMAGE, require_docker


def test_two_removals_of_one_container_at_once_both_return_and_it_is_gone():
    # the engine answers 409 "removal ... already in progress" to the second; remove() waits for the first instead
    require_docker()
    import docker

    from runner.executors.local import LocalDocker

    client = docker.from_env()
    container = client.containers.run(BASE_IMAGE, ["sleep", "60"], detach=True, network_mode="host", labels={"runner.test": "remove-race"})
    executor, errors = LocalDocker(), []

    def remove() -> None:
        try:
            executor.remove(container.name)
        except Exception as e:  # collected: the assertion below says which
            errors.append(e)

    threads = [threading.Thread(target=remove) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert not client.containers.list(all=True, filters={"name": container.name})
