"""Records layer: the typed records that cross layers and are stored in snapshots.

Each record has one definition here, one function that reads it from its stored JSON (and
validates it, once, at that edge) and one that writes it. The repository stores them, the
sources fill them, the engine and the stack layer pass them on; none of them passes the raw
dictionaries around.
"""
