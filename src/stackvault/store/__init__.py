"""Storage layer: untrusted blob storage (local directory, memory, ...) behind one contract."""
