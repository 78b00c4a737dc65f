"""The environment of a child process (sources layer): this process's, without its secrets.

Every program stackvault starts on this host - ``--stdin-from-command``, dump tools through
`HostRunner`, hooks, Docker Compose - gets `child_environment()`: what stackvault itself was
given, minus the variables that hold stackvault's own passwords. A child has no use for them,
and ``--stdin-from-command env`` would otherwise store the repository password inside the
repository. Credentials that children do need (``PGPASSWORD``, ``MYSQL_PWD``, ``AWS_*`` for a
user's ``aws s3 cp``) are left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

HIDDEN_VARIABLES = frozenset(
    {
        "STACKVAULT_PASSWORD",
        "STACKVAULT_FROM_PASSWORD",
        "STACKVAULT_NEW_PASSWORD",
    }
)
"""stackvault's own secrets; also any other ``STACKVAULT_*PASSWORD`` variable."""


def is_hidden(name: str) -> bool:
    """True if a child must not see the variable ``name``."""
    upper = name.upper()
    return upper in HIDDEN_VARIABLES or (
        upper.startswith("STACKVAULT_") and upper.endswith("PASSWORD")
    )


def child_environment(
    extra: Mapping[str, str] | None = None, *, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``environ`` (default: this process's) without hidden variables, then ``extra`` on top
    (what the caller adds on purpose is kept, whatever its name)."""
    source = os.environ if environ is None else environ
    out = {name: value for name, value in source.items() if not is_hidden(name)}
    if extra:
        out.update(extra)
    return out
