"""What the in-memory blob index costs for a repository of many blobs.

``python -m bench.indexload 10000000`` writes index files (50,000 blobs each, 1,000 per pack,
random ids: what a long history of small files leaves) in memory, then loads them as
`Repository.open` does (decode each file, add its packs) and prints the CPU time and how much
the process's peak RSS grew, per blob, and the cost of a lookup. Only the index is measured,
not the store or the snapshots, so the figure is comparable between versions of `repo/index.py`.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time

from stackvault.crypto.masterkey import MasterKey
from stackvault.repo.blob import BlobType
from stackvault.repo.index import Index, decode_index, encode_index
from stackvault.repo.pack import PackedBlob

PER_FILE = 50_000
PER_PACK = 1_000


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.indexload", description=__doc__)
    parser.add_argument("blobs", type=int, nargs="?", default=1_000_000)
    args = parser.parse_args(argv)
    envelope = MasterKey.generate().envelope()
    rng = random.Random(5)
    files: list[bytes] = []
    probes: list[bytes] = []
    for _ in range(max(1, args.blobs // PER_FILE)):
        packs = []
        for _ in range(PER_FILE // PER_PACK):
            blobs = [
                PackedBlob(BlobType.DATA, rng.randbytes(32), i * 3000, 3000, 6000)
                for i in range(PER_PACK)
            ]
            probes.append(blobs[rng.randrange(PER_PACK)].blob_id)
            packs.append((rng.randbytes(32), blobs))
        files.append(encode_index(envelope, packs))
    before = _peak_rss_bytes()
    started = time.process_time()
    index = Index()
    for data in files:
        for pack_id, blobs in decode_index(envelope, data):
            index.add_pack(pack_id, blobs)
    load_s = time.process_time() - started
    grown = _peak_rss_bytes() - before
    started = time.process_time()
    rounds = 20
    for _ in range(rounds):
        for blob_id in probes:
            index.get(blob_id)
    lookup_ns = (time.process_time() - started) / (rounds * len(probes)) * 1e9
    count = len(index)
    print(
        f"{count:,} blobs: loaded in {load_s:.1f} CPU-s; peak RSS grew {grown / 2**20:,.0f} MiB "
        f"({grown / count:.0f} bytes a blob); get() {lookup_ns:.0f} ns"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
