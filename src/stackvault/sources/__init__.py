"""Sources layer: capture and restore adapters for applications; never imports the repository.

`contract` (what every source promises), `registry` (URL scheme → class), `url` (the parsed
URL and its options); one folder per kind: `postgres/`, `mysql/`, `redis/`, `s3bucket/`,
`docker/` (containers and volumes), `sqlite.py`; `dbdump/` (what the two SQL databases share);
`tools/` (running programs on this host). Files of this host are the `stackvault.fs` layer.
"""
