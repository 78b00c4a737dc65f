"""Repository layer: packs, index, trees, snapshots, locks, check and prune (FORMAT.md)."""
