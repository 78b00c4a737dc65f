"""`Quiesce` on real containers of the test engine: containers that ignore their stop signal
(a shell as PID 1 with ``trap "" TERM``), stopped by level in parallel, each with its own stop
timeout where it has one, recorded as killed, and every one running again afterwards - after
success, after a failure and after Ctrl-C.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from stackvault.errors import SourceError
from stackvault.sources.docker.quiesce import Quiesce
from support.dockerd import HOST_BINDS, TEST_LABEL

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

STUBBORN = "trap '' TERM; while :; do sleep 0.2; done"
"""A writer that ignores SIGTERM: only SIGKILL, after the stop timeout, ends it."""
POLITE = "trap 'exit 0' TERM; while :; do sleep 0.2; done"
TIMEOUT = 3.0


class Containers:
    """Containers made for one test; every one is removed afterwards."""

    def __init__(self, client: DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        self.made: list[Container] = []

    def run(self, script: str, *, stop_timeout: int | None = None) -> Container:
        api = self.client.api
        # The low-level call: containers.run() cannot set a container's StopTimeout.
        created = api.create_container(
            self.image,
            ["sh", "-c", script],
            name=f"svq-{secrets.token_hex(3)}",
            user="0:0",
            labels={TEST_LABEL: "1"},
            stop_timeout=stop_timeout,
            host_config=api.create_host_config(
                network_mode="host",
                binds={src: dict(b) for src, b in HOST_BINDS.items()},
            ),
        )
        container = self.client.containers.get(created["Id"])
        self.made.append(container)
        container.start()
        return container

    def running(self) -> list[bool]:
        out = []
        for c in self.made:
            c.reload()
            out.append(c.status == "running")
        return out

    def state(self, container: Container) -> dict[str, object]:
        container.reload()
        state: dict[str, object] = container.attrs["State"]
        return state


@pytest.fixture
def containers(docker_client: DockerClient, host_image: str) -> Iterator[Containers]:
    made = Containers(docker_client, host_image)
    try:
        yield made
    finally:
        for c in made.made:
            try:
                c.remove(force=True)
            except Exception:
                pass


def test_one_level_of_stubborn_writers_costs_one_timeout(
    docker_client: DockerClient, containers: Containers
) -> None:
    stubborn = [containers.run(STUBBORN) for _ in range(4)]
    own = containers.run(STUBBORN, stop_timeout=1)
    polite = containers.run(POLITE)
    notices: list[str] = []
    q = Quiesce(
        docker_client,
        levels=[[*stubborn, own, polite]],
        timeout=TIMEOUT,
        own_timeouts=True,
        notice=notices.append,
    )
    t0 = time.monotonic()
    with q:
        stopped_after = time.monotonic() - t0
        assert containers.running() == [False] * 6
    down = time.monotonic() - t0
    assert containers.running() == [True] * 6
    print(f"6 containers, 5 ignoring SIGTERM: stopped in {stopped_after:.2f} s, down {down:.2f} s")
    # In parallel: one timeout (and a little), not five.
    assert TIMEOUT <= stopped_after < 2.5 * TIMEOUT
    records = {r["container"]: r for r in q.record()}
    for c in stubborn:
        r = records[str(c.name)]
        assert r["killed"] is True and r["timeout_s"] == TIMEOUT and r["level"] == 0
        assert TIMEOUT - 0.5 <= r["stop_s"] < 2 * TIMEOUT
        assert 0 < r["stop_s"] <= r["downtime_s"] < 2.5 * TIMEOUT
    # Its own StopTimeout (docker run --stop-timeout, Compose's stop_grace_period) is used.
    r = records[str(own.name)]
    assert r["timeout_s"] == 1.0 and r["killed"] is True and r["stop_s"] < TIMEOUT - 0.5
    r = records[str(polite.name)]
    assert r["killed"] is False and r["stop_s"] < TIMEOUT - 0.5
    assert sum("was killed" in n for n in notices) == 5, notices

    # Without own_timeouts, the caller's timeout is used for every container.
    q = Quiesce(docker_client, [own], timeout=0)
    with q:
        pass
    assert q.record()[0]["timeout_s"] == 0 and q.record()[0]["killed"] is True


def test_levels_stop_in_order_and_start_in_reverse(
    docker_client: DockerClient, containers: Containers
) -> None:
    first = containers.run(STUBBORN)
    second = [containers.run(STUBBORN), containers.run(POLITE)]
    q = Quiesce(docker_client, levels=[[first], second], timeout=1)
    with q:
        pass
    assert containers.running() == [True] * 3
    ended = {str(c.name): str(containers.state(c)["FinishedAt"]) for c in containers.made}
    began = {str(c.name): str(containers.state(c)["StartedAt"]) for c in containers.made}
    # RFC 3339 times of one engine sort as text (same zone, same precision).
    assert ended[str(first.name)] < min(ended[str(c.name)] for c in second)
    assert began[str(first.name)] > max(began[str(c.name)] for c in second)
    assert [r["level"] for r in q.record()] == [0, 1, 1]


def test_every_container_runs_again_after_a_failure_and_after_ctrl_c(
    docker_client: DockerClient, containers: Containers
) -> None:
    made = [containers.run(STUBBORN) for _ in range(3)]
    with (
        pytest.raises(SourceError, match="the capture failed"),
        Quiesce(docker_client, levels=[made], timeout=1),
    ):
        raise SourceError("the capture failed")
    assert containers.running() == [True] * 3

    with (
        pytest.raises(KeyboardInterrupt),
        Quiesce(docker_client, levels=[made[:1], made[1:]], timeout=1),
    ):
        raise KeyboardInterrupt
    assert containers.running() == [True] * 3

    # A container that cannot be stopped (gone) is told, the others are stopped and started.
    gone = containers.run(POLITE)
    q = Quiesce(docker_client, levels=[[*made, gone]], timeout=1)
    gone.remove(force=True)
    containers.made.remove(gone)
    notices: list[str] = []
    q.notice = notices.append
    with q:
        assert containers.running() == [False] * 3
    assert containers.running() == [True] * 3
    assert any("is gone" in n for n in notices), notices


def test_paused_containers_are_frozen_and_thawed_whatever_happens(
    docker_client: DockerClient, containers: Containers
) -> None:
    frozen = containers.run(STUBBORN)
    stopped = containers.run(STUBBORN)
    names = [str(frozen.name)]
    q = Quiesce(docker_client, levels=[[frozen, stopped]], timeout=1, pause=names)
    with q:
        assert containers.state(frozen)["Paused"] is True
        assert containers.state(frozen)["Running"] is True
        assert containers.state(stopped)["Running"] is False
        time.sleep(0.5)
    assert containers.running() == [True, True]
    assert containers.state(frozen)["Paused"] is False
    # Frozen, not restarted: the same process runs on.
    assert frozen.attrs["State"]["StartedAt"] < stopped.attrs["State"]["StartedAt"]
    by_name = {r["container"]: r for r in q.record()}
    r = by_name[str(frozen.name)]
    assert r["mode"] == "pause" and r["killed"] is False and r["stop_s"] < 1
    assert 0.5 <= r["downtime_s"] < 1.5 + by_name[str(stopped.name)]["stop_s"]
    assert by_name[str(stopped.name)]["mode"] == "stop"

    for failure in (SourceError("the capture failed"), KeyboardInterrupt()):
        with (
            pytest.raises(type(failure)),
            Quiesce(docker_client, levels=[[frozen], [stopped]], timeout=1, pause=names),
        ):
            assert containers.state(frozen)["Paused"] is True
            raise failure
        assert containers.running() == [True, True]
        assert containers.state(frozen)["Paused"] is False

    # A container paused by someone else is left paused.
    frozen.pause()
    notices: list[str] = []
    with Quiesce(docker_client, [frozen], pause=names, notice=notices.append) as q:
        pass
    assert containers.state(frozen)["Paused"] is True and q.record() == []
    assert any("paused already" in n for n in notices), notices
    frozen.unpause()


class _FreezerFails:
    """A client whose ``pause`` fails the way runc does when the cgroup freezer gives up
    ("unable to freeze") for the first ``failures`` calls, then pauses on the real engine."""

    def __init__(self, client: DockerClient, failures: int, message: str) -> None:
        self.api = _FailingPauseAPI(client.api, failures, message)


class _FailingPauseAPI:
    def __init__(self, api: object, failures: int, message: str) -> None:
        self._api, self.failures, self.message, self.calls = api, failures, message, 0

    def pause(self, cid: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            from docker.errors import APIError

            raise APIError(self.message)
        self._api.pause(cid)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._api, name)


FREEZE_FAILED = "500 Server Error: OCI runtime pause failed: unable to freeze: unknown"


def test_a_pause_the_freezer_refuses_for_a_moment_is_tried_again(
    docker_client: DockerClient, containers: Containers
) -> None:
    frozen = containers.run(POLITE)
    names = [str(frozen.name)]
    flaky = _FreezerFails(docker_client, 2, FREEZE_FAILED)
    notices: list[str] = []
    q = Quiesce(flaky, [frozen], pause=names, notice=notices.append)  # type: ignore[arg-type]
    with q:
        assert containers.state(frozen)["Paused"] is True
    assert containers.state(frozen)["Paused"] is False and containers.running() == [True]
    assert flaky.api.calls == 3
    assert sum("could not be frozen yet" in n for n in notices) == 2, notices

    # Refused every time: the capture is aborted, nothing is left paused.
    stubborn = _FreezerFails(docker_client, 99, FREEZE_FAILED)
    with (
        pytest.raises(SourceError, match="could not be paused"),
        Quiesce(stubborn, [frozen], pause=names),  # type: ignore[arg-type]
    ):
        pytest.fail("the capture ran although the container was never paused")
    assert stubborn.api.calls == 3
    assert containers.state(frozen)["Paused"] is False and containers.running() == [True]

    # Any other failure is not tried again.
    other = _FreezerFails(docker_client, 1, "409 Client Error: container is not running")
    with (
        pytest.raises(SourceError, match="could not be paused"),
        Quiesce(other, [frozen], pause=names),  # type: ignore[arg-type]
    ):
        pytest.fail("the capture ran although the container was never paused")
    assert other.api.calls == 1 and containers.running() == [True]
