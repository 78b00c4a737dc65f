"""The runner contract (sources layer tests, `sources/tools/runner.py`): where dump tools run,
on this host (`HostRunner`) or inside a real container (`ContainerRunner`, Docker engine of the
test session, host networking), behind one interface. Every test taking ``runner`` runs on
both and expects the same:

- `Runner.run` / `Runner.check`: stdout, stderr, stdin, environment and any exit status;
  `check` names the tool, where it ran, its status and its error output; a missing program
  and a command that outlives its timeout are a `SourceError`; `Runner.has`;
- `Runner.output`: a dump read through it is accepted only if it is complete (a tool that fails
  after writing, output left unread, a failing completeness verifier fail it); an aborted
  stream stops its producer;
- `Runner.input` (a load fed on stdin, also through `pump`) and `Runner.session` (lines
  exchanged with a running command).

Every check is triggered by a real command. Inside a container the stream is also trusted only
with its completion record: a shell that dies before writing it, a container killed
mid-stream, and bytes that reach the reader around the counting ``tee`` (what a damaged exec
stream looks like) fail it.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from stackvault.errors import SourceError
from stackvault.sources.docker.exec import ContainerRunner
from stackvault.sources.tools.host import HostRunner
from stackvault.sources.tools.runner import OutputStream, Runner, pump
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


# --- short commands: run, check, has ----------------------------------------------------------

MISSING = "sv-no-such-tool-0d1e"


def test_run_gives_stdout_stderr_and_any_exit_status(runner: Runner) -> None:
    res = runner.run(["sh", "-c", "echo out; echo 'err line' >&2; exit 3"])
    assert res.code == 3
    assert res.stdout == b"out\n" and res.text == "out\n"
    assert "err line" in res.stderr


def test_run_feeds_stdin_and_passes_the_environment(runner: Runner) -> None:
    data = b"".join(b"%d\n" % i for i in range(10_000))  # ~49 KB
    res = runner.run(
        ["sh", "-c", 'cat; echo "$SV_CONTRACT"'], stdin=data, env={"SV_CONTRACT": "v 1"}
    )
    assert res.code == 0, res.stderr
    assert res.stdout == data + b"v 1\n"
    # without stdin the command reads EOF at once (it never waits for a terminal)
    assert runner.run(["sh", "-c", "cat; echo done"], timeout=30).stdout == b"done\n"


def test_check_names_the_tool_where_it_ran_its_status_and_error_output(runner: Runner) -> None:
    assert runner.check(["sh", "-c", "echo fine"]).stdout == b"fine\n"
    argv = ["sh", "-c", "echo 'psql: FATAL: role \"x\" does not exist' >&2; exit 2"]
    with pytest.raises(SourceError) as failed:
        runner.check(argv, what="psql")
    message = str(failed.value)
    assert message.startswith(f"psql {runner.where} exited with status 2")
    assert 'role "x" does not exist' in message
    with pytest.raises(SourceError) as unnamed:
        runner.check(["sh", "-c", "exit 4"])
    assert str(unnamed.value).startswith(f"sh {runner.where} exited with status 4")


def test_a_missing_program_is_a_source_error_naming_it(runner: Runner) -> None:
    with pytest.raises(SourceError) as failed:
        runner.run([MISSING, "--version"])
    assert MISSING in str(failed.value) and runner.where in str(failed.value)
    assert runner.has("sh")
    assert not runner.has(MISSING)


def test_a_command_that_outlives_its_timeout_is_a_source_error(runner: Runner) -> None:
    started = time.monotonic()
    with pytest.raises(SourceError) as failed:
        runner.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 15
    assert str(failed.value) == f"sleep {runner.where} did not finish within 1 s"


# --- output streams ---------------------------------------------------------------------------


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


def test_an_output_stream_of_a_missing_program_fails(runner: Runner) -> None:
    """On this host it cannot start; in a container its wrapper reports status 127: either
    way the stream fails, saying the program is not there."""
    with (
        pytest.raises(SourceError) as failed,
        runner.output([MISSING], label="dumper") as stream,
    ):
        read_all(stream)
        stream.finish()
    message = str(failed.value)
    assert runner.where in message
    assert f"{MISSING} is not installed" in message or "dumper is not available" in message


def _alive(runner: Runner, pidfile: str) -> bool:
    """Whether the process whose pid is in ``pidfile`` (where ``runner`` runs) still runs
    (a zombie does not)."""
    probe = (
        f"s=$(sed -n 's/^State:[[:space:]]*\\(.\\).*/\\1/p' /proc/$(cat {pidfile})/status "
        '2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]'
    )
    return runner.run(["sh", "-c", probe], timeout=30).code == 0


def test_an_aborted_stream_stops_its_producer(runner: Runner) -> None:
    """A capture that gives up (an error, an interrupt) must not leave its dump tool running:
    it would keep a database snapshot or a table lock."""
    pidfile = f"/tmp/sv-contract-{secrets.token_hex(4)}.pid"
    argv = ["sh", "-c", f"echo $$ > {pidfile}; exec yes 'a line of the dump'"]
    try:
        with (
            pytest.raises(RuntimeError, match="the caller gave up"),
            runner.output(argv, label="dumper") as stream,
        ):
            assert stream.read(18) == b"a line of the dump"
            assert _alive(runner, pidfile)
            raise RuntimeError("the caller gave up")  # leaving the block aborts
        stream.abort()  # idempotent
        deadline = time.monotonic() + 10
        while _alive(runner, pidfile):
            assert time.monotonic() < deadline, "the producer still runs after abort"
            time.sleep(0.1)
    finally:
        runner.run(["rm", "-f", pidfile], timeout=30)


# --- input streams and sessions ---------------------------------------------------------------


def test_an_input_stream_feeds_the_command_until_finish(runner: Runner) -> None:
    data = os.urandom(3 * 1024 * 1024 + 5)
    stream = runner.input(["sh", "-c", "sha256sum | cut -c1-64; echo 'loaded' >&2"], label="loader")
    for start in range(0, len(data), 1 << 20):
        stream.write(data[start : start + (1 << 20)])
    assert stream.bytes_written == len(data)
    done = stream.finish()
    assert done.code == 0
    assert done.stdout.decode().strip() == hashlib.sha256(data).hexdigest()
    assert "loaded" in done.stderr


def test_pump_copies_a_readable_into_an_input_stream(runner: Runner) -> None:
    data = os.urandom(2 * 1024 * 1024 + 3)
    stream = runner.input(["sh", "-c", "wc -c"], label="loader")
    assert pump(io.BytesIO(data), stream) == len(data)
    assert stream.bytes_written == len(data)


def test_a_loader_that_fails_fails_the_input_stream(runner: Runner) -> None:
    argv = ["sh", "-c", "head -c 10 > /dev/null; echo 'loader: syntax error at line 1' >&2; exit 4"]
    with pytest.raises(SourceError) as failed:
        pump(io.BytesIO(os.urandom(4 * 1024 * 1024)), runner.input(argv, label="loader"))
    message = str(failed.value)
    assert message.startswith(f"loader {runner.where} exited with status 4 after reading")
    assert "syntax error at line 1" in message


def test_a_session_exchanges_lines_until_the_command_ends(runner: Runner) -> None:
    session = runner.session(["sh"])
    try:
        session.send("echo hello; echo 'two words'; echo @@ready\n")
        assert session.read_until("@@ready", timeout=30) == "hello\ntwo words"
        with pytest.raises(SourceError, match="did not answer in time"):
            session.read_until("@@never", timeout=0.5)
        session.send("echo 'sh: giving up' >&2; exit 5\n")
        with pytest.raises(SourceError) as ended:
            session.read_until("@@never", timeout=30)
        assert "exited with status 5" in str(ended.value)
        assert "giving up" in str(ended.value)
    finally:
        session.close()


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
