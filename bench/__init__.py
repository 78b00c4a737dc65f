"""Side-by-side benchmark of stackvault against restic and borg.

``python -m bench.dataset`` builds (and mutates) a deterministic application-stack dataset;
``python -m bench.compare`` backs it up, restores and checks it with each tool and prints a table.
"""
