"""Trees (repository layer): one directory's nodes, serialised as a tree blob (FORMAT.md §8)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from stackvault.errors import IntegrityError

NodeType = Literal["file", "dir", "symlink"]


def valid_name(name: str) -> bool:
    """True if ``name`` is one safe path component (see FORMAT.md §8)."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


@dataclass
class Node:
    """One entry of a directory in a snapshot."""

    name: str
    type: NodeType
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    device: int = 0
    nlink: int = 1
    size: int = 0
    content: list[bytes] = field(default_factory=list)
    sha256: str = ""
    subtree: bytes | None = None
    target: str | None = None
    xattrs: list[tuple[str, bytes]] = field(default_factory=list)
    hardlink: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
            "device": self.device,
            "nlink": self.nlink,
        }
        if self.type == "file":
            d["size"] = self.size
            d["content"] = [c.hex() for c in self.content]
            d["sha256"] = self.sha256
        elif self.type == "dir":
            d["subtree"] = self.subtree.hex() if self.subtree else None
        else:
            d["target"] = self.target
        if self.xattrs:
            d["xattrs"] = [[k, base64.b64encode(v).decode()] for k, v in self.xattrs]
        if self.hardlink:
            d["hardlink"] = self.hardlink
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Node:
        kind = d["type"]
        if kind not in ("file", "dir", "symlink"):
            raise IntegrityError(f"tree node has unknown type {kind!r}")
        subtree = d.get("subtree")
        return cls(
            name=str(d["name"]),
            type=kind,
            mode=int(d["mode"]),
            uid=int(d["uid"]),
            gid=int(d["gid"]),
            mtime_ns=int(d["mtime_ns"]),
            ctime_ns=int(d.get("ctime_ns", 0)),
            inode=int(d.get("inode", 0)),
            device=int(d.get("device", 0)),
            nlink=int(d.get("nlink", 1)),
            size=int(d.get("size", 0)),
            content=[bytes.fromhex(c) for c in d.get("content", [])],
            sha256=str(d.get("sha256", "")),
            subtree=bytes.fromhex(subtree) if subtree else None,
            target=d.get("target"),
            xattrs=[(str(k), base64.b64decode(v)) for k, v in d.get("xattrs", [])],
            hardlink=d.get("hardlink"),
        )


def encode_tree(nodes: list[Node]) -> bytes:
    """Serialise a directory deterministically (nodes sorted by name)."""
    ordered = sorted(nodes, key=lambda n: n.name)
    doc = {"nodes": [n.to_json() for n in ordered]}
    # ensure_ascii keeps undecodable names (lone surrogates) as \udcXX escapes.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()


def decode_tree(data: bytes) -> list[Node]:
    """Parse a tree blob. Raises `IntegrityError` on malformed content."""
    try:
        doc = json.loads(data)
        return [Node.from_json(n) for n in doc["nodes"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError("tree blob is malformed") from exc
