"""S3 object keys as artifact paths, and back (sources layer)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from urllib.parse import unquote

_ESCAPE = re.compile(r"[%\\\x00-\x1f\x7f-\x9f]")
_MAX_NAME = 200


def _name(part: str) -> str:
    """One key part as a file name: never empty, ``.``/``..`` nor longer than 200 bytes.

    Markers are ``%`` and a character that is not a hex digit, so none reads as an escape:
    ``%_`` is an empty part, ``%~HASH`` ends a shortened one, ``%=`` a leaf (see below)."""
    if part == "":
        return "%_"
    if part in (".", ".."):
        return "%2E" * len(part)
    name = _ESCAPE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), part)
    if len(name.encode()) > _MAX_NAME:
        head = name.encode()[:120].decode(errors="ignore")
        head = re.sub(r"%[0-9A-F]?$", "", head)  # never cut inside an escape
        name = f"{head}%~{hashlib.sha256(part.encode()).hexdigest()[:32]}"
    return name


def artifact_paths(keys: Iterable[str]) -> dict[str, str]:
    """The artifact path of each key (relative to the prefix): ``objects/`` and its
    ``/``-separated parts, each with ``%``, ``\\`` and control characters percent-encoded,
    ``.``/``..`` as ``%2E``/``%2E%2E``, an empty part (``a//b``, ``dir/``, ``/a``) as ``%_``,
    a part over 200 bytes cut to 120 bytes plus ``%~`` and 32 hex digits of its SHA-256. A key
    whose path is also the directory of another key (``a`` and ``a/b``) gets ``%=`` appended.
    Injective (up to SHA-256 collisions); `key_from_path` reverses it, the manifest always."""
    paths = {key: "/".join(_name(part) for part in key.split("/")) for key in keys}
    dirs: set[str] = set()
    for path in paths.values():
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return {key: f"objects/{p}%=" if p in dirs else f"objects/{p}" for key, p in paths.items()}


def key_from_path(path: str) -> str | None:
    """The key that `artifact_paths` maps to ``path``; None if a part was shortened (then only
    the manifest knows the key)."""
    parts: list[str] = []
    for name in path.removeprefix("objects/").removesuffix("%=").split("/"):
        if "%~" in name:
            return None
        parts.append("" if name == "%_" else unquote(name, errors="strict"))
    return "/".join(parts)


def md5_path(path: str) -> str:
    return "md5/" + path.removeprefix("objects/")
