"""Node types of trees (repository layer): fifos and devices round-trip, and a type this
version does not know (written by a newer one) is a clear error, not damage or a crash."""

from __future__ import annotations

import json

import pytest

from stackvault.errors import IntegrityError, UnsupportedFormat
from stackvault.repo.tree import Node, decode_tree, encode_tree


def test_fifos_and_devices_round_trip() -> None:
    nodes = [
        Node("pipe", "fifo", mode=0o640),
        Node("tty", "chardev", mode=0o620, major=4, minor=1),
        Node("sda", "blockdev", mode=0o660, major=8, minor=0),
    ]
    data = encode_tree(nodes)
    assert decode_tree(data) == sorted(nodes, key=lambda n: n.name)
    doc = json.loads(data)["nodes"]
    assert [n.get("major") for n in doc] == [None, 8, 4]
    assert "target" not in doc[0] and "size" not in doc[0]


def test_a_node_type_from_a_newer_version_is_a_clear_error() -> None:
    tree = {"nodes": [{"name": "d", "type": "door", "mode": 0, "uid": 0, "gid": 0, "mtime_ns": 0}]}
    with pytest.raises(UnsupportedFormat, match=r"type 'door'.*upgrade stackvault"):
        decode_tree(json.dumps(tree).encode())


def test_a_device_without_its_numbers_is_damage() -> None:
    tree = {
        "nodes": [{"name": "d", "type": "chardev", "mode": 0, "uid": 0, "gid": 0, "mtime_ns": 0}]
    }
    with pytest.raises(IntegrityError):
        decode_tree(json.dumps(tree).encode())
