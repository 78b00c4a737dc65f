"""Runner contract for output streams (sources layer tests): a dump read through
`Runner.output` is accepted only if it is complete, on this host (`HostRunner`) and inside a
real container (`ContainerRunner`, Docker engine of the test session, host networking).

Every check is triggered by a real command: a tool that fails after writing, output left
unread, a failing completeness verifier; inside a container also a shell that dies before
its completion record, a container killed mid-stream, and bytes that reach the reader
around the counting ``tee`` (what a damaged exec stream looks like).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from stackvault.errors import SourceError
from stackvault.sources.docker.exec import ContainerRunner
from stackvault.sources.tools.runner import HostRunner, OutputStream, Runner
from support.dockerd import run_service_container

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

SLEEPER = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
PAYLOAD = "".join(f"line {i} of the dump\n" for i in range(20_000)).encode()  # ~450 KB
PRODUCE = [
    "sh",
    "-c",
    'i=0; while [ $i -lt 20000 ]; do echo "line $i of the dump"; i=$((i+1)); done',
]


@pytest.fixture(scope="module")
def container(docker_client: DockerClient, host_image: str) -> Iterator[Container]:
    name = f"sv-runner-{secrets.token_hex(4)}"
    box = run_service_container(docker_client, host_image, name, ["sh", "-c", SLEEPER], user="0:0")
    yield box
    box.remove(force=True)


@pytest.fixture(params=["host", pytest.param("container", marks=pytest.mark.docker)])
def runner(request: pytest.FixtureRequest) -> Runner:
    if request.param == "host":
        return HostRunner()
    request.getfixturevalue("docker_env")
    client: DockerClient = request.getfixturevalue("docker_client")
    return ContainerRunner(client, request.getfixturevalue("container"))


@pytest.fixture
def in_container(docker_env: str, docker_client: DockerClient, container: Container) -> Runner:
    return ContainerRunner(docker_client, container)


def read_all(stream: OutputStream) -> bytes:
    """Everything up to EOF."""
    return stream.read()


def test_a_complete_stream_is_accepted_with_its_size_and_digest(runner: Runner) -> None:
    with runner.output(PRODUCE, label="dumper") as stream:
        data = read_all(stream)
        result = stream.finish()
    assert data == PAYLOAD
    assert result.size == len(PAYLOAD)
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    if isinstance(runner, ContainerRunner):
        assert (result.inside_size, result.inside_sha256) == (result.size, result.sha256)


def test_a_tool_that_fails_after_writing_fails_the_stream(runner: Runner) -> None:
    argv = ["sh", "-c", "echo partial; echo 'dumper: out of disk' >&2; exit 3"]
    with runner.output(argv, label="dumper") as stream:
        assert read_all(stream) == b"partial\n"
        with pytest.raises(SourceError) as failed:
            stream.finish()
    message = str(failed.value)
    assert message.startswith(f"dumper {runner.where} exited with status 3 after 8 bytes")
    assert "out of disk" in message


def test_output_left_unread_fails_the_stream(runner: Runner) -> None:
    with runner.output(PRODUCE, label="dumper") as stream:
        head = b""
        while len(head) < 1000:  # a read may return less than asked (one exec frame)
            head += stream.read(1000 - len(head))
        assert head == PAYLOAD[:1000]
        with pytest.raises(SourceError, match="produced output that was not read"):
            stream.finish()


def test_a_failing_verifier_fails_the_stream(runner: Runner) -> None:
    verify = ["sh", "-c", "cat > /dev/null; echo 'verifier: unexpected end of file' >&2; exit 1"]
    with runner.output(PRODUCE, label="dumper", verify=verify) as stream:
        assert read_all(stream) == PAYLOAD
        with pytest.raises(SourceError, match="completeness check") as failed:
            stream.finish()
    assert "unexpected end of file" in str(failed.value)


def test_a_passing_verifier_reads_the_same_bytes(runner: Runner) -> None:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    verify = ["sh", "-c", f'[ "$(sha256sum | cut -c1-64)" = {digest} ]']
    with runner.output(PRODUCE, label="dumper", verify=verify) as stream:
        assert read_all(stream) == PAYLOAD
        assert stream.finish().size == len(PAYLOAD)


# --- inside a container: the stream is trusted only with its completion record ---------------


def _kill_script_shell() -> str:
    """Shell text that kills the wrapper script around the command (found by the completion
    marker in its command line) so that it never writes its completion record."""
    return (
        "for p in /proc/[0-9]*; do "
        'case "$(tr "\\0" " " < $p/cmdline 2>/dev/null)" in '
        '*stackvault-end*) [ "${p#/proc/}" = $$ ] || kill -9 "${p#/proc/}";; esac; '
        "done"
    )


def test_a_stream_without_its_completion_record_is_not_trusted(in_container: Runner) -> None:
    argv = ["sh", "-c", "echo everything looks fine; " + _kill_script_shell()]
    with in_container.output(argv, label="dumper") as stream:
        read_all(stream)
        with pytest.raises(SourceError) as failed:
            stream.finish()
    assert "ended without its completion record" in str(failed.value)
    assert "the stream is not trusted" in str(failed.value)


def test_a_container_killed_mid_stream_fails_the_stream(
    in_container: Runner, docker_client: DockerClient, host_image: str
) -> None:
    name = f"sv-victim-{secrets.token_hex(4)}"
    victim = run_service_container(
        docker_client, host_image, name, ["sh", "-c", SLEEPER], user="0:0"
    )
    try:
        runner = ContainerRunner(docker_client, victim)
        argv = ["sh", "-c", "echo started; sleep 30; echo never"]
        with runner.output(argv, label="dumper") as stream:
            assert stream.read(8) == b"started\n"
            victim.kill()
            read_all(stream)
            with pytest.raises(SourceError) as failed:
                stream.finish()
        assert "ended without its completion record" in str(failed.value)
    finally:
        victim.remove(force=True)


def test_bytes_that_bypass_the_count_inside_are_a_damaged_stream(in_container: Runner) -> None:
    """Bytes written straight to the exec's stdout, around ``tee``: what arrives is not what
    was counted inside, as when the engine garbles or splices a stream."""
    main_stdout = (
        "for p in /proc/[0-9]*; do "
        'case "$(tr "\\0" " " < $p/cmdline 2>/dev/null)" in '
        '*stackvault-end*) echo "$p/fd/1"; break;; esac; done'
    )
    argv = ["sh", "-c", f'echo counted; out=$({main_stdout}); echo smuggled > "$out"']
    with in_container.output(argv, label="dumper") as stream:
        read_all(stream)
        with pytest.raises(SourceError) as failed:
            stream.finish()
    assert "arrived damaged" in str(failed.value)
