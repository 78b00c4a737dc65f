"""The garbage collector's threshold during a restore (`stackvault.engine.collector`): raised
while a block runs, put back when the last block ends, whatever the order they end in."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from stackvault.engine.collector import FIRST, fewer_collections


@pytest.fixture(autouse=True)
def default_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_the_first_threshold_is_raised_inside_and_put_back_after() -> None:
    with fewer_collections():
        assert gc.get_threshold() == (FIRST, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_put_back_after_a_failure() -> None:
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("restore failed")
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_blocks_put_it_back_only_when_the_last_ends() -> None:
    first, second = fewer_collections(), fewer_collections()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first restore ends while the second runs
    assert gc.get_threshold()[0] == FIRST
    second.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_higher_threshold_set_by_the_program_is_kept() -> None:
    gc.set_threshold(50_000, 20, 5)
    with fewer_collections():
        assert gc.get_threshold() == (50_000, 20, 5)
    assert gc.get_threshold() == (50_000, 20, 5)
