"""Redaction of locations for messages and records (leaf module): one rule for every URL kind.

`redact` is the only place that decides what of a location a user may see: repository
locations (``s3://...``, paths), source URLs (``postgres://...``, ``redis+docker://...``) and
URLs nested in their query values (``?endpoint=http://user:pw@host``). It hides

* the whole userinfo when it holds a password (``user:pw@``, ``AKIA...:secret@``,
  ``:token@``), looks like an access key id, or belongs to ``s3://`` (S3 has no users, only
  credentials); a bare user name (``postgres://backup@host``) stays;
* the value of every query key that looks secret (`is_secret_key`), whatever its case;
* a fragment, which no stackvault location uses.

It never raises: something unparsable is replaced as a whole. The result is for people and
records (snapshots keep a redacted location); it is not meant to be parsed back.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

HIDDEN = "***"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_PARTS = (
    "pass",  # password, passwd, sslpassword, requirepass, passphrase
    "pwd",
    "secret",  # secret, aws_secret_access_key, client_secret
    "token",  # token, session_token, aws_session_token
    "key",  # key, access_key, aws_access_key_id, apikey, sslkey, private_key
    "auth",
    "credential",  # also X-Amz-Credential
    "signature",
    "session",
    "cookie",
    "private",
    "cert",
)
_SECRET_KEYS = frozenset({"sig", "sas", "pw"})
"""Short keys the parts above miss: Azure SAS signatures (``sig``), ``pw``."""
_ACCESS_KEY_ID = re.compile(r"^(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|A3T)[A-Z0-9]{8,}$")
_CREDENTIAL_SCHEMES = ("s3",)
"""Schemes whose userinfo can only be credentials (there are no users to name)."""


def is_secret_key(key: str) -> bool:
    """True if a query key (any case, ``-`` or ``_``) may carry a secret."""
    lowered = unquote(key).strip().lower()
    return lowered in _SECRET_KEYS or any(part in lowered for part in _SECRET_PARTS)


def redact(location: str) -> str:
    """``location`` with every credential it may hold replaced by ``***`` (see module doc).

    A plain path is returned unchanged, except for a ``?query`` on it, which is redacted like
    a URL's (a mistyped URL can still hold a password).
    """
    if not _SCHEME.match(location):
        path, sep, query = location.partition("?")
        return f"{path}?{_redact_query(query)}" if sep and "=" in query else location
    try:
        parts = urlsplit(location)
    except ValueError:
        return "<unparsable URL>"
    scheme = parts.scheme.lower()
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{_redact_userinfo(scheme, userinfo)}@{host}"
    out = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query:
        out += f"?{_redact_query(parts.query)}"
    if parts.fragment:
        out += f"#{HIDDEN}"
    return out


def _redact_userinfo(scheme: str, userinfo: str) -> str:
    """A bare user name stays (``postgres://backup@host``); with a password beside it the
    name may be half of a credential pair (an access key id, a token's user), so both go."""
    user, has_password, _password = userinfo.partition(":")
    base = scheme.split("+", 1)[0]
    if has_password or not user or base in _CREDENTIAL_SCHEMES:
        return HIDDEN
    return HIDDEN if _ACCESS_KEY_ID.match(unquote(user)) else user


def _redact_query(query: str) -> str:
    """The query text with secret values hidden; the rest is kept as written."""
    shown = []
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if not sep:
            shown.append(HIDDEN if is_secret_key(key) else pair)
        elif is_secret_key(key):
            shown.append(f"{key}={HIDDEN}")
        else:
            plain = unquote(value)
            shown.append(f"{key}={redact(plain)}" if _SCHEME.match(plain) else pair)
    return "&".join(shown)
