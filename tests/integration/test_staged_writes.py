"""Staged writes of restored files (sources layer tests): `FileWriter.stage` collects a large
file's bytes in two stages and writes each full one in the background, around the page cache
(``O_DIRECT``) or through it as its `WriteMode` says, on real files (tests run as root)."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import random
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stackvault.errors import IntegrityError, StackvaultError
from stackvault.fs import writer as fswriter
from stackvault.fs.target import RestoreTarget
from stackvault.fs.writemode import WriteMode

MTIME_NS = 1_500_000_000_987_654_321
STAGE = 256 * 1024


class Scripted(WriteMode):
    """A mode that answers from a script (then repeats its last answer) and keeps what it
    was told."""

    def __init__(self, answers: list[bool]) -> None:
        super().__init__()
        self.answers = answers
        self.asked = 0
        self.records: list[tuple[bool, int]] = []
        self.refused = False

    def direct(self) -> bool:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        return answer and not self.refused

    def record(self, direct: bool, nbytes: int, seconds: float) -> None:
        assert seconds >= 0
        self.records.append((direct, nbytes))

    def refuse_direct(self) -> None:
        self.refused = True


@pytest.fixture
def target(tmp_path: Path) -> Iterator[RestoreTarget]:
    with RestoreTarget(str(tmp_path / "target"), overwrite=False) as t:
        yield t


@pytest.fixture
def writes() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool]]:
    """Every pwrite of the writer: (offset, length, whether O_DIRECT was on)."""
    calls: list[tuple[int, int, bool]] = []
    real = os.pwrite

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        direct = bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        calls.append((offset, len(data), direct))
        return real(fd, data, offset)

    monkeypatch.setattr(fswriter.os, "pwrite", pwrite)
    return calls


def stages(n: int = 2, size: int = STAGE) -> list[memoryview]:
    return [memoryview(mmap.mmap(-1, size)) for _ in range(n)]


def append_all(
    target: RestoreTarget, name: str, data: bytes, mode: WriteMode, pool: ThreadPoolExecutor
) -> None:
    """Write ``data`` with `append` in pieces of awkward sizes through two stages."""
    rnd = random.Random(len(data))
    with target.open_file([name], len(data)) as w:
        assert w.stage(stages(), pool, mode)
        at = 0
        while at < len(data):
            n = rnd.choice([1, 511, 4096, STAGE - 1, STAGE, 3 * STAGE + 5])
            w.append(data[at : at + n])
            at += n
        w.commit(0o640, 0, 0, MTIME_NS)


def supports_direct(path: Path) -> bool:
    probe = path / ".direct-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, STAGE, STAGE + 1, 5 * STAGE + 12345])
@pytest.mark.parametrize(
    "script", [[True, False], [True], [False]], ids=["mixed", "direct", "cache"]
)
def test_staged_writes_give_exact_content_in_either_mode(
    target: RestoreTarget,
    writes: ThreadPoolExecutor,
    spy: list[tuple[int, int, bool]],
    size: int,
    script: list[bool],
) -> None:
    data = random.Random(size).randbytes(size)
    mode = Scripted(script)
    append_all(target, "f", data, mode, writes)
    path = Path(target.root) / "f"
    assert path.read_bytes() == data
    assert os.lstat(path).st_size == size
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640
    assert os.lstat(path).st_mtime_ns == MTIME_NS

    full, aligned = divmod(size, STAGE)
    aligned = aligned // 4096 * 4096
    expected = [(i * STAGE, STAGE) for i in range(full)]
    if aligned:
        expected.append((full * STAGE, aligned))
    if size % 4096:
        expected.append((size // 4096 * 4096, size % 4096))
    assert [(o, n) for o, n, _ in spy] == expected
    direct_ok = supports_direct(Path(target.root))
    measured = [script[min(i, len(script) - 1)] for i in range(mode.asked)]
    # every aligned write went the way the mode said (where the filesystem allows it), and
    # the mode was told; the last partial block always goes through the page cache
    assert [d for _, _, d in spy[: mode.asked]] == [d and direct_ok for d in measured]
    assert [d for _, _, d in spy[mode.asked :]] == [False] * (len(spy) - mode.asked)
    assert mode.asked == full + bool(aligned)
    assert mode.records == [
        (d and direct_ok, n) for d, (_, n) in zip(measured, expected[: mode.asked], strict=True)
    ]


def test_a_filesystem_refusing_o_direct_gets_page_cache_writes(
    target: RestoreTarget, writes: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fcntl.fcntl

    def refuse(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, cmd, arg)

    monkeypatch.setattr(fcntl, "fcntl", refuse)
    mode = WriteMode()
    data = random.Random(1).randbytes(3 * STAGE + 99)
    append_all(target, "f", data, mode, writes)
    assert (Path(target.root) / "f").read_bytes() == data
    assert mode.direct() is False  # told, it asks for no more direct writes
    figures = mode.figures()
    assert figures.chosen == "page cache" and figures.direct_mb_s is None


def test_a_direct_write_refused_midway_is_written_again_through_the_page_cache(
    target: RestoreTarget, writes: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not supports_direct(Path(target.root)):
        pytest.skip("this filesystem has no O_DIRECT: the fallback is tested above")
    real = os.pwrite
    refused = []

    def refuse_direct_once(fd: int, data: memoryview, offset: int) -> int:
        if not refused and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and offset:
            refused.append(offset)
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real(fd, data, offset)

    monkeypatch.setattr(fswriter.os, "pwrite", refuse_direct_once)
    mode = Scripted([True])
    data = random.Random(2).randbytes(4 * STAGE + 7)
    append_all(target, "f", data, mode, writes)
    assert refused == [STAGE]
    assert mode.refused
    assert mode.records[0] == (True, STAGE)  # the refused write is not measured
    assert [d for d, _ in mode.records[1:]] == [False] * (len(mode.records) - 1)
    assert (Path(target.root) / "f").read_bytes() == data


def test_disk_full_during_a_background_write_removes_the_file(
    target: RestoreTarget, writes: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    data = bytes(2 * STAGE)
    w = target.open_file(["f"], len(data))
    assert w.stage(stages(), writes, WriteMode())
    monkeypatch.setattr(fswriter.os, "pwrite", full)
    with pytest.raises(StackvaultError, match="No space left"):
        w.append(data)  # the first stage's failure is raised when the second is handed over
    w.abort()
    assert os.listdir(target.root) == []


def test_a_failed_last_stage_fails_the_commit(
    target: RestoreTarget, writes: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite

    def full_at_the_end(fd: int, data: memoryview, offset: int) -> int:
        if offset >= STAGE:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    w = target.open_file(["f"], 2 * STAGE)
    assert w.stage(stages(), writes, WriteMode())
    monkeypatch.setattr(fswriter.os, "pwrite", full_at_the_end)
    w.append(bytes(2 * STAGE))  # both stages handed over; the second fails in the background
    with pytest.raises(StackvaultError, match="No space left"):
        w.commit(0o644, 0, 0, MTIME_NS)
    assert os.listdir(target.root) == []


def test_append_beyond_the_recorded_size_is_an_integrity_error(
    target: RestoreTarget, writes: ThreadPoolExecutor
) -> None:
    for staged in (False, True):
        with target.open_file([f"f{staged}"], 5) as w:
            if staged:
                assert w.stage(stages(), writes, WriteMode())
            w.append(b"abc")
            with pytest.raises(IntegrityError):
                w.append(b"abc")


def test_stages_that_do_not_qualify_are_refused(
    target: RestoreTarget, writes: ThreadPoolExecutor
) -> None:
    mode = WriteMode()
    with target.open_file(["f"], 10) as w:
        assert not w.stage(stages(1), writes, mode)  # one stage cannot overlap writes
        assert not w.stage(stages(2, 4096 + 512), writes, mode)  # not a multiple of 4096
        assert not w.stage([*stages(1), *stages(1, 2 * STAGE)], writes, mode)
        w.append(b"x")
        assert not w.stage(stages(), writes, mode)  # something was written already
        w.append(b"123456789")
        w.commit(0o644, 0, 0, MTIME_NS)
    assert (Path(target.root) / "f").read_bytes() == b"x123456789"
