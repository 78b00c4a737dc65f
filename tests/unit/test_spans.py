"""How blobs of a pack are grouped into spans read with one request each."""

from __future__ import annotations

from stackvault.repo.blob import BlobType, IndexEntry
from stackvault.repo.spans import SPAN_GAP, SPAN_MAX, SpanData, by_pack, cut_spans, runs_in_order

MIB = 1 << 20


def at(offset: int, length: int = 1000, pack: bytes = b"p") -> IndexEntry:
    return IndexEntry(pack, offset, length, length, BlobType.DATA)


def same(e: IndexEntry) -> IndexEntry:
    return e


def test_spans_follow_offsets_and_cut_at_gaps_and_length() -> None:
    a, b, c = at(5000), at(0), at(2000)  # out of order: sorted by offset
    far = at(6000 + SPAN_GAP + 1)  # more than SPAN_GAP after the end of a (5000 + 1000)
    assert list(cut_spans([a, b, c, far], same)) == [[b, c, a], [far]]
    near = at(6000 + SPAN_GAP)  # exactly SPAN_GAP after: still one request
    assert list(cut_spans([a, near], same)) == [[a, near]]
    per_span = SPAN_MAX // MIB
    count = per_span * 5 // 2  # 1 MiB blobs back to back: two full spans and half of one
    many = [at(i * MIB, MIB) for i in range(count)]
    spans = list(cut_spans(many, same))
    assert [len(s) for s in spans] == [per_span, per_span, count - 2 * per_span]
    assert all(s[-1].offset + s[-1].length - s[0].offset <= SPAN_MAX for s in spans)


def test_items_of_one_blob_stay_together() -> None:
    one = at(4000)
    assert list(cut_spans([one, at(0), one, one], same)) == [[at(0), one, one, one]]


def test_by_pack_keeps_first_seen_order() -> None:
    x, y = at(0, pack=b"x"), at(0, pack=b"y")
    assert list(by_pack([y, x, y], same)) == [b"y", b"x"]


def test_runs_keep_the_order_asked_for() -> None:
    a, b, c = at(0), at(1000), at(2000)
    other = at(1000, pack=b"q")
    # a file's blobs: a run ends at a blob of another pack, before the run, or far after it
    assert list(runs_in_order([a, b, other, c, a], same)) == [[a, b], [other], [c], [a]]
    assert list(runs_in_order([a, b, at(2000 + SPAN_GAP + 1)], same, 4 * MIB)) == [
        [a, b],
        [at(2000 + SPAN_GAP + 1)],
    ]
    # a repeated blob inside the run stays in it (a file of zero runs)
    assert list(runs_in_order([a, b, b, b, c], same)) == [[a, b, b, b, c]]


def test_runs_respect_their_limit_and_unindexed_blobs() -> None:
    blobs = [at(i * MIB, MIB) for i in range(6)]
    assert [len(r) for r in runs_in_order(blobs, same, 4 * MIB)] == [4, 2]
    entries = {"a": at(0), "b": at(1000)}
    assert list(runs_in_order(["a", "gone", "b"], entries.get)) == [["a"], ["gone"], ["b"]]


def test_a_span_gives_only_the_blobs_it_holds() -> None:
    data = SpanData(memoryview(bytes(range(100))), start=1000, missing=False)
    assert bytes(data.sealed(at(1010, 5)) or b"") == bytes(range(10, 15))
    assert data.sealed(at(1098, 5)) is None  # cut short: the pack is shorter than indexed
    assert data.sealed(at(990, 5)) is None
    assert SpanData(None, 0, missing=True).sealed(at(0)) is None
