"""Generate a small, deterministic sample tree for the demo (stdlib only)."""

from __future__ import annotations

import json
import os
import random
import sys


def make(root: str, seed: int = 7) -> None:
    rnd = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    for d in range(5):
        sub = os.path.join(root, "storage", f"tenant-{d}")
        os.makedirs(sub, exist_ok=True)
        for i in range(40):
            doc = {
                "id": i,
                "tenant": d,
                "text": " ".join(rnd.choice("abcdefgh") * 5 for _ in range(40)),
            }
            with open(os.path.join(sub, f"doc-{i:03}.json"), "w") as f:
                json.dump(doc, f)
    os.makedirs(os.path.join(root, "uploads"), exist_ok=True)
    for i in range(3):
        with open(os.path.join(root, "uploads", f"blob-{i}.bin"), "wb") as f:
            f.write(rnd.randbytes(3 * 1024 * 1024))
    with open(os.path.join(root, "dump.sql"), "w") as f:
        for i in range(60000):
            f.write(f"INSERT INTO messages VALUES ({i}, 'user-{i % 97}', 'hello number {i}');\n")
    os.makedirs(os.path.join(root, "empty-dir"), exist_ok=True)
    secret = os.path.join(root, ".env")
    with open(secret, "w") as f:
        f.write("SECRET_KEY=demo-not-a-real-secret\n")
    os.chmod(secret, 0o600)
    link = os.path.join(root, "latest-dump.sql")
    if not os.path.lexists(link):
        os.symlink("dump.sql", link)
    hard = os.path.join(root, "uploads", "blob-0-hardlink.bin")
    if not os.path.exists(hard):
        os.link(os.path.join(root, "uploads", "blob-0.bin"), hard)


if __name__ == "__main__":
    make(sys.argv[1])
