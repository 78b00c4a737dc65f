"""The repository (repository layer): opening, reading blobs, trees and snapshots, writing them.

`Repository` ties a store to a master key, the config and the in-memory index. Readers use
`load_blob`/`load_tree`/`list_snapshots`; writers get a `BlobWriter` from `writer()` and call
`save_snapshot` only after the writer has been flushed (FORMAT.md §10).
"""

from __future__ import annotations

import hmac
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stackvault import __version__
from stackvault.chunking.cdc import ChunkerParams
from stackvault.clock import Clock, SystemClock
from stackvault.crypto.envelope import Envelope
from stackvault.crypto.kdf import KdfParams
from stackvault.crypto.keyfile import read_key_info, unwrap_master_key, wrap_master_key
from stackvault.crypto.masterkey import MasterKey
from stackvault.errors import (
    IntegrityError,
    KeyManagementError,
    ObjectNotFound,
    RepositoryExists,
    SnapshotNotFound,
    StoreError,
    StorePermissionDenied,
    UnsupportedFormat,
    UsageError,
    WrongPassword,
)
from stackvault.records.run import RunRecord
from stackvault.repo import runs
from stackvault.repo.access import StoreAccess
from stackvault.repo.blob import BlobCodec, BlobType, IndexEntry, blob_aad
from stackvault.repo.config import (
    CONFIG_NAME,
    DEFAULT_PACK_SIZE,
    RepoConfig,
    decode_config,
    read_header,
)
from stackvault.repo.index import Index
from stackvault.repo.indexfiles import read_index_files
from stackvault.repo.lock import DEFAULT_LEASE_S, RepositoryLock, current_username
from stackvault.repo.pack import PACKS_PREFIX, pack_name, storage_id
from stackvault.repo.reserve import release_reserve, write_reserve
from stackvault.repo.runs import RunExpiry, RunKeep, StoredRun
from stackvault.repo.snapshot import SNAPSHOT_AAD, Snapshot
from stackvault.repo.spans import SpanData, missing_blob
from stackvault.repo.tree import Node, decode_tree, walk_trees
from stackvault.repo.treepacks import TreePacks
from stackvault.repo.writer import BlobWriter
from stackvault.store.base import Retention, Store

PROGRAM = f"stackvault {__version__}"


@dataclass(frozen=True)
class KeyListing:
    """One key file, as `key list` shows it."""

    id: str
    current: bool
    created: str
    host: str
    username: str


