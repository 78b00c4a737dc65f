"""How a server in a container was started: its program's arguments (sources layer).

A container's command (``Entrypoint`` + ``Cmd``, as its inspect data shows it) may run the
server directly (``["redis-server", "--port", "6380"]``), through an entrypoint script
(``["docker-entrypoint.sh", "postgres", "-p", "5433"]``) or through a shell
(``["sh", "-c", "... exec postgres -p \\"$PGPORT\\""]``). `program_args` finds the arguments
given to the server program in any of these forms; `expand` resolves a ``$NAME`` /
``${NAME}`` argument against the container's environment. Nothing here runs anything.

Secrets: an argument may be a password (``--requirepass``): callers never print what they
find here.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Collection, Mapping, Sequence

_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh"})
_SEPARATORS = frozenset({";", "&&", "||", "|", "&"})
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}|([A-Za-z_][A-Za-z0-9_]*))")


def command_of(attrs: Mapping[str, object]) -> list[str]:
    """``Entrypoint`` + ``Cmd`` of a container's inspect data."""
    config = attrs.get("Config")
    if not isinstance(config, dict):
        return []
    return [str(a) for a in (config.get("Entrypoint") or []) + (config.get("Cmd") or [])]


def words(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``sh -c SCRIPT`` replaced by the words of its script (separators
    such as ``;`` and ``&&`` kept as words of their own)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        flags = argv[i + 1] if i + 1 < len(argv) else ""
        if os.path.basename(arg) in _SHELLS and re.fullmatch(r"-[a-z]*c[a-z]*", flags):
            out += _split(argv[i + 2] if i + 2 < len(argv) else "")
            i += 3
            continue
        out.append(arg)
        i += 1
    return out


def _split(script: str) -> list[str]:
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes: the plain words are still worth a look
        return script.split()


def program_args(argv: Sequence[str], programs: Collection[str]) -> list[str] | None:
    """The arguments of the last invocation of one of ``programs`` (base names) in ``argv``
    (see `words`), up to the next shell separator; None when none of them is started there."""
    found: list[str] | None = None
    all_words = words(argv)
    for i, word in enumerate(all_words):
        if os.path.basename(word) in programs:
            found = []
            for arg in all_words[i + 1 :]:
                if arg in _SEPARATORS:
                    break
                found.append(arg)
    return found


def option(args: Sequence[str], *names: str) -> str | None:
    """The value of the last of the options ``names`` in ``args``: ``-p 5433``, ``-p5433``
    (one-letter options), ``--port 5433`` or ``--port=5433``; None when absent."""
    value: str | None = None
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
            elif len(name) == 2 and arg.startswith(name) and len(arg) > 2 and name != "--":
                value = arg[2:]
    return value


def setting(args: Sequence[str], name: str) -> str | None:
    """PostgreSQL's ``-c NAME=VALUE`` / ``--NAME=VALUE`` (the last one given); None when
    absent."""
    value: str | None = None
    for i, arg in enumerate(args):
        if arg == "-c" and i + 1 < len(args) and args[i + 1].startswith(name + "="):
            value = args[i + 1][len(name) + 1 :]
        elif arg.startswith("-c" + name + "=") or arg.startswith(f"--{name}="):
            value = arg[len(name) + 3 :]
    return value


def variable(value: str) -> str | None:
    """The variable an argument is made of alone (``$NAME``, ``${NAME}``), else None."""
    match = _VARIABLE.fullmatch(value)
    return (match.group(1) or match.group(2)) if match else None


def expand(value: str, env: Mapping[str, str]) -> str:
    """``value`` with ``$NAME`` and ``${NAME}`` replaced by the container's variables (an
    unknown one by nothing, as a shell would)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
