"""Writing snapshots into a restic repository without running restic, for long histories.

restic reloads every index file and snapshot at each backup, so generating 5,000 snapshots with
``restic backup`` takes about a day on a 2-core machine. This module writes the same snapshots
directly in restic's documented repository format, version 2 (restic's ``doc/design.rst``): the
repository is created by ``restic init --repository-version 2``; its master key is read from the
key file with the password (scrypt); blobs are compressed with zstd and sealed with AES-256-CTR
and Poly1305-AES (``cryptography``'s primitives), grouped into packs with an encrypted header;
each snapshot gets one index file and one snapshot file, as one ``restic backup`` writes them.

The result is checked by restic itself where it is used (``bench.history`` runs
``restic check --with-cache`` after generating, and its measured phases read the repository);
nothing here is used by stackvault.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import pwd
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

DIR_MODE = (1 << 31) | 0o755
"""Go's ``os.ModeDir`` with 0755, as restic records a directory's mode."""
FILE_MODE = 0o644
DATA, TREE = 2, 3
"""Pack header types of compressed data and tree blobs."""
PACK_BYTES = 4 << 20
"""Where a pack of data blobs is cut (restic's default minimum pack size)."""


@dataclass(frozen=True)
class SynthFile:
    """One regular file of a snapshot: its path below the backed-up directory, bytes, mtime."""

    path: str
    data: bytes
    mtime_ns: int


@dataclass(frozen=True)
class _Keys:
    encrypt: bytes
    mac_k: bytes
    mac_r: bytes


def _seal(keys: _Keys, plain: bytes) -> bytes:
    """``IV || AES-256-CTR(plain) || Poly1305-AES(ciphertext)``."""
    iv = os.urandom(16)
    enc = Cipher(algorithms.AES(keys.encrypt), modes.CTR(iv)).encryptor()
    ciphertext = enc.update(plain) + enc.finalize()
    return iv + ciphertext + _mac(keys, iv, ciphertext)


def _mac(keys: _Keys, nonce: bytes, ciphertext: bytes) -> bytes:
    # Poly1305-AES: the one-time key is r (clamped by Poly1305 itself) and AES_k(nonce).
    ecb = Cipher(algorithms.AES(keys.mac_k), modes.ECB()).encryptor()  # one block: the nonce
    s = ecb.update(nonce) + ecb.finalize()
    return Poly1305.generate_tag(keys.mac_r + s, ciphertext)


def _open(keys: _Keys, sealed: bytes) -> bytes:
    iv, ciphertext, tag = sealed[:16], sealed[16:-16], sealed[-16:]
    if _mac(keys, iv, ciphertext) != tag:
        raise ValueError("wrong password or damaged restic key file (MAC mismatch)")
    dec = Cipher(algorithms.AES(keys.encrypt), modes.CTR(iv)).decryptor()
    return dec.update(ciphertext) + dec.finalize()


def _split(key: bytes) -> _Keys:
    return _Keys(key[:32], key[32:48], key[48:64])


def key_file(repo: Path) -> dict[str, Any]:
    """The repository's first key file (its KDF parameters and the sealed master key)."""
    data: dict[str, Any] = json.loads(min((repo / "keys").iterdir()).read_bytes())
    return data


def master_keys(repo: Path, password: str) -> _Keys:
    """The repository's master keys, from its (first) key file and the password."""
    keyfile = key_file(repo)
    if keyfile.get("kdf") != "scrypt":
        raise ValueError(f"unknown restic KDF {keyfile.get('kdf')!r}")
    user = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(keyfile["salt"]),
        n=keyfile["N"],
        r=keyfile["r"],
        p=keyfile["p"],
        maxmem=1 << 30,
        dklen=64,
    )
    master = json.loads(_open(_split(user), base64.b64decode(keyfile["data"])))
    mac = master["mac"]
    return _Keys(
        base64.b64decode(master["encrypt"]),
        base64.b64decode(mac["k"]),
        base64.b64decode(mac["r"]),
    )


def _time(ns: int) -> str:
    """RFC 3339 with nanoseconds, in UTC (how restic writes times, Go's RFC3339Nano)."""
    sec, frac = divmod(ns, 10**9)
    stamp = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z" if frac else f"{stamp}Z"


@dataclass(frozen=True)
class _Owner:
    uid: int
    gid: int
    user: str
    group: str


