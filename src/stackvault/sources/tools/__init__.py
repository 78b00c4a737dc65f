"""Running programs for the sources (sources layer): `runner` runs a tool on this host with its
streams pumped (the container side is `stackvault.sources.docker.exec`), `command` turns a
command's output into a byte stream (``--stdin-from-command``), `childenv` is the environment
every child gets (this process's, without its secrets).
"""