class Repository:
    """An open repository. Thread-safe for concurrent reads."""

    def __init__(
        self,
        store: Store,
        config: RepoConfig,
        master: MasterKey,
        key_id: str,
        clock: Clock,
        notice: Callable[[str], None],
    ) -> None:
        self.store = store
        self.config = config
        self.master = master
        self.key_id = key_id
        self.clock = clock
        self.notice = notice
        self.envelope: Envelope = master.envelope()
        self.index = Index()
        self.superseded_index: list[str] = []
        """Index files still present but replaced by a newer one (see `load_index`)."""
        self.damaged_index: list[str] = []
        """Index files that could not be read when the index was loaded."""
        self._lost: dict[bytes, bytes] = {}
        """Blobs whose only pack was found missing (`drop_missing_packs`) → that pack."""
        self.lock_time: datetime | None = None
        """The store's time when this session's lock was taken (`RepositoryLock.store_time`),
        set by whoever holds the lock; prune measures the age of packs against it."""
        self.lock_lease_s = DEFAULT_LEASE_S
        self.lock_retry_s = 0.0
        """Seconds a lock of this repository waits for a conflicting one to go (--retry-lock)."""
        self._local = threading.local()
        self.access = StoreAccess.of(store.capabilities())
        """How this repository's store is used (threads, reads by pack or in spans)."""
        self._tree_packs = TreePacks(store) if self.access.tree_packs else None

    # --- creating and opening ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        store: Store,
        password: bytes,
        *,
        chunker: ChunkerParams | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
        kdf: KdfParams | None = None,
        clock: Clock | None = None,
        notice: Callable[[str], None] = lambda _m: None,
        object_lock: Retention | None = None,
        ids_from: Repository | None = None,
    ) -> Repository:
        """Create a new repository in ``store``; refuse if one exists there. With
        ``object_lock``, every object written from now on (locks excepted) carries that
        retention; the store must support it.

        With ``ids_from`` (``init --copy-chunker-params-from``) the new repository gets that
        repository's id key, chunker seed and chunk sizes — and a new random encryption key —
        so both name and cut identical data identically and `copy` between them moves only
        missing blobs without re-reading the others (FORMAT.md §2). ``chunker`` must then be
        None."""
        if store.exists(CONFIG_NAME):
            raise RepositoryExists(
                f"a repository already exists at {store.describe()}",
                hint="use it, or choose another location for a new one",
            )
        if not 512 * 1024 <= pack_size <= 512 * 1024 * 1024:
            raise UsageError("pack size must be between 512 KiB and 512 MiB")
        clock = clock or SystemClock()
        master = MasterKey.generate()
        if ids_from is not None:
            if chunker is not None:
                raise UsageError("the chunker parameters come from the source repository")
            master = ids_from.master.sharing_ids()
            chunker = ids_from.config.chunker
        config = RepoConfig(
            id=secrets.token_hex(16),
            created=clock.now().isoformat(),
            chunker=chunker or ChunkerParams(),
            pack_size=pack_size,
            object_lock=object_lock,
        )
        store.configure_retention(object_lock)
        key_id = cls._write_key(store, master, password, kdf or KdfParams(), clock)
        write_reserve(store)
        # config last: a repository without config is "not a repository", never half a one.
        store.put(CONFIG_NAME, config.encode(master.envelope()))
        return cls(store, config, master, key_id, clock, notice)

    @staticmethod
    def _write_key(
        store: Store, master: MasterKey, password: bytes, kdf: KdfParams, clock: Clock
    ) -> str:
        data = wrap_master_key(
            master,
            password,
            params=kdf,
            created=clock.now(),
            host=socket.gethostname(),
            username=current_username(),
        )
        key_id = storage_id(data).hex()
        store.put(f"keys/{key_id}", data)
        return key_id

    @classmethod
    def open(
        cls,
        store: Store,
        password: bytes,
        *,
        clock: Clock | None = None,
        notice: Callable[[str], None] = lambda _m: None,
        header: dict[str, Any] | None = None,
    ) -> Repository:
        """Open an existing repository; raise `RepositoryNotFound`, `UnsupportedFormat`,
        `WrongPassword` or `IntegrityError`. The index is not loaded (see `load_index`).
        ``header`` is the config header if the caller already read it (`read_header`)."""
        if header is None:
            header = read_header(store)
        names = sorted(info.name for info in store.list("keys/"))
        if not names:
            raise IntegrityError(f"the repository at {store.describe()} has no key files")
        for name in names:
            try:
                master = unwrap_master_key(store.get(name), password)
            except WrongPassword:
                continue
            except UnsupportedFormat as exc:
                notice(f"skipping key {name.removeprefix('keys/')[:8]}: {exc}")
                continue
            config = decode_config(header, master.envelope())
            try:
                store.configure_retention(config.object_lock)
            except StoreError as exc:
                # Still readable (e.g. a mirror of the bucket on a disk): say what is lost.
                notice(
                    f"the repository asks for Object Lock retention, but {exc}; objects "
                    "written now carry no retention"
                )
            return cls(
                store, config, master, name.removeprefix("keys/"), clock or SystemClock(), notice
            )
        raise WrongPassword(
            "wrong password: no key of this repository opens with it",
            hint="check STACKVAULT_PASSWORD / --password-file",
        )

    # --- locks ------------------------------------------------------------------------------

    def lock(self, *, exclusive: bool, operation: str) -> RepositoryLock:
        """A lock for an operation; use as a context manager. An exclusive lock (the
        operations that free space) that finds the store full releases the space reserve
        to be written (`repo/reserve.py`)."""
        return RepositoryLock(
            self.store,
            self.envelope,
            self.clock,
            exclusive=exclusive,
            operation=operation,
            lease_s=self.lock_lease_s,
            notice=self.notice,
            on_full=(lambda: release_reserve(self.store, self.notice)) if exclusive else None,
            retry_s=self.lock_retry_s,
        )

    # --- index ------------------------------------------------------------------------------

    def index_names(self) -> list[str]:
        return sorted(info.name for info in self.store.list("index/"))

    def load_index(self, on_error: Callable[[str, IntegrityError], None] | None = None) -> None:
        """Load every index file that no other one supersedes.

        A damaged index file is skipped: passed to ``on_error`` if given (`check`), else
        reported with a notice. Its packs are then unknown to this session — their blobs read
        as missing, a backup stores them again — until `repair index` reads their headers;
        one damaged file never blocks restores of what the others list, nor new backups.
        Skipped files are listed in `damaged_index`."""

        found = read_index_files(
            self.store,
            self.envelope,
            self.index_names(),
            self.index,
            workers=self.access.metadata_readers,
        )
        self.superseded_index = found.superseded
        self.damaged_index = [n for n, _ in found.damaged]
        for name, exc in found.damaged:
            if on_error is not None:
                on_error(name, exc)
            else:
                self.notice(
                    f"warning: index file {name.removeprefix('index/')[:12]} is damaged ({exc}); "
                    "the blobs it lists count as missing until `stackvault repair index` "
                    "rebuilds the index from the packs"
                )

    def drop_missing_packs(self, consequence: str = "") -> list[str]:
        """Forget, for this session, the index entries of packs the store does not hold
        (one listing of ``data/``): a blob they held is then found in another pack that holds
        it, or is missing — so a backup neither reuses it nor trusts a parent's files that
        need it (it stores the data again), and a restore reads the copy that exists. Warns
        with ``consequence`` added; returns the names of the missing packs (index files keep
        naming them until `repair index`)."""
        stored = {info.name for info in self.store.list(PACKS_PREFIX)}
        missing = [p for p in self.index.pack_ids() if pack_name(p) not in stored]
        if missing:
            lost = self.index.drop_packs(missing)
            self._lost.update(lost)
            self.notice(
                f"warning: {len(missing)} pack(s) the index lists are missing from the "
                f"repository ({len(lost)} blob(s) stored nowhere else){consequence}; run "
                "`stackvault check` and `stackvault repair index`"
            )
        return sorted(pack_name(p) for p in missing)

    def has_blob(self, blob_id: bytes) -> bool:
        """True if the loaded index lists the blob (stored in a completely written pack)."""
        return blob_id in self.index

    def blob_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """The id this repository gives a blob with this plaintext (keyed BLAKE3, FORMAT §2)."""
        return self.master.blob_id(data)

    def shares_blob_ids(self, other: Repository) -> bool:
        """True if both repositories have the same id key, so a blob has the same id in both
        and trees can be copied as they are (``init --copy-chunker-params-from``)."""
        return hmac.compare_digest(self.master.id_key, other.master.id_key)

    # --- reading ----------------------------------------------------------------------------

    def codec(self) -> BlobCodec:
        """This thread's codec, for reading and writing (zstd contexts must not be shared
        between threads)."""
        codec: BlobCodec | None = getattr(self._local, "codec", None)
        if codec is None:
            codec = self._local.codec = BlobCodec()
        return codec

    def open_blob(
        self,
        entry: IndexEntry,
        blob_id: bytes,
        sealed: bytes | memoryview,
        *,
        verify_id: bool = True,
    ) -> bytes | memoryview:
        """Authenticate, decrypt, decompress and verify one sealed blob read from its pack.

        Authentication proves the blob was sealed under this repository's key for this id
        and type; ``verify_id`` also hashes the plaintext to check it is the content the id
        names (which only a faulty writer could get wrong). A caller that verifies the
        content another way before trusting it (a restore checking each file's SHA-256) may
        skip that hash."""
        try:
            plain = self.codec().decode(
                self.envelope.open(sealed, blob_aad(entry.type, blob_id)), entry.raw_length
            )
        except IntegrityError as exc:
            raise IntegrityError(
                f"blob {blob_id.hex()[:12]} in pack {entry.pack_id.hex()[:12]} is damaged: {exc}"
            ) from exc
        if len(plain) != entry.raw_length or (verify_id and self.master.blob_id(plain) != blob_id):
            raise IntegrityError(
                f"blob {blob_id.hex()[:12]} in pack {entry.pack_id.hex()[:12]} has wrong content"
            )
        return plain

    def index_entry(self, blob_id: bytes) -> IndexEntry:
        """Where a blob is stored; raises `IntegrityError` if the index does not list it."""
        entry = self.index.get(blob_id)
        if entry is None:
            pack = self._lost.get(blob_id)
            if pack is not None:
                raise IntegrityError(
                    f"blob {blob_id.hex()[:12]} is in pack {pack.hex()[:12]}, which is missing"
                )
            raise IntegrityError(f"blob {blob_id.hex()[:12]} is not in the index")
        return entry

    def load_blob(self, blob_id: bytes, *, verify_id: bool = True) -> bytes | memoryview:
        """The plaintext of a blob. Raises `IntegrityError` if missing or damaged
        (``verify_id``: see `open_blob`)."""
        entry = self.index_entry(blob_id)
        try:
            sealed = self.store.get(pack_name(entry.pack_id), entry.offset, entry.length)
        except ObjectNotFound as exc:
            raise missing_blob(entry, blob_id) from exc
        if len(sealed) != entry.length:
            raise IntegrityError(f"pack {entry.pack_id.hex()[:12]} is truncated")
        return self.open_blob(entry, blob_id, sealed, verify_id=verify_id)

    def span_blob(
        self, span: SpanData, entry: IndexEntry, blob_id: bytes, *, verify_id: bool = True
    ) -> bytes | memoryview:
        """The plaintext of a blob of a span read with `read_span`: cut out of it, or read
        on its own if the span does not hold it (which says what is wrong); a blob of a
        missing pack raises `IntegrityError` without asking the store again."""
        if span.missing:
            raise missing_blob(entry, blob_id)
        sealed = span.sealed(entry)
        if sealed is None:
            return self.load_blob(blob_id, verify_id=verify_id)
        return self.open_blob(entry, blob_id, sealed, verify_id=verify_id)

    def load_tree(self, tree_id: bytes) -> list[Node]:
        """A tree's nodes (`tree_bytes`, decoded)."""
        return decode_tree(self.tree_bytes(tree_id))

    def tree_bytes(self, tree_id: bytes) -> bytes:
        """A tree's plaintext; from a remote store cut out of its whole tree pack, fetched
        once (`TreePacks`), else read on its own. Raises `IntegrityError` if missing or
        damaged."""
        if self._tree_packs is not None:
            entry = self.index.get(tree_id)
            if entry is not None and entry.type == BlobType.TREE:
                sealed = self._tree_packs.sealed(entry)
                if sealed is not None:
                    return bytes(self.open_blob(entry, tree_id, sealed))
        return bytes(self.load_blob(tree_id))

    def snapshot_names(self) -> list[str]:
        return [info.name for info in self.store.list("snapshots/")]

    def load_snapshot(self, name: str) -> Snapshot:
        snap_id = name.removeprefix("snapshots/")
        data = self.store.get(f"snapshots/{snap_id}")
        if storage_id(data).hex() != snap_id:
            raise IntegrityError(f"snapshot {snap_id[:8]} does not match its name (damaged)")
        try:
            plain = self.envelope.open(data, SNAPSHOT_AAD)
        except IntegrityError as exc:
            raise IntegrityError(f"snapshot {snap_id[:8]} failed authentication") from exc
        return Snapshot.decode(plain, snap_id)

    def list_snapshots(
        self,
        on_error: Callable[[str, IntegrityError], None] | None = None,
        *,
        strict: bool = False,
    ) -> list[Snapshot]:
        """Every readable snapshot, oldest first.

        A damaged snapshot file is passed to ``on_error`` if given; otherwise it raises with
        ``strict`` (prune must not guess what a damaged snapshot needs) or is skipped with a
        notice, so one bad file does not stop restores of other snapshots or new backups.
        A snapshot of a newer format version is skipped with a notice (raised with
        ``strict``).
        """

        def fetch(name: str) -> Snapshot | IntegrityError | UnsupportedFormat:
            try:
                return self.load_snapshot(name)
            except (IntegrityError, UnsupportedFormat) as exc:
                return exc

        out: list[Snapshot] = []
        names = self.snapshot_names()
        workers = max(1, min(self.access.metadata_readers, len(names)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            loaded = list(pool.map(fetch, names))
        for name, got in zip(names, loaded, strict=True):
            if isinstance(got, Snapshot):
                out.append(got)
                continue
            if isinstance(got, UnsupportedFormat):
                # Not damage: a newer program wrote it. Listing the others must go on; prune
                # (strict) must not guess what it needs.
                if strict:
                    raise got
                self.notice(f"notice: skipping {got}")
                continue
            if on_error is not None:
                on_error(name, got)
            elif strict:
                raise got
            else:
                self.notice(
                    f"warning: skipping damaged snapshot {name.removeprefix('snapshots/')[:8]}"
                    f" ({got}); run `stackvault check`, then `stackvault forget` it"
                )
        out.sort(key=lambda s: (s.time, s.id))
        return out

    def find_snapshot(self, ref: str, snapshots: list[Snapshot] | None = None) -> Snapshot:
        """Resolve ``latest`` or a unique id prefix."""
        snaps = snapshots if snapshots is not None else self.list_snapshots()
        if ref == "latest":
            if not snaps:
                raise SnapshotNotFound("the repository has no snapshots yet")
            return snaps[-1]
        if not ref or any(c not in "0123456789abcdef" for c in ref):
            raise SnapshotNotFound(f"{ref!r} is not a snapshot id (hex digits) or 'latest'")
        matches = [s for s in snaps if s.id.startswith(ref)]
        if not matches:
            raise SnapshotNotFound(
                f"no snapshot matches {ref!r}", hint="list them with `stackvault snapshots`"
            )
        if len(matches) > 1:
            raise SnapshotNotFound(f"{ref!r} matches {len(matches)} snapshots; give more digits")
        return matches[0]

    # --- writing ----------------------------------------------------------------------------

    def writer(self, *, on_pack: Callable[[int], None] | None = None) -> BlobWriter:
        return BlobWriter(self, on_pack=on_pack)

    def save_snapshot(self, snapshot: Snapshot) -> str:
        """Write the snapshot (after the writer flushed: commit order). Returns its id."""
        if not snapshot.program:
            snapshot.program = PROGRAM
        data = self.envelope.seal(snapshot.encode(), SNAPSHOT_AAD)
        snap_id = storage_id(data).hex()
        self.store.put(f"snapshots/{snap_id}", data)
        snapshot.id = snap_id
        return snap_id

    def remove_snapshot(self, snapshot_id: str) -> None:
        self.store.delete(f"snapshots/{snapshot_id}")

    # --- run records (FORMAT.md §14; the rules in repo/runs.py) -----------------------------

    def save_run(self, record: RunRecord) -> str:
        """Write a run record, create-only (an append-only store accepts it); returns its
        object name, ``runs/<id>``."""
        return runs.save_run(self.store, self.envelope, record)

    def stored_runs(
        self,
        on_error: Callable[[str, IntegrityError], None] | None = None,
        *,
        job: str | None = None,
    ) -> list[StoredRun]:
        """Every readable run record (of ``job`` if given) with its object name, oldest
        first, read in parallel; damaged ones go to ``on_error`` or are skipped with a
        warning (`runs.read_runs`)."""
        return runs.read_runs(
            self.store,
            self.envelope,
            workers=self.access.metadata_readers,
            notice=self.notice,
            on_error=on_error,
            job=job,
        )

    def list_runs(
        self,
        on_error: Callable[[str, IntegrityError], None] | None = None,
        *,
        job: str | None = None,
    ) -> list[RunRecord]:
        """`stored_runs` without the names: the records, oldest first."""
        return [stored.record for stored in self.stored_runs(on_error, job=job)]

    def latest_runs(self, job: str, count: int = 1) -> list[RunRecord]:
        """The ``count`` newest readable records of ``job``, newest first."""
        return self.list_runs(job=job)[::-1][: max(0, count)]

    def expire_runs(
        self, keep: RunKeep | None = None, *, dry_run: bool = False, command: str = "forget"
    ) -> RunExpiry:
        """Delete the run records ``keep`` (default `RunKeep()`) does not keep, measured
        against this repository's clock (`runs.expire_runs`: refused on an append-only store,
        records under Object Lock retention stay)."""
        return runs.expire_runs(
            self.store,
            self.stored_runs(),
            keep or RunKeep(),
            self.clock.now(),
            notice=self.notice,
            dry_run=dry_run,
            command=command,
        )

    # --- keys -------------------------------------------------------------------------------

    def list_keys(self) -> list[KeyListing]:
        out = []
        for info in sorted(self.store.list("keys/"), key=lambda i: i.name):
            kid = info.name.removeprefix("keys/")
            meta = read_key_info(self.store.get(info.name))
            out.append(KeyListing(kid, kid == self.key_id, meta.created, meta.host, meta.username))
        return out

    def add_key(self, password: bytes, kdf: KdfParams | None = None) -> str:
        """Add a key file that opens this repository with ``password``."""
        return self._write_key(self.store, self.master, password, kdf or KdfParams(), self.clock)

    def remove_key(self, key_ref: str) -> str:
        """Remove a key by id prefix; refuses the key in use and the last key."""
        keys = self.list_keys()
        matches = [k for k in keys if k.id.startswith(key_ref)] if key_ref else []
        if len(matches) != 1:
            raise KeyManagementError(
                f"{key_ref!r} matches {len(matches)} keys", hint="give a unique key id prefix"
            )
        key = matches[0]
        if key.current:
            raise KeyManagementError(
                "refusing to remove the key this session opened the repository with",
                hint="open with another password to remove it, or use `key passwd`",
            )
        self.store.delete(f"keys/{key.id}")
        return key.id

    def change_password(self, password: bytes, kdf: KdfParams | None = None) -> str:
        """Replace the current key by one for ``password``; returns the new key id. On an
        append-only store (which cannot delete the old key) it raises `StorePermissionDenied`
        before writing anything."""
        if self.store.capabilities().append_only:
            raise StorePermissionDenied(
                f"changing the password deletes the old key file, which {self.store.describe()} "
                "refuses (append-only)",
                hint="add a password with `key add` instead, or change it with full access",
            )
        new_id = self.add_key(password, kdf)
        self.store.delete(f"keys/{self.key_id}")
        self.key_id = new_id
        return new_id

    def iter_tree(self, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Depth-first ``(path, node)`` for every node below a tree; paths use ``/``
        (`walk_trees`: iterative, any depth)."""
        return walk_trees(self.load_tree, tree_id, prefix)
