"""An unchanged file's parent node stands for it only if every recorded field would be equal
(engine/nodes.same_metadata), whatever field of the entry differs."""

from __future__ import annotations

import dataclasses

import pytest

from stackvault.engine.nodes import node_from_entry, same_metadata
from stackvault.fs.entry import FsEntry
from stackvault.repo.tree import Node

ENTRY = FsEntry(
    name="doc.json",
    path="/srv/doc.json",
    kind="file",
    mode=0o640,
    uid=1000,
    gid=1001,
    size=2048,
    mtime_ns=1_700_000_000_123_456_789,
    ctime_ns=1_700_000_001_000_000_000,
    inode=424242,
    device=2049,
    nlink=1,
    xattrs=(("user.tag", b"x"),),
)


def stored(entry: FsEntry) -> Node:
    node = node_from_entry(entry)
    node.content, node.sha256 = [b"\x01" * 32], "ab" * 32
    return node


def test_the_node_made_from_the_same_entry_matches() -> None:
    assert same_metadata(ENTRY, stored(ENTRY))
    linked = ENTRY._replace(nlink=2)
    assert same_metadata(linked, stored(linked))


@pytest.mark.parametrize(
    "change",
    [
        {"name": "other.json"},
        {"mode": 0o644},
        {"uid": 0},
        {"gid": 0},
        {"size": 2049},
        {"mtime_ns": ENTRY.mtime_ns + 1},
        {"ctime_ns": ENTRY.ctime_ns + 1},
        {"inode": 1},
        {"device": 2050},
        {"nlink": 2},
        {"xattrs": ()},
        {"xattrs": (("user.tag", b"y"),)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_any_differing_field_of_the_entry_is_seen(change: dict[str, object]) -> None:
    changed = ENTRY._replace(**change)
    assert not same_metadata(changed, stored(ENTRY))
    assert node_from_entry(changed) != node_from_entry(ENTRY)  # the field is recorded


@pytest.mark.parametrize(
    "change",
    [{"type": "dir"}, {"target": "x"}, {"hardlink": "2049:424242"}, {"subtree": b"\x02" * 32}],
    ids=lambda c: next(iter(c)),
)
def test_a_node_that_differs_in_kind_or_links_does_not_match(change: dict[str, object]) -> None:
    assert not same_metadata(ENTRY, dataclasses.replace(stored(ENTRY), **change))
