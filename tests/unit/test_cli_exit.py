"""How the console entry ends the process: without interpreter finalisation once the output
is flushed, or through the normal exit when that is not safe."""

from __future__ import annotations

import io
import threading

import pytest

from stackvault.cli import main as cli_main
from stackvault.errors import EXIT_ERROR


class Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@pytest.fixture
def fast_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    def record(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(cli_main.os, "_exit", record)


def test_a_finished_command_exits_at_once_with_its_code(
    fast_exit: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_main.sys, "argv", ["stackvault", "--version"])
    # Only this test's threads count: pools other tests left behind are not its business.
    monkeypatch.setattr(cli_main.threading, "enumerate", lambda: [threading.main_thread()])
    with pytest.raises(Exited) as exited:
        cli_main.run()
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("stackvault ")  # flushed before the exit


def test_a_live_non_daemon_thread_gets_the_normal_exit(
    fast_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_main, "main", lambda: 3)
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        with pytest.raises(SystemExit) as exited:
            cli_main.run()
        assert exited.value.code == 3
    finally:
        release.set()
        worker.join()


def test_a_reader_gone_before_the_last_flush_is_an_error_exit(
    fast_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    class GonePipe(io.StringIO):
        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_main, "main", lambda: 0)
    monkeypatch.setattr(cli_main.sys, "stdout", GonePipe())
    with pytest.raises(SystemExit) as exited:
        cli_main.run()
    assert exited.value.code == EXIT_ERROR
