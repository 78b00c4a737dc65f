"""`WriteMode`: the choice between writing around the page cache and through it, made from what
the writes took."""

from __future__ import annotations

import threading

import pytest

from stackvault.fs.writemode import EXPLORE, MARGIN, PROBE, RECORD_MIN, WriteMode

MB = 1 << 20


def feed(mode: WriteMode, direct_s: float, cached_s: float, writes: int) -> list[bool]:
    """Ask and record ``writes`` writes of 4 MB costing the given seconds; the answers."""
    answers = []
    for _ in range(writes):
        direct = mode.direct()
        answers.append(direct)
        mode.record(direct, 4 * MB, direct_s if direct else cached_s)
    return answers


def test_both_modes_are_probed_alternately_before_a_choice() -> None:
    mode = WriteMode()
    assert mode.figures().chosen is None
    answers = feed(mode, 0.01, 0.01, 2 * PROBE)
    assert answers == [True, False] * PROBE


def test_the_page_cache_is_chosen_only_when_clearly_cheaper() -> None:
    slower_direct = WriteMode()
    feed(slower_direct, 0.010, 0.010 / (MARGIN * 1.5), 2 * PROBE)
    assert feed(slower_direct, 0.010, 0.010 / (MARGIN * 1.5), 5) == [False] * 5
    assert slower_direct.figures().chosen == "page cache"

    near_tie = WriteMode()
    feed(near_tie, 0.010, 0.010 / (MARGIN * 0.95), 2 * PROBE)
    assert feed(near_tie, 0.010, 0.010 / (MARGIN * 0.95), 5) == [True] * 5
    assert near_tie.figures().chosen == "direct"


def test_the_other_mode_is_tried_now_and_then_and_the_choice_can_change() -> None:
    mode = WriteMode()
    feed(mode, 0.004, 0.002, 2 * PROBE)  # the page cache is cheaper at first
    answers = feed(mode, 0.004, 0.002, 2 * EXPLORE)
    assert answers.count(True) == 2  # one write in EXPLORE keeps the direct figure current
    # the kernel starts throttling: the page cache gets slow, and the next tries show it
    answers = feed(mode, 0.004, 0.040, 4 * EXPLORE)
    assert answers[-EXPLORE:].count(True) == EXPLORE - 1
    assert mode.figures().chosen == "direct"


def test_figures_are_megabytes_per_second_of_what_was_measured() -> None:
    mode = WriteMode()
    feed(mode, 0.010, 0.020, 2 * PROBE)
    figures = mode.figures()
    assert figures.direct_mb_s == pytest.approx(4 * MB / 0.010 / 1e6, abs=0.1)
    assert figures.page_cache_mb_s == pytest.approx(4 * MB / 0.020 / 1e6, abs=0.1)
    assert figures.chosen == "direct"


def test_short_writes_are_not_measured() -> None:
    mode = WriteMode()
    mode.record(True, RECORD_MIN - 1, 10.0)
    assert mode.figures().direct_mb_s is None
    mode.record(True, RECORD_MIN, 0.001)
    assert mode.figures().direct_mb_s == pytest.approx(RECORD_MIN / 0.001 / 1e6, abs=0.1)


def test_refusing_o_direct_means_the_page_cache_from_then_on() -> None:
    mode = WriteMode()
    assert mode.direct() is True
    mode.refuse_direct()
    assert feed(mode, 0.001, 1.0, 3 * EXPLORE) == [False] * (3 * EXPLORE)
    assert mode.figures().chosen == "page cache"
    assert WriteMode(direct=False).direct() is False


def test_many_threads_asking_and_recording_at_once() -> None:
    mode = WriteMode()

    def work() -> None:
        feed(mode, 0.004, 0.001, 200)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    figures = mode.figures()
    assert figures.chosen == "page cache"
    assert figures.direct_mb_s == pytest.approx(4 * MB / 0.004 / 1e6, abs=0.1)
    assert figures.page_cache_mb_s == pytest.approx(4 * MB / 0.001 / 1e6, abs=0.1)
