"""What a stack restore waits for before it loads a database service: the official images'
entrypoint (``docker-entrypoint.sh``) initialises a new data directory with a temporary server
on the usual socket and ``exec``s the real server only afterwards, so the restore must wait
until no ``docker-entrypoint.sh`` runs in the container any more (`entrypoint_initialising`),
read through the engine, on real containers of the test engine.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from stackvault.stack.readiness import entrypoint_initialising
from support.dockerd import run_service_container

if TYPE_CHECKING:
    from docker import DockerClient

_ENTRYPOINT = "#!/bin/sh\\nsleep 3\\nexec sleep 1000\\n"
"""A stand-in for the official entrypoint: 3 s of init, then it ``exec``s the server."""


def _run(client: DockerClient, image: str, start: str) -> str:
    """A container that writes the stand-in entrypoint and starts it with ``start``."""
    name = f"svwait-{secrets.token_hex(3)}"
    script = (
        f"printf '{_ENTRYPOINT}' > /tmp/docker-entrypoint.sh && "
        f"chmod +x /tmp/docker-entrypoint.sh && {start}"
    )
    run_service_container(client, image, name, ["sh", "-c", script], user="0:0")
    return name


def test_the_entrypoint_counts_as_initialising_until_it_execs_the_server(
    docker_client: DockerClient, host_image: str
) -> None:
    # Run as the program (ENTRYPOINT ["docker-entrypoint.sh"]) and through its interpreter.
    names = [
        _run(docker_client, host_image, "exec /tmp/docker-entrypoint.sh postgres"),
        _run(docker_client, host_image, "exec sh /tmp/docker-entrypoint.sh mysqld"),
    ]
    try:
        t0 = time.monotonic()
        assert all(entrypoint_initialising(docker_client, n) for n in names)
        waits: dict[str, float] = {}
        while len(waits) < len(names) and time.monotonic() - t0 < 20:
            for n in names:
                if n not in waits and not entrypoint_initialising(docker_client, n):
                    waits[n] = time.monotonic() - t0
            time.sleep(0.2)
        assert len(waits) == len(names), "the entrypoint never exec'd its server"
        assert all(2.0 < w < 10 for w in waits.values()), waits
        # A container that never ran the entrypoint, and one that does not exist, are ready.
        plain = f"svwait-{secrets.token_hex(3)}"
        names.append(plain)
        run_service_container(
            docker_client, host_image, plain, ["sh", "-c", "exec sleep 1000"], user="0:0"
        )
        assert not entrypoint_initialising(docker_client, plain)
        assert not entrypoint_initialising(docker_client, "svwait-no-such-container")
    finally:
        for n in names:
            docker_client.containers.get(n).remove(force=True)
