"""A Redis server as a source (sources layer): ``redis://[USER@]HOST:PORT[/DB]`` (a server this
host reaches over TCP) and ``redis+docker://CONTAINER[:PORT]`` (a server inside a container).

Options: ``name`` (the artifact's name; default ``redis``, or ``CONTAINER-redis``) and
``timeout`` (seconds, default 300: the longest the server may stay silent while it sends the
RDB, and the longest wait for a BGSAVE, a stop or a restart). A ``/DB`` suffix is accepted,
since Redis URLs commonly carry one, but changes nothing: an RDB file holds every database of
the server, and capture and restore always cover the whole server.

**Credentials.** On this host the password comes from ``REDISCLI_AUTH`` or ``REDIS_PASSWORD``
and is sent with ``AUTH`` (``AUTH USER PASSWORD`` when the URL names an ACL user). In a
container, ``redis-cli`` runs with ``REDISCLI_AUTH`` taken from the container's own
``REDIS_PASSWORD`` when it has one (the value never leaves the container), else with none.

**Artifact.** One file, ``dump.rdb``: the server's RDB snapshot, byte for byte.

The parts, each with the rest of the story: `rdb` (completeness checks; `crc64`, the checksum),
`resp` (RESP over a socket), `replication` (capture and restore on a host: ``SYNC``, and a
master that serves one RDB), `rediscli` and `container` (capture and restore in a container),
`bgsave` (waiting for a save), `savefile` (what a capture needs of the save file, checked
before a backup), `source` (`RedisSource`, and the facts it records).
"""

from stackvault.sources.redis.crc64 import Crc64
from stackvault.sources.redis.rdb import RDB, RdbCheck, max_rdb_version
from stackvault.sources.redis.resp import RedisReplyError, parse_info, parse_keyspace, reply_error
from stackvault.sources.redis.source import RedisSource

__all__ = [
    "RDB",
    "Crc64",
    "RdbCheck",
    "RedisReplyError",
    "RedisSource",
    "max_rdb_version",
    "parse_info",
    "parse_keyspace",
    "reply_error",
]
