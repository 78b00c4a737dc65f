"""Outbound integrations in a drill (stack layer): the variables of the drilled services that
a preset names as outbound (mail, webhooks, code-execution egress...) emptied in the drill's
compose file, so that a drilled copy sends nothing even if it could reach out (see
`stackvault.stack.drill`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any


def outbound_patterns(preset: str) -> tuple[str, ...]:
    """The preset's ``OUTBOUND`` variable patterns (shell patterns, e.g. ``SMTP_*``); none for
    ``generic`` or a preset without them."""
    from stackvault.stack.presets import PRESETS

    module = PRESETS.get(preset)
    found: tuple[str, ...] = tuple(getattr(module, "OUTBOUND", ()) if module else ())
    return found


def blank_outbound(services: dict[str, Any], patterns: Sequence[str]) -> list[str]:
    """Empty, in each service of a resolved compose document (``docker compose config``),
    every variable of its ``environment`` or its ``env_file`` files that one of
    ``patterns`` matches (``environment`` wins over ``env_file`` in Compose, so an empty
    value there overrides the file). Returns what was emptied, ``SERVICE: NAME``, in
    service order."""
    blanked: list[str] = []
    if not patterns:
        return blanked
    for name, spec in services.items():
        if not isinstance(spec, dict):
            continue
        env = _environment(spec.get("environment"))
        names = list(env) + [n for n in _env_file_names(spec.get("env_file")) if n not in env]
        hits = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not hits:
            continue
        for var in hits:
            env[var] = ""
            blanked.append(f"{name}: {var}")
        spec["environment"] = env
    return blanked


def _environment(value: object) -> dict[str, str | None]:
    """A service's environment as a mapping (Compose may write a list of ``NAME=VALUE``)."""
    if isinstance(value, dict):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    out: dict[str, str | None] = {}
    for item in value if isinstance(value, list) else []:
        key, eq, val = str(item).partition("=")
        out[key] = val if eq else None
    return out


def _env_file_names(value: object) -> list[str]:
    """The variable names in a service's ``env_file`` files (those that can be read)."""
    files = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    names: list[str] = []
    for entry in files:
        path = entry.get("path") if isinstance(entry, dict) else entry
        try:
            with open(str(path), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key = line.removeprefix("export ").partition("=")[0].strip()
            if key and key not in names:
                names.append(key)
    return names
