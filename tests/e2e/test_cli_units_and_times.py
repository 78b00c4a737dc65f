"""How the command line writes sizes and moments for a person: binary units (KiB, MiB, GiB)
in the summary and in the progress bar alike; times in the local time zone (``TZ``) with its
name, or in UTC with the global ``--utc``; JSON keeps ISO 8601 in UTC."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from conftest import Result, run_subprocess

Cli = Callable[..., Result]
IST = timedelta(hours=5, minutes=30)  # Asia/Kolkata: no daylight saving time


@pytest.fixture
def backed_up(initialised: Path, tmp_path: Path, cli: Cli) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(3 << 20))
    res = cli("backup", src)
    assert res.code == 0, res.err
    return src


def _snapshot_time(cli: Cli) -> datetime:
    (snap,) = cli("snapshots", "--json").json()
    when = datetime.fromisoformat(snap["time"])
    assert when.utcoffset() == timedelta(0), "JSON times are UTC"
    return when


def test_times_are_local_with_their_zone_and_utc_on_request(backed_up: Path, cli: Cli) -> None:
    when = _snapshot_time(cli)
    local = f"{when + IST:%Y-%m-%d %H:%M:%S} IST"
    utc = f"{when:%Y-%m-%d %H:%M:%S} UTC"
    kolkata = {"TZ": "Asia/Kolkata"}

    listed = run_subprocess("snapshots", env=kolkata)
    assert listed.code == 0, listed.err
    assert local in listed.out and utc not in listed.out
    in_utc = run_subprocess("snapshots", "--utc", env=kolkata)
    assert utc in in_utc.out and local not in in_utc.out
    before_command = run_subprocess("--utc", "snapshots", env=kolkata)
    assert utc in before_command.out

    found = run_subprocess("find", "data.bin", env=kolkata)
    assert found.code == 0, found.err
    assert f"snapshot {found.out.split()[1]} of {local} (" in found.out
    assert re.search(r"file +3\.00 MiB  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST  ", found.out)

    listing = run_subprocess("ls", "-l", "latest", "--utc", env=kolkata)
    assert re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC .*/data\.bin$", listing.out, re.M)

    keys = run_subprocess("key", "list", env={"TZ": "America/Sao_Paulo"})
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d -03  ", keys.out), keys.out

    stamp = run_subprocess("snapshots", "--json", env=kolkata).json()[0]["time"]
    assert stamp.endswith(("+00:00", "Z")) and datetime.fromisoformat(stamp) == when


def test_forget_lists_its_decisions_in_local_time(backed_up: Path, cli: Cli) -> None:
    when = _snapshot_time(cli)
    res = run_subprocess("forget", "--keep-last", "1", "--dry-run", env={"TZ": "Asia/Kolkata"})
    assert res.code == 0, res.err
    assert f"{when + IST:%Y-%m-%d %H:%M:%S} IST" in res.out


def test_summary_sizes_are_binary(initialised: Path, tmp_path: Path, cli: Cli) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(3 << 20))
    res = cli("backup", src)
    assert "Processed 1 files, 3.00 MiB in" in res.out
    assert not re.search(r"\d (kB|MB|GB)\b", res.out)
    assert "3.00 MiB" in cli("snapshots").out


def test_progress_bar_speaks_binary_units_too(initialised: Path, tmp_path: Path) -> None:
    """On a terminal the bar is drawn (rich): its sizes and rate are in MiB as the summary
    is, never in decimal MB."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(os.urandom(24 << 20))
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stackvault", "backup", str(src)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm"},
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other side closed: the command ended
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    bar = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", drawn).decode(errors="replace")
    assert "24.00 MiB/24.00 MiB" in bar, bar
    assert "MiB/s" in bar or "B/s" not in bar
    assert not re.search(r"\d (kB|MB|GB)\b", bar), bar
    assert b"24.00 MiB" in out
