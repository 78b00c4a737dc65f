"""A deterministic benchmark dataset shaped like a self-hosted application stack.

Sizes are fractions of the nominal size ``scale * 1 GB`` (1 GB = 10**9 bytes):

======================================  ======  ===================================================
path                                    share   content
======================================  ======  ===================================================
``db/app.sql``                          45 %    SQL dump, one ``INSERT`` per row, three tables
``logs/app.log.jsonl``                  20 %    JSON-lines application log
``uploads/YYYY/MM/<hex>.<ext>``         30 %    incompressible "uploaded files", 1-8 MB each
``storage/tenant-NN/<kind>/<xx>/*.json`` 4 %    ~20,000 (scaled) small JSON documents, ~2 kB each
``volumes/disk.img``                    extra   64 MiB (scaled) of long zero runs between data
======================================  ======  ===================================================

so scale 1 gives about 1.06 GB. Every byte comes from ``random.Random`` seeded with the seed
(plus a per-component label), so the same seed and scale always give a byte-identical tree;
file modification times are fixed too. ``generate`` writes ``<root>.manifest.json`` next to the
tree (per-file size and SHA-256 plus one digest over all of them) so a tree can be verified.

:func:`mutate` is the "about 5 % changed" step between two backups: it appends 5 % of the dump's
size to the dump, rewrites 2 % of the small JSON files and adds new uploads worth 1 % of the tree.

Command line::

    python -m bench.dataset generate ROOT [--scale 0.1] [--seed 42]
    python -m bench.dataset verify ROOT
    python -m bench.dataset mutate ROOT [--seed 42]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

GB = 10**9
MB = 10**6
KIB = 1024
MIB = 1024 * 1024

SQL_SHARE = 0.45
LOG_SHARE = 0.20
UPLOAD_SHARE = 0.30
JSON_SHARE = 0.04
JSON_FILES_AT_SCALE_1 = 20_000
DISK_IMAGE_AT_SCALE_1 = 64 * MIB
UPLOAD_MIN = 1 * MB
UPLOAD_MAX = 8 * MB

MUTATE_DUMP_APPEND = 0.05
MUTATE_JSON_REWRITE = 0.02
MUTATE_NEW_UPLOADS = 0.01

BATCH_ROWS = 20_000
BASE_MTIME = 1_700_000_000  # 2023-11-14: fixed file times keep metadata deterministic too
TS_START = 1_672_531_200  # 2023-01-01
TS_SPAN = 2 * 365 * 86_400

SQL_PATH = "db/app.sql"
LOG_PATH = "logs/app.log.jsonl"
DISK_PATH = "volumes/disk.img"
UPLOAD_DIR = "uploads"
JSON_DIR = "storage"
UPLOAD_EXTENSIONS = (".jpg", ".png", ".pdf", ".zip", ".mp4", ".docx")
JSON_KINDS = ("documents", "conversations", "datasets", "settings")
TENANTS = 20
SHARDS = 16


# --------------------------------------------------------------------------------------------
# vocabularies: everything random is drawn once here, lines are then assembled from pools
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocab:
    """Pre-generated pools that rows, log lines and documents are assembled from."""

    words: list[str]
    sentences: list[str]
    names: list[str]
    emails: list[str]
    timestamps: list[str]
    iso_timestamps: list[str]
    amounts: list[str]
    routes: list[str]


def _word(rng: random.Random, syllables: list[str]) -> str:
    return "".join(rng.choices(syllables, k=rng.randint(1, 4)))


def _sentence(rng: random.Random, words: list[str]) -> str:
    return " ".join(rng.choices(words, k=rng.randint(3, 24))).capitalize() + "."


def _timestamps(rng: random.Random, count: int, fmt: str) -> list[str]:
    stamps = sorted(rng.randrange(TS_START, TS_START + TS_SPAN) for _ in range(count))
    return [datetime.fromtimestamp(t, UTC).strftime(fmt) for t in stamps]


def build_vocab(seed: int) -> Vocab:
    """The vocabulary of one seed; generation and mutation share it."""
    rng = random.Random(f"{seed}:vocab")
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["an", "el", "or", "is"]
    words = sorted({_word(rng, syllables) for _ in range(4000)})
    first = [w.capitalize() for w in rng.sample(words, 400)]
    last = [w.capitalize() for w in rng.sample(words, 800)]
    domains = [f"{w}.{tld}" for w in rng.sample(words, 60) for tld in ("com", "org", "io")]
    pairs = [(rng.choice(first), rng.choice(last)) for _ in range(20_000)]
    methods = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
    return Vocab(
        words=words,
        sentences=[_sentence(rng, words) for _ in range(20_000)],
        names=[f"{f} {la}" for f, la in pairs],
        emails=[
            f"{f.lower()}.{la.lower()}{rng.randint(1, 999)}@{rng.choice(domains)}"
            for f, la in pairs
        ],
        timestamps=_timestamps(rng, 65_536, "%Y-%m-%d %H:%M:%S"),
        iso_timestamps=_timestamps(rng, 65_536, "%Y-%m-%dT%H:%M:%S.000Z"),
        amounts=[f"{rng.randint(100, 999_999) / 100:.2f}" for _ in range(5000)],
        routes=[
            f"{rng.choice(methods)} /api/v1/{rng.choice(words)}/{rng.choice(words)}"
            for _ in range(2000)
        ],
    )


# --------------------------------------------------------------------------------------------
# SQL dump
# --------------------------------------------------------------------------------------------

SQL_HEADER = """-- stackvault benchmark dump
-- Server version 8.0.36
SET NAMES utf8mb4;
SET FOREIGN_KEY_CHECKS=0;
"""

SQL_TABLES: dict[str, tuple[str, float]] = {
    "users": (
        "CREATE TABLE `users` (`id` bigint PRIMARY KEY, `name` varchar(120), "
        "`email` varchar(190), `created_at` datetime, `country` char(2), `bio` text);",
        0.15,
    ),
    "orders": (
        "CREATE TABLE `orders` (`id` bigint PRIMARY KEY, `user_id` bigint, "
        "`amount` decimal(10,2), `currency` char(3), `status` varchar(16), "
        "`created_at` datetime);",
        0.35,
    ),
    "messages": (
        "CREATE TABLE `messages` (`id` bigint PRIMARY KEY, `conversation_id` bigint, "
        "`author_id` bigint, `body` text, `created_at` datetime);",
        0.50,
    ),
}
COUNTRIES = ("US", "DE", "FR", "GB", "IN", "BR", "JP", "CN", "NL", "SE", "PL", "ES", "IT", "CA")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "INR")
ORDER_STATUS = ("paid", "paid", "paid", "shipped", "refunded", "pending", "cancelled")

RowMaker = Callable[[random.Random, Vocab, int, int], list[str]]


def _user_rows(rng: random.Random, v: Vocab, start: int, n: int) -> list[str]:
    cols = zip(
        range(start, start + n),
        rng.choices(v.names, k=n),
        rng.choices(v.emails, k=n),
        rng.choices(v.timestamps, k=n),
        rng.choices(COUNTRIES, k=n),
        rng.choices(v.sentences, k=n),
        strict=True,
    )
    return [
        f"INSERT INTO `users` VALUES ({i},'{nm}','{em}','{ts}','{c}','{bio}');\n"
        for i, nm, em, ts, c, bio in cols
    ]


def _order_rows(rng: random.Random, v: Vocab, start: int, n: int) -> list[str]:
    cols = zip(
        range(start, start + n),
        rng.choices(range(1, 2_000_000), k=n),
        rng.choices(v.amounts, k=n),
        rng.choices(CURRENCIES, k=n),
        rng.choices(ORDER_STATUS, k=n),
        rng.choices(v.timestamps, k=n),
        strict=True,
    )
    return [
        f"INSERT INTO `orders` VALUES ({i},{u},{a},'{c}','{s}','{ts}');\n"
        for i, u, a, c, s, ts in cols
    ]


def _message_rows(rng: random.Random, v: Vocab, start: int, n: int) -> list[str]:
    cols = zip(
        range(start, start + n),
        rng.choices(range(1, 500_000), k=n),
        rng.choices(range(1, 2_000_000), k=n),
        rng.choices(v.sentences, k=n),
        rng.choices(v.sentences, k=n),
        rng.choices(v.timestamps, k=n),
        strict=True,
    )
    return [
        f"INSERT INTO `messages` VALUES ({i},{c},{a},'{b1} {b2}','{ts}');\n"
        for i, c, a, b1, b2, ts in cols
    ]


ROW_MAKERS: dict[str, RowMaker] = {
    "users": _user_rows,
    "orders": _order_rows,
    "messages": _message_rows,
}


def _trim(data: bytes, room: int) -> bytes:
    """The whole lines of ``data`` that fit in ``room`` bytes (at least one line)."""
    if len(data) <= room:
        return data
    cut = data.rfind(b"\n", 0, room) + 1
    return data[: cut or data.find(b"\n") + 1]


def _write_rows(
    out: BinaryIO, rng: random.Random, v: Vocab, make: RowMaker, first_id: int, budget: int
) -> int:
    """Write batches of rows until ``budget`` bytes are written; return the bytes written."""
    written, next_id = 0, first_id
    while written < budget:
        data = _trim("".join(make(rng, v, next_id, BATCH_ROWS)).encode(), budget - written)
        out.write(data)
        written += len(data)
        next_id += data.count(b"\n")
    return written


def write_sql_dump(path: Path, seed: int, v: Vocab, budget: int) -> None:
    """A dump of three tables, each a share of ``budget`` bytes."""
    rng = random.Random(f"{seed}:sql")
    with path.open("wb") as out:
        out.write(SQL_HEADER.encode())
        for table, (ddl, share) in SQL_TABLES.items():
            out.write(f"\nDROP TABLE IF EXISTS `{table}`;\n{ddl}\n".encode())
            _write_rows(out, rng, v, ROW_MAKERS[table], 1, int(budget * share))
        out.write(b"SET FOREIGN_KEY_CHECKS=1;\n-- Dump completed\n")


# --------------------------------------------------------------------------------------------
# JSON log, uploads, small JSON documents, disk image
# --------------------------------------------------------------------------------------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_LEVEL_WEIGHTS = (10, 80, 8, 2)
LOGGERS = ("api.http", "worker.tasks", "auth", "db.pool", "scheduler", "storage.s3")
HTTP_STATUS = (200, 200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 500)
LOG_LINE_BYTES = 240  # rough average, only used to spread the timestamps over the file


def _log_lines(rng: random.Random, v: Vocab, first: int, n: int, total: int) -> list[str]:
    ids = rng.randbytes(8 * n).hex()
    stamps = v.iso_timestamps
    cols = zip(
        range(first, first + n),
        rng.choices(LOG_LEVELS, LOG_LEVEL_WEIGHTS, k=n),
        rng.choices(LOGGERS, k=n),
        rng.choices(v.routes, k=n),
        rng.choices(HTTP_STATUS, k=n),
        rng.choices(range(1, 2_000_000), k=n),
        rng.choices(range(1, 30_000), k=n),
        strict=True,
    )
    return [
        f'{{"ts":"{stamps[min(j * len(stamps) // total, len(stamps) - 1)]}","level":"{lv}",'
        f'"logger":"{lg}","msg":"{rt} {st}","request_id":"{ids[16 * (j - first) :][:16]}",'
        f'"user_id":{u},"status":{st},"latency_ms":{ms / 10:.1f}}}\n'
        for j, lv, lg, rt, st, u, ms in cols
    ]


def write_log(path: Path, seed: int, v: Vocab, budget: int) -> None:
    """A JSON-lines log of about ``budget`` bytes, timestamps ascending."""
    rng = random.Random(f"{seed}:log")
    total = max(1, budget // LOG_LINE_BYTES)
    written, line = 0, 0
    with path.open("wb") as out:
        while written < budget:
            data = _trim(
                "".join(_log_lines(rng, v, line, BATCH_ROWS, total)).encode(), budget - written
            )
            out.write(data)
            written += len(data)
            line += data.count(b"\n")


def _upload_sizes(rng: random.Random, budget: int) -> Iterator[int]:
    """1-8 MB sizes adding up to ``budget`` (at least one file)."""
    remaining = budget
    while remaining > 0:
        if remaining <= UPLOAD_MAX:
            size = max(remaining, UPLOAD_MIN)
        else:
            size = rng.randint(UPLOAD_MIN, min(UPLOAD_MAX, remaining - UPLOAD_MIN))
        remaining -= size
        yield size


def write_uploads(root: Path, rng: random.Random, budget: int, year: int = 0) -> list[Path]:
    """Incompressible files under ``uploads/YYYY/MM/``; returns their paths."""
    paths = []
    for size in _upload_sizes(rng, budget):
        yr = year or rng.randint(2022, 2024)
        name = rng.randbytes(8).hex() + rng.choice(UPLOAD_EXTENSIONS)
        path = root / UPLOAD_DIR / str(yr) / f"{rng.randint(1, 12):02d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


JSON_AVG_BYTES = 2000
JSON_BASE_BYTES = 520  # a document without body paragraphs (measured)
JSON_PARAGRAPH_BYTES = 95  # one body paragraph (measured)


def json_document(rng: random.Random, v: Vocab, tenant: int, doc_id: int, version: int) -> bytes:
    """One small JSON document, ~2 kB on average."""
    mean = (JSON_AVG_BYTES - JSON_BASE_BYTES) // JSON_PARAGRAPH_BYTES
    i = rng.randrange(len(v.names))
    doc = {
        "id": doc_id,
        "tenant": f"tenant-{tenant:02d}",
        "version": version,
        "title": rng.choice(v.sentences),
        "author": {"name": v.names[i], "email": v.emails[i]},
        "created_at": rng.choice(v.iso_timestamps),
        "tags": rng.sample(v.words, rng.randint(0, 6)),
        "settings": {"public": rng.random() < 0.3, "score": round(rng.random() * 100, 2)},
        "body": rng.choices(v.sentences, k=rng.randint(0, 2 * mean)),
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def json_document_path(root: Path, doc_id: int) -> tuple[Path, int]:
    """Where document ``doc_id`` lives, and its tenant."""
    tenant = doc_id % TENANTS
    kind = JSON_KINDS[(doc_id // TENANTS) % len(JSON_KINDS)]
    shard = f"{(doc_id * 2654435761) % SHARDS:02x}"
    return root / JSON_DIR / f"tenant-{tenant:02d}" / kind / shard / f"{doc_id:07d}.json", tenant


def write_json_documents(root: Path, seed: int, v: Vocab, count: int) -> None:
    """``count`` small JSON documents in nested directories."""
    rng = random.Random(f"{seed}:json")
    for doc_id in range(1, count + 1):
        path, tenant = json_document_path(root, doc_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(json_document(rng, v, tenant, doc_id, 1))


def write_disk_image(path: Path, seed: int, v: Vocab, size: int) -> None:
    """Long zero runs (256 KiB-8 MiB, written as zeros, not holes) between data runs."""
    rng = random.Random(f"{seed}:disk")
    zeros = bytes(MIB)
    written = 0
    with path.open("wb") as out:
        while written < size:
            run = min(rng.randint(64, 2048) * 4 * KIB, size - written)
            for offset in range(0, run, MIB):
                out.write(zeros[: min(MIB, run - offset)])
            written += run
            run = min(rng.randint(4, 256) * 4 * KIB, size - written)
            if rng.random() < 0.5:
                data = rng.randbytes(run)
            else:
                data = " ".join(rng.choices(v.sentences, k=run // 40 + 1)).encode()[:run]
            out.write(data)
            written += len(data)


# --------------------------------------------------------------------------------------------
# the whole tree, its manifest and the mutation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Byte budgets of one scale."""

    scale: float
    nominal: int
    sql: int
    log: int
    uploads: int
    json_files: int
    disk_image: int

    @classmethod
    def for_scale(cls, scale: float) -> Plan:
        nominal = int(GB * scale)
        return cls(
            scale=scale,
            nominal=nominal,
            sql=int(nominal * SQL_SHARE),
            log=int(nominal * LOG_SHARE),
            uploads=int(nominal * UPLOAD_SHARE),
            json_files=max(20, round(JSON_FILES_AT_SCALE_1 * scale)),
            disk_image=int(DISK_IMAGE_AT_SCALE_1 * scale),
        )


