"""Filesystem layer: the files of this host, read for a backup and written by a restore.

`walk` lists directories and opens files (never following symlinks), `exclude` matches the
exclude patterns, `entry` holds one entry's metadata as read from the filesystem; `target`
writes a restored tree below one directory and never outside it, with `safety` (name checks and
symlink-proof directory descriptors), `writer` (one restored file) and `writemode` (around or
through the page cache). Imports nothing of the repository or the sources.
"""
