"""Source URLs (sources layer): parsing and validation (redaction: `stackvault.redact`).

``scheme://[user@]host[:port]/path?key=value&...``. A password in a URL is refused: it would
end up in shell history, process lists and logs. Credentials come from the environment, from
files, or from a container's own environment; each source documents which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from stackvault.errors import UsageError
from stackvault.redact import redact
from stackvault.urloptions import number_at_least, query_pairs, yes_no

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SourceURL:
    """A parsed source URL. ``host`` keeps its case; ``path`` is unquoted and keeps its
    leading ``/`` (or is empty)."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    path: str
    query: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @classmethod
    def parse(cls, url: str, *, allowed: frozenset[str] | None = None) -> SourceURL:
        """Parse ``url``; `UsageError` for anything malformed, a password, or (when ``allowed``
        is given) a query key not in it."""
        if "://" not in url:
            raise UsageError(
                f"source {url!r} is not a URL; write it as scheme://..., "
                "e.g. postgres://user@127.0.0.1:5432/app or docker-volume://NAME"
            )
        parts = urlsplit(url)
        if parts.password is not None:
            raise UsageError(
                f"the source URL {redact(url)} contains a password; pass credentials through "
                "the environment or a file instead (see README, Sources)"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"the source URL {redact(url)} has an invalid port") from exc
        query: dict[str, str] = {}
        for key, value in query_pairs(parts.query):
            if key in query:
                raise UsageError(f"the source URL {redact(url)} gives {key!r} twice")
            query[key] = value
        parsed = cls(
            scheme=parts.scheme.lower(),
            user=unquote(parts.username) if parts.username else None,
            host=_host_of(parts.netloc),
            port=port,
            path=unquote(parts.path),
            query=query,
            raw=url,
        )
        if allowed is not None:
            parsed.require_options(allowed)
        return parsed

    def require_options(self, allowed: frozenset[str] | set[str]) -> None:
        """`UsageError` naming any query option outside ``allowed`` (``name`` is always
        allowed)."""
        unknown = sorted(set(self.query) - set(allowed) - {"name"})
        if unknown:
            known = ", ".join(sorted(set(allowed) | {"name"}))
            raise UsageError(
                f"the source URL {self.redacted} has unknown option(s) {', '.join(unknown)}; "
                f"known: {known}"
            )

    @property
    def redacted(self) -> str:
        return redact(self.raw)

    def flag(self, key: str, default: bool = False) -> bool:
        """A yes/no query option (`stackvault.urloptions.yes_no`: ``1/true/yes/on`` or
        ``0/false/no/off``; ``?key`` alone is yes)."""
        value = self.query.get(key)
        if value is None:
            return default
        try:
            return yes_no(value)
        except ValueError:
            raise UsageError(
                f"option {key}={value!r} of {self.redacted} is not a yes/no value"
            ) from None

    def number(self, key: str, default: float, *, minimum: float = 0) -> float:
        """A numeric query option not below ``minimum`` (`stackvault.urloptions`)."""
        value = self.query.get(key)
        if value is None:
            return default
        try:
            return number_at_least(value, minimum)
        except ValueError as exc:
            raise UsageError(f"option {key}={value!r} of {self.redacted} {exc}") from None

    def artifact_name(self, default: str) -> str:
        """``?name=`` if given, else ``default`` made safe; always a valid artifact name."""
        name = self.query.get("name")
        if name is not None:
            if not _NAME.match(name):
                raise UsageError(
                    f"artifact name {name!r} is not valid: use letters, digits, '.', '_' and '-'"
                )
            return name
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", default).strip("-.") or "artifact"
        return safe[:128]


def _host_of(netloc: str) -> str:
    """The host part as written (``urlsplit().hostname`` lower-cases it, but container and
    volume names are case-sensitive)."""
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):  # an IPv6 literal
        return host[1 : host.find("]")] if "]" in host else host
    return unquote(host.rsplit(":", 1)[0] if ":" in host else host)
