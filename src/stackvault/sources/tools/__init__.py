"""Running programs for the sources (sources layer): `runner` is the contract every place that
runs tools meets (`Runner`, its streams and sessions), `host` its implementation on this host
(the container side is `stackvault.sources.docker.exec`), `command` turns a command's output
into a byte stream (``--stdin-from-command``), `childenv` is the environment every child gets
(this process's, without its secrets).
"""
