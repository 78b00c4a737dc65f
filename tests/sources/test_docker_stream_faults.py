"""A dump read through a broken connection to the Docker engine is never accepted (sources
layer tests, real engine of the test session, host networking).

The `ContainerRunner` here talks to the engine through `DockerSocketProxy`
(tests/support/dockerproxy.py), a unix-socket proxy that damages the exec stream of one
``docker exec`` after a given number of bytes while every other API call passes: the
connection is cut inside a frame or between frames, the engine goes away, the tail of the
stream is lost, stdout frames are dropped, the stream stalls. Each capture must fail with one
sentence that names what happened, and `finish` never returns a result for it.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pytest

from stackvault.errors import SourceError
from stackvault.sources.docker.exec import ContainerRunner
from support.dockerd import DockerEngine, run_service_container
from support.dockerproxy import DockerSocketProxy, ExecFault, Fault

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

SLEEPER = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
SIZE = 20_000_000
BIG = ["head", "-c", str(SIZE), "/dev/urandom"]
AFTER = 256 * 1024


@pytest.fixture(scope="module")
def container(docker_client: DockerClient, host_image: str) -> Iterator[Container]:
    name = f"sv-faults-{secrets.token_hex(4)}"
    box = run_service_container(docker_client, host_image, name, ["sh", "-c", SLEEPER], user="0:0")
    yield box
    box.remove(force=True)


@pytest.fixture
def proxy(docker_engine: DockerEngine) -> Iterator[DockerSocketProxy]:
    with DockerSocketProxy(docker_engine.socket_path) as proxy:
        yield proxy


def proxied_runner(
    proxy: DockerSocketProxy, container: Container, timeout: int = 30
) -> Iterator[ContainerRunner]:
    import docker

    client = docker.DockerClient(base_url=proxy.host, timeout=timeout)
    try:
        yield ContainerRunner(client, container)
    finally:
        client.close()


@pytest.fixture
def runner(proxy: DockerSocketProxy, container: Container) -> Iterator[ContainerRunner]:
    """A runner whose engine connections all go through ``proxy``."""
    yield from proxied_runner(proxy, container)


def failed_capture(runner: ContainerRunner, argv: Sequence[str]) -> str:
    """Read ``argv``'s stream to its end and finish it; the message of the `SourceError` that
    must come out of that (``pytest.raises`` fails if `finish` returns a result)."""
    with pytest.raises(SourceError) as failed, runner.output(argv, label="dumper") as stream:
        while stream.read(1 << 20):
            pass
        stream.finish()
    message = str(failed.value)
    assert "\n" not in message and "Traceback" not in message and "Error(" not in message
    assert runner.where in message
    return message


def test_an_undamaged_stream_through_the_proxy_is_accepted(
    proxy: DockerSocketProxy, runner: ContainerRunner
) -> None:
    """The control: the proxy itself changes nothing (so the failures below are the faults')."""
    payload = b"".join(f"line {i}\n".encode() for i in range(50_000))
    argv = ["sh", "-c", "i=0; while [ $i -lt 50000 ]; do echo line $i; i=$((i+1)); done"]
    with runner.output(argv, label="dumper") as stream:
        data = stream.read()
        result = stream.finish()
    assert data == payload
    assert (result.size, result.inside_size) == (len(payload), len(payload))
    assert result.sha256 == result.inside_sha256 == hashlib.sha256(payload).hexdigest()
    assert proxy.exec_streams == 1 and proxy.struck == []


@pytest.mark.parametrize("kind", [Fault.CUT, Fault.TRUNCATE])
def test_a_connection_that_ends_inside_a_frame_is_a_lost_connection(
    proxy: DockerSocketProxy, runner: ContainerRunner, kind: Fault
) -> None:
    """CUT closes both sides at once; TRUNCATE lets the command run to its end and then closes
    the client's side: either way the last frame arrives incomplete."""
    proxy.arm(ExecFault(kind, AFTER))
    message = failed_capture(runner, BIG)
    assert [s.fault.kind for s in proxy.struck] == [kind]
    assert "lost its exec connection (the stream ended in the middle of a frame)" in message
    assert "completion record" not in message


def test_a_connection_cut_between_frames_during_output_is_a_lost_connection(
    proxy: DockerSocketProxy, runner: ContainerRunner
) -> None:
    """The stream ends cleanly between two frames while the command still writes; the engine
    then fails the exec with status 126, which must not pass for the command's own status."""
    proxy.arm(ExecFault(Fault.CUT, AFTER, whole_frames=True))
    message = failed_capture(runner, BIG)
    assert [s.fault.kind for s in proxy.struck] == [Fault.CUT]
    assert "lost its exec connection (the stream ended while the command was still running)" in (
        message
    )
    assert "nothing of it was recorded as complete" in message
    assert "status 126" not in message


def test_a_connection_cut_while_the_command_is_idle_is_a_lost_connection(
    proxy: DockerSocketProxy, runner: ContainerRunner
) -> None:
    """The command sits idle after the cut (as a dump waiting for a lock): the engine never
    notices, the exec stays running; the capture fails within the grace period, named."""
    proxy.arm(ExecFault(Fault.CUT, AFTER, whole_frames=True))
    argv = ["sh", "-c", f"head -c {2 * AFTER} /dev/urandom; sleep 30"]
    message = failed_capture(runner, argv)
    assert [s.fault.kind for s in proxy.struck] == [Fault.CUT]
    assert "lost its exec connection (the stream ended while the command was still running)" in (
        message
    )
    assert "did not end" not in message


def test_an_engine_that_goes_away_mid_stream_is_a_lost_connection(
    proxy: DockerSocketProxy, runner: ContainerRunner
) -> None:
    """Every connection closes between two frames and new ones are refused, as when dockerd
    dies: the exec can no longer be inspected."""
    proxy.arm(ExecFault(Fault.ENGINE_DOWN, AFTER, whole_frames=True))
    message = failed_capture(runner, BIG)
    assert [s.fault.kind for s in proxy.struck] == [Fault.ENGINE_DOWN]
    assert message.startswith(
        f"lost the connection to the Docker engine while running a command {runner.where} "
        "(Connection refused)"
    )


def test_a_stream_whose_tail_is_lost_is_not_trusted(
    proxy: DockerSocketProxy, runner: ContainerRunner
) -> None:
    """The command ends well inside (status 0), but the stream stops at a frame boundary and
    its completion record never arrives."""
    proxy.arm(ExecFault(Fault.TRUNCATE, AFTER, whole_frames=True))
    message = failed_capture(runner, BIG)
    assert [s.fault.kind for s in proxy.struck] == [Fault.TRUNCATE]
    assert "ended without its completion record (exec exited with status 0)" in message
    assert "the stream is not trusted" in message


def test_a_stream_that_lost_output_frames_arrived_damaged(
    proxy: DockerSocketProxy, runner: ContainerRunner
) -> None:
    """stdout frames are dropped after 256 KiB while stderr (with the completion record)
    passes: fewer bytes arrive than were counted inside the container."""
    proxy.arm(ExecFault(Fault.DROP_OUTPUT, AFTER))
    message = failed_capture(runner, BIG)
    assert [s.fault.kind for s in proxy.struck] == [Fault.DROP_OUTPUT]
    assert f"arrived damaged: {SIZE} bytes (SHA-256 " in message
    received = int(message.split(" inside the container, ")[1].split(" bytes")[0])
    assert AFTER <= received < SIZE
    assert "nothing of it was recorded as complete" in message


def test_a_stalled_stream_is_a_lost_connection(
    proxy: DockerSocketProxy, container: Container
) -> None:
    """The engine stops sending: the read times out after the client's API timeout."""
    proxy.arm(ExecFault(Fault.STALL, AFTER))
    for runner in proxied_runner(proxy, container, timeout=2):
        message = failed_capture(runner, BIG)
    assert [s.fault.kind for s in proxy.struck] == [Fault.STALL]
    assert "lost its exec connection (timed out)" in message