Manifest = dict[str, tuple[int, str]]  # relative POSIX path -> (size, sha256 hex)


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` in a stable order."""
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(top, name)


def tree_stats(root: Path) -> tuple[int, int]:
    """(number of files, total apparent bytes) without reading anything."""
    sizes = [p.lstat().st_size for p in iter_files(root)]
    return len(sizes), sum(sizes)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_manifest(root: Path, threads: int = 2) -> Manifest:
    """Size and SHA-256 of every file (hashing releases the GIL, so threads help)."""
    paths = list(iter_files(root))
    with ThreadPoolExecutor(threads) as pool:
        digests = list(pool.map(_sha256, paths))
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, d)
        for p, d in zip(paths, digests, strict=True)
    }


def manifest_digest(manifest: Manifest) -> str:
    """One SHA-256 over all entries: equal digests mean byte-identical trees."""
    h = hashlib.sha256()
    for path in sorted(manifest):
        size, digest = manifest[path]
        h.update(f"{path}\t{size}\t{digest}\n".encode())
    return h.hexdigest()


def manifest_path(root: Path) -> Path:
    """The manifest file written next to a generated tree."""
    return root.with_name(root.name + ".manifest.json")


def write_manifest(root: Path, manifest: Manifest, **info: object) -> str:
    """Write ``<root>.manifest.json``; return the digest."""
    digest = manifest_digest(manifest)
    body = {**info, "digest": digest, "files": {k: list(v) for k, v in manifest.items()}}
    manifest_path(root).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    return digest


def read_manifest(root: Path) -> tuple[dict[str, object], Manifest]:
    """The saved manifest of ``root``: (its other fields, the file entries)."""
    body = json.loads(manifest_path(root).read_text())
    files = {k: (int(v[0]), str(v[1])) for k, v in body.pop("files").items()}
    return body, files


def fix_mtimes(root: Path) -> None:
    """Deterministic modification times for every file and directory."""
    entries = sorted(p for p in root.rglob("*"))
    for i, path in enumerate(entries):
        os.utime(path, (BASE_MTIME + i, BASE_MTIME + i), follow_symlinks=False)
    os.utime(root, (BASE_MTIME, BASE_MTIME))


def generate(root: Path, scale: float = 1.0, seed: int = 42) -> str:
    """Build the tree at ``root`` (must not exist), write its manifest, return the digest."""
    plan = Plan.for_scale(scale)
    vocab = build_vocab(seed)
    for sub in ("db", "logs", "volumes", UPLOAD_DIR, JSON_DIR):
        (root / sub).mkdir(parents=True)
    write_sql_dump(root / SQL_PATH, seed, vocab, plan.sql)
    write_log(root / LOG_PATH, seed, vocab, plan.log)
    write_uploads(root, random.Random(f"{seed}:uploads"), plan.uploads)
    write_json_documents(root, seed, vocab, plan.json_files)
    write_disk_image(root / DISK_PATH, seed, vocab, plan.disk_image)
    fix_mtimes(root)
    return write_manifest(root, build_manifest(root), scale=scale, seed=seed)


@dataclass(frozen=True)
class Mutation:
    """What :func:`mutate` changed."""

    dump_appended: int
    json_rewritten: int
    uploads_added: int
    upload_bytes: int


def mutate(root: Path, seed: int = 42) -> Mutation:
    """The "~5 % changed" step; deterministic for a given tree and seed."""
    rng = random.Random(f"{seed}:mutate")
    vocab = build_vocab(seed)
    _, total = tree_stats(root)
    dump = root / SQL_PATH
    with dump.open("ab") as out:
        appended = _write_rows(
            out,
            rng,
            vocab,
            _message_rows,
            900_000_000,
            int(dump.stat().st_size * MUTATE_DUMP_APPEND),
        )
    docs = sorted((root / JSON_DIR).rglob("*.json"))
    chosen = rng.sample(docs, max(1, round(len(docs) * MUTATE_JSON_REWRITE)))
    for path in chosen:
        doc_id = int(path.stem)
        path.write_bytes(json_document(rng, vocab, doc_id % TENANTS, doc_id, 2))
    new = write_uploads(root, rng, int(total * MUTATE_NEW_UPLOADS), year=2025)
    return Mutation(appended, len(chosen), len(new), sum(p.stat().st_size for p in new))


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _cmd_generate(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    digest = generate(args.root, args.scale, args.seed)
    files, size = tree_stats(args.root)
    took = time.perf_counter() - start
    print(f"{args.root}: {files} files, {size / MB:.1f} MB in {took:.1f} s, digest {digest}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    info, saved = read_manifest(args.root)
    actual = build_manifest(args.root)
    differ = sorted({path for path, _ in set(saved.items()) ^ set(actual.items())})
    ok = not differ and manifest_digest(actual) == info["digest"]
    print(f"{args.root}: {'OK' if ok else 'MISMATCH'}, digest {manifest_digest(actual)}")
    for path in differ[:20]:
        print(f"  differs: {path}")
    return 0 if ok else 1


def _cmd_mutate(args: argparse.Namespace) -> int:
    print(mutate(args.root, args.seed))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.dataset``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.dataset", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="build a tree and its manifest")
    gen.add_argument("root", type=Path)
    gen.add_argument("--scale", type=float, default=1.0, help="1 = about 1 GB (default)")
    gen.add_argument("--seed", type=int, default=42)
    gen.set_defaults(func=_cmd_generate)
    ver = sub.add_parser("verify", help="compare a tree with its saved manifest")
    ver.add_argument("root", type=Path)
    ver.set_defaults(func=_cmd_verify)
    mut = sub.add_parser("mutate", help="apply the ~5%% change in place")
    mut.add_argument("root", type=Path)
    mut.add_argument("--seed", type=int, default=42)
    mut.set_defaults(func=_cmd_mutate)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