class ResticSynth:
    """Appends snapshots to one restic repository (format version 2).

    Contract: the repository was made by ``restic init --repository-version 2`` with
    ``password``; no restic process writes to it while this one does. Each `snapshot` writes its
    packs, then its index file, then its snapshot file (restic's order), so a stopped run leaves
    a repository restic can read (at worst packs no snapshot refers to).
    """

    def __init__(self, repo: Path, password: str, host: str) -> None:
        self.repo, self.host = repo, host
        self.keys = master_keys(repo, password)
        config = json.loads(_open(self.keys, (repo / "config").read_bytes()))
        if config.get("version") != 2:
            raise ValueError(f"restic repository {repo} is version {config.get('version')}, not 2")
        self.zstd = zstandard.ZstdCompressor(level=3)
        uid, gid = os.getuid(), os.getgid()
        self.owner = _Owner(uid, gid, pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name)
        self.device = os.stat(repo).st_dev
        self.inode = 1 << 40  # synthetic inode numbers, far from the real ones (`trees`)

    # -- files of the repository ----------------------------------------------------------

    def _store(self, kind: str, body: bytes) -> str:
        name = hashlib.sha256(body).hexdigest()
        folder = self.repo / kind / name[:2] if kind == "data" else self.repo / kind
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(body)
        tmp.rename(folder / name)
        return name

    def _unpacked(self, kind: str, doc: object) -> str:
        plain = b"\x02" + self.zstd.compress(json.dumps(doc, separators=(",", ":")).encode())
        return self._store(kind, _seal(self.keys, plain))

    def _pack(self, kind: int, blobs: Sequence[tuple[str, bytes]]) -> dict[str, object]:
        """One pack of ``blobs`` (plaintext id, plaintext); its entry for the index file."""
        parts: list[bytes] = []
        header: list[bytes] = []
        listed: list[dict[str, object]] = []
        offset = 0
        for blob_id, plain in blobs:
            sealed = _seal(self.keys, self.zstd.compress(plain))
            raw_id = bytes.fromhex(blob_id)
            header.append(struct.pack("<BII", kind, len(sealed), len(plain)) + raw_id)
            listed.append(
                {
                    "id": blob_id,
                    "type": "data" if kind == DATA else "tree",
                    "offset": offset,
                    "length": len(sealed),
                    "uncompressed_length": len(plain),
                }
            )
            parts.append(sealed)
            offset += len(sealed)
        sealed_header = _seal(self.keys, b"".join(header))
        parts += [sealed_header, struct.pack("<I", len(sealed_header))]
        return {"id": self._store("data", b"".join(parts)), "blobs": listed}

    # -- one snapshot ---------------------------------------------------------------------

    def _node(self, name: str, mtime_ns: int, **rest: object) -> dict[str, object]:
        self.inode += 1
        stamp = _time(mtime_ns)
        return {
            "name": name,
            **({"type": "dir", "mode": DIR_MODE} if "subtree" in rest else {"type": "file"}),
            **({} if "subtree" in rest else {"mode": FILE_MODE}),
            "mtime": stamp,
            "atime": stamp,
            "ctime": stamp,
            "uid": self.owner.uid,
            "gid": self.owner.gid,
            "user": self.owner.user,
            "group": self.owner.group,
            "inode": self.inode,
            "device_id": self.device,
            **rest,
        }

    def trees(self, root: Path, when: datetime, files: Sequence[SynthFile], inode: int) -> str:
        """Write the packs and the index file of one snapshot of directory ``root`` holding
        ``files`` (in folders one level deep, as ``bench.history`` lays them out), taken at
        ``when``; the id of its root tree. Inode numbers are counted up from ``inode``."""
        self.inode = inode
        data: dict[str, bytes] = {}
        folders: dict[str, list[dict[str, object]]] = {}
        for f in sorted(files, key=lambda f: f.path):
            folder, _, name = f.path.rpartition("/")
            blob_id = hashlib.sha256(f.data).hexdigest()
            data[blob_id] = f.data
            node = self._node(name, f.mtime_ns, size=len(f.data), links=1, content=[blob_id])
            folders.setdefault(folder, []).append(node)
        trees: dict[str, bytes] = {}

        def tree(nodes: list[dict[str, object]]) -> str:
            body = json.dumps({"nodes": nodes}, separators=(",", ":")).encode() + b"\n"
            tree_id = hashlib.sha256(body).hexdigest()
            trees[tree_id] = body
            return tree_id

        stamp = int(when.timestamp() * 10**9)
        top = [
            self._node(folder, stamp, content=None, subtree=tree(nodes))
            for folder, nodes in sorted(folders.items())
        ]
        tree_id = tree(top)
        parts = root.resolve().parts[1:]
        for depth in range(len(parts), 0, -1):
            path = Path("/", *parts[:depth])
            mtime = path.stat().st_mtime_ns if path.exists() else stamp
            tree_id = tree([self._node(parts[depth - 1], mtime, content=None, subtree=tree_id)])
        packs = []
        batch: list[tuple[str, bytes]] = []
        held = 0
        for item in data.items():
            batch.append(item)
            held += len(item[1])
            if held >= PACK_BYTES:
                packs.append(self._pack(DATA, batch))
                batch, held = [], 0
        if batch:
            packs.append(self._pack(DATA, batch))
        packs.append(self._pack(TREE, list(trees.items())))
        self._unpacked("index", {"packs": packs})
        return tree_id

    def snapshot(self, root: Path, when: datetime, tree_id: str, parent: str | None) -> str:
        """Write the snapshot file of directory ``root`` at ``when`` whose root tree is
        ``tree_id`` (written by `trees`); its id."""
        snap: dict[str, object] = {
            "time": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            **({"parent": parent} if parent else {}),
            "tree": tree_id,
            "paths": [str(root.resolve())],
            "hostname": self.host,
            "username": self.owner.user,
            "uid": self.owner.uid,
            "gid": self.owner.gid,
        }
        return self._unpacked("snapshots", snap)
