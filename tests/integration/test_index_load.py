"""Loading the index of a repository whose prune left superseded index files behind (under
Object Lock they cannot be deleted): whichever order the files are read in, what a file in
force lists is looked up, and what only superseded files list is gone."""

from __future__ import annotations

import os

import pytest

from stackvault.crypto.kdf import KdfParams
from stackvault.repo.blob import BlobType
from stackvault.repo.index import encode_index
from stackvault.repo.pack import PackedBlob, storage_id
from stackvault.repo.repository import Repository
from stackvault.store.memory import MemoryStore

PASSWORD = b"index load"
FAST = KdfParams(memory_kib=8 * 1024, iterations=1)


def blob(blob_id: bytes, offset: int) -> PackedBlob:
    return PackedBlob(BlobType.DATA, blob_id, offset, 100, 200)


@pytest.mark.parametrize("superseding_read", ["first", "last"])
def test_superseded_index_files_leave_nothing_whatever_the_order(superseding_read: str) -> None:
    store = MemoryStore()
    repo = Repository.init(store, PASSWORD, kdf=FAST)
    kept, gone, new = os.urandom(32), os.urandom(32), os.urandom(32)
    only_gone, shared, in_kept = os.urandom(32), os.urandom(32), os.urandom(32)
    # Before prune: one file lists the kept pack and the pack prune deleted.
    old = encode_index(
        repo.envelope, [(kept, [blob(in_kept, 0)]), (gone, [blob(only_gone, 0), blob(shared, 100)])]
    )
    old_name = storage_id(old).hex()
    store.put(f"index/{old_name}", old)
    # Prune's file in force: the kept pack, and the new pack it copied `shared` into; a
    # filler pack makes its name sort before or after the old file's.
    while True:
        filler = os.urandom(32)
        packs = [(kept, [blob(in_kept, 0)]), (new, [blob(shared, 0)]), (filler, [])]
        data = encode_index(repo.envelope, packs, supersedes=[bytes.fromhex(old_name)])
        name = storage_id(data).hex()
        if (name < old_name) == (superseding_read == "first"):
            break
    store.put(f"index/{name}", data)

    again = Repository.open(store, PASSWORD)
    again.load_index()
    assert again.superseded_index == [f"index/{old_name}"]
    assert again.index.pack_ids() == {kept, new, filler}
    found = again.index.get(shared)
    assert found is not None and (found.pack_id, found.offset) == (new, 0)
    got = again.index.get(in_kept)
    assert got is not None and got.pack_id == kept
    assert only_gone not in again.index
    assert len(again.index) == 2
