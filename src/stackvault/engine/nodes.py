"""Every conversion between the three records of a file's metadata (engine layer, the one
layer that sees all three):

* `FsEntry` (`stackvault.fs.entry`): an entry as read from the filesystem (``lstat``,
  link text, xattrs) by a backup's walk;
* `EntryMeta` (`stackvault.sources.contract`): the metadata a source gives for an entry of
  an artifact (mode, owner, mtime, xattrs), and that a reader of the artifact gets back;
* `Node` (`stackvault.repo.tree`): an entry of a directory as a snapshot stores it (a tree
  blob's node, FORMAT.md §8).

A backup makes nodes from filesystem entries (`node_from_entry`) and compares them with the
parent snapshot's (`same_metadata`); the artifact sink makes nodes from a source's metadata
(`node_from_meta`) and the artifact reader gives it back (`meta_of_node`).
"""

from __future__ import annotations

import os

from stackvault.fs.entry import FsEntry
from stackvault.repo.tree import Node, NodeType
from stackvault.sources.contract import EntryMeta


def node_from_entry(e: FsEntry) -> Node:
    """The snapshot node for a filesystem entry (content and subtree are filled in later)."""
    node = Node(
        name=e.name,
        type=e.kind,
        mode=e.mode,
        uid=e.uid,
        gid=e.gid,
        mtime_ns=e.mtime_ns,
        ctime_ns=e.ctime_ns,
        inode=e.inode,
        device=e.device,
        nlink=e.nlink,
        size=e.size if e.kind == "file" else 0,
        target=e.link_target if e.kind == "symlink" else None,
        xattrs=list(e.xattrs),
    )
    if e.kind == "file" and e.nlink > 1:
        node.hardlink = f"{e.device}:{e.inode}"
    elif e.rdev:
        node.major, node.minor = os.major(e.rdev), os.minor(e.rdev)
    return node


def same_metadata(e: FsEntry, node: Node) -> bool:
    """Whether `node_from_entry` of the regular file ``e`` would give ``node``'s metadata
    (every field other than content and SHA-256), so that ``node`` can stand for it."""
    return (
        # FsEntry is a named tuple: fields 3-11 (mode, uid, gid, size, mtime_ns, ctime_ns,
        # inode, device, nlink) compared in one go; this runs once per unchanged file.
        e[3:12]
        == (
            node.mode,
            node.uid,
            node.gid,
            node.size,
            node.mtime_ns,
            node.ctime_ns,
            node.inode,
            node.device,
            node.nlink,
        )
        and e.kind == "file" == node.type
        and e.name == node.name
        and node.target is None
        and node.subtree is None
        and (list(e.xattrs) == node.xattrs if e.xattrs or node.xattrs else True)
        and (f"{e.device}:{e.inode}" if e.nlink > 1 else None) == node.hardlink
    )


def node_from_meta(
    name: str,
    kind: NodeType,
    meta: EntryMeta,
    *,
    subtree: bytes | None = None,
    target: str | None = None,
) -> Node:
    """The snapshot node for an artifact entry with a source's metadata ``meta`` (a file's
    content, a directory's ``subtree`` or a symlink's ``target`` are filled in by the
    caller or given here). Its ctime is the mtime: an artifact has no ctime of its own."""
    return Node(
        name=name,
        type=kind,
        mode=meta.mode,
        uid=meta.uid,
        gid=meta.gid,
        mtime_ns=meta.mtime_ns,
        ctime_ns=meta.mtime_ns,
        subtree=subtree,
        target=target,
        xattrs=list(meta.xattrs),
    )


def meta_of_node(node: Node) -> EntryMeta:
    """The metadata of an artifact entry as its source gave it (`node_from_meta`)."""
    return EntryMeta(
        mode=node.mode,
        uid=node.uid,
        gid=node.gid,
        mtime_ns=node.mtime_ns,
        xattrs=tuple(node.xattrs),
    )
