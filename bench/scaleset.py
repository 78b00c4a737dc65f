"""Many small files for the scale benchmark: ``count`` JSON documents of ~4 kB.

The tree looks like a busy application's storage directory (a Dify ``storage/`` or a plugin
``cwd/``): ten top folders, a hundred sub-folders each, at most a thousand files per folder.
Content and file times are deterministic for a seed and count; the manifest written beside the
tree (``<root>.manifest.json``) records the count, the total size and the SHA-256 of a sample,
so a kept tree is reused only when it is the one asked for.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import dataset

FILES_PER_DIR = 1000
SAMPLE = 64
MTIME = 1_700_000_000  # every file gets this time, so copies and reruns look unchanged


@dataclass(frozen=True)
class ScaleManifest:
    """What a generated tree holds: enough to reuse it and to check a restore of it."""

    count: int
    seed: int
    bytes: int
    sample: dict[str, str]  # relative path -> SHA-256


def relative_path(index: int) -> str:
    """Where file ``index`` (0-based) lives below the root."""
    return f"{index // 100_000:02d}/{(index // FILES_PER_DIR) % 100:02d}/{index:07d}.json"


def document(rng: random.Random, vocab: dataset.Vocab, index: int) -> bytes:
    """One document of ~4 kB: two of the standard benchmark's records under one key."""
    first = dataset.json_document(rng, vocab, index % 20, index, 1)
    second = dataset.json_document(rng, vocab, index % 20, index, 2)
    return b'{"current": ' + first + b', "previous": ' + second + b"}\n"


def manifest_path(root: Path) -> Path:
    return root.with_name(root.name + ".manifest.json")


def read_manifest(root: Path) -> ScaleManifest | None:
    """The manifest of a complete tree at ``root``, or None."""
    try:
        body = json.loads(manifest_path(root).read_text())
        return ScaleManifest(**body)
    except (OSError, ValueError, TypeError):
        return None


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sample_names(count: int, seed: int) -> list[str]:
    picks = random.Random(f"{seed}:sample").sample(range(count), min(SAMPLE, count))
    return [relative_path(i) for i in sorted(picks)]


def generate(root: Path, count: int, seed: int = 42) -> ScaleManifest:
    """Write the tree (or reuse a complete one of the same count and seed)."""
    found = read_manifest(root)
    if found is not None and found.count == count and found.seed == seed and root.is_dir():
        return found
    manifest_path(root).unlink(missing_ok=True)
    vocab = dataset.build_vocab(seed)
    rng = random.Random(f"{seed}:scale")
    total = 0
    made: set[str] = set()
    for index in range(count):
        rel = relative_path(index)
        folder = rel.rsplit("/", 1)[0]
        if folder not in made:
            (root / folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        body = document(rng, vocab, index)
        path = root / rel
        path.write_bytes(body)
        os.utime(path, (MTIME, MTIME))
        total += len(body)
    sample = {name: _sha256(root / name) for name in sample_names(count, seed)}
    manifest = ScaleManifest(count=count, seed=seed, bytes=total, sample=sample)
    manifest_path(root).write_text(json.dumps(asdict(manifest), indent=1))
    return manifest


def verify(restored: Path, manifest: ScaleManifest) -> str:
    """'' if ``restored`` holds the tree's file count, size and sampled contents."""
    if not restored.is_dir():
        return f"nothing restored at {restored}"
    count = size = 0
    for top, _dirs, files in os.walk(restored):
        for name in files:
            count += 1
            size += os.lstat(os.path.join(top, name)).st_size
    if (count, size) != (manifest.count, manifest.bytes):
        return f"{count} files of {size} bytes, expected {manifest.count} of {manifest.bytes}"
    for name, digest in manifest.sample.items():
        if _sha256(restored / name) != digest:
            return f"content differs: {name}"
    return ""


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.scaleset ROOT --files N``: write a tree (for trying things by hand)."""
    parser = argparse.ArgumentParser(prog="python -m bench.scaleset", description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    manifest = generate(args.root, args.files, args.seed)
    print(f"{manifest.count} files, {manifest.bytes / 1e6:.1f} MB at {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
