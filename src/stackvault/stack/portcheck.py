"""The host ports a restored project would publish, and whether this host has them free (stack
layer): a check of ``stack restore`` (and its ``--dry-run``) before anything is created.

`published_ports` reads them from the project as ``docker compose config`` resolves it (short
``[IP:]HOST:CONTAINER[/PROTO]`` strings, IPv6 addresses, ranges, and the long syntax), for the
services ``docker compose up`` starts: not those of a profile that is not enabled
(``COMPOSE_PROFILES``), and not those whose network namespace is the host's, none or another
container's (the engine publishes nothing for them). `port_problems` tries to bind each one as
the engine would (the address the file gives, else every address: ``0.0.0.0``; TCP or UDP;
``SO_REUSEADDR``, so a port in TIME_WAIT is free): an address in use, or one this host does
not have, is a problem; so is a port two services publish.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stackvault.stack.restorereport import Problem


@dataclass(frozen=True)
class Published:
    """A host port a service publishes."""

    service: str
    address: str
    """The host address it is bound to (``0.0.0.0``: every address)."""
    port: int
    protocol: str

    def __str__(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{address}:{self.port}/{self.protocol}"


def published_ports(
    services: Mapping[str, Any], profiles: frozenset[str] = frozenset()
) -> list[Published]:
    """The host ports the services of a resolved compose document publish (see the module
    docstring); ``profiles``: the enabled ones."""
    out: list[Published] = []
    for name, spec in services.items():
        spec = spec if isinstance(spec, dict) else {}
        mode = str(spec.get("network_mode") or "")
        if mode in ("host", "none") or mode.startswith(("container:", "service:")):
            continue
        wanted = spec.get("profiles") or []
        if wanted and not profiles.intersection(str(p) for p in wanted):
            continue
        for entry in spec.get("ports") or []:
            for address, port, protocol in _entry(entry):
                out.append(Published(str(name), address, port, protocol))
    return out


def _entry(entry: object) -> list[tuple[str, int, str]]:
    """(address, host port, protocol) of one ``ports`` entry; nothing when it publishes no
    fixed host port (``"80"``: the engine picks one)."""
    if isinstance(entry, dict):
        address = str(entry.get("host_ip") or "")
        published = str(entry.get("published") or "")
        protocol = str(entry.get("protocol") or "tcp")
    else:
        text, _, protocol = str(entry).partition("/")
        parts = text.rsplit(":", 2)
        if len(parts) < 2:
            return []
        address = parts[0].strip("[]") if len(parts) == 3 else ""
        published = parts[-2]
    first, _, last = published.partition("-")
    try:
        low = int(first)
        high = int(last) if last else low
    except ValueError:
        return []
    if low <= 0:
        return []
    return [(address or "0.0.0.0", p, protocol or "tcp") for p in range(low, high + 1)]


def port_problems(
    published: list[Published], bind: Callable[[Published], str | None] | None = None
) -> list[Problem]:
    """What keeps the engine from publishing ``published`` on this host: each port taken (or
    on an address this host lacks), each port published twice. ``bind``: the test (default:
    `bind_test`), None when free, else why not."""
    test = bind or bind_test
    out: list[Problem] = []
    seen: list[Published] = []
    for p in published:
        other = next((o for o in seen if _same_port(o, p)), None)
        seen.append(p)
        if other is not None:
            out.append(
                Problem(
                    f"port {p} is published by service {other.service} and by service {p.service}",
                    "publish it once, or on different addresses",
                )
            )
            continue
        why = test(p)
        if why is not None:
            out.append(
                Problem(
                    f"port {p} that service {p.service} publishes cannot be bound on this "
                    f"host: {why}",
                    f"free it (see what listens: ss -lntup 'sport = :{p.port}') or restore on "
                    "another host",
                )
            )
    return out


def _same_port(a: Published, b: Published) -> bool:
    wildcard = ("0.0.0.0", "::")
    return (a.port, a.protocol) == (b.port, b.protocol) and (
        a.address == b.address or a.address in wildcard or b.address in wildcard
    )


def bind_test(p: Published) -> str | None:
    """None when ``p`` could be bound now, else why not (``in use``, ``no such address``)."""
    family = socket.AF_INET6 if ":" in p.address else socket.AF_INET
    kind = socket.SOCK_DGRAM if p.protocol == "udp" else socket.SOCK_STREAM
    try:
        sock = socket.socket(family, kind)
    except OSError as exc:
        return f"no {p.protocol} socket ({exc.strerror})"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((p.address, p.port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "it is in use"
        if exc.errno == errno.EADDRNOTAVAIL:
            return f"this host has no address {p.address}"
        if exc.errno == errno.EACCES:
            return None  # a privileged port: the engine binds it as root
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return None
