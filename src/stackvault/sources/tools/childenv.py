"""The environment of a child process (sources layer): this process's, without its secrets.

Every program stackvault starts on this host - ``--stdin-from-command``, dump tools through
`HostRunner`, hooks, Docker Compose - gets `child_environment()`: what stackvault itself was
given, minus the variables that hold stackvault's own passwords, and - once a command opened
a repository on S3 (`hide_repository_credentials`) - minus the S3 secrets the repository
reads from the environment. A child has no use for them, and ``--stdin-from-command env``
would otherwise store them inside the repository. Credentials that children do need
(``PGPASSWORD``, ``MYSQL_PWD``; ``AWS_*`` when the repository is not on S3) are left alone.
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


S3_SECRET_VARIABLES = frozenset({"AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
"""Where boto3 finds an S3 repository's secret in the environment."""

_hidden_now: set[str] = set()


def hide_repository_credentials(hide: bool = True) -> None:
    """From now on, children of this process do not see the S3 secret variables (called
    when a repository, or a copy's source, on S3 is opened: its credentials are its own);
    ``hide=False`` shows them again (a new command run in the same process)."""
    if hide:
        _hidden_now.update(S3_SECRET_VARIABLES)
    else:
        _hidden_now.clear()


def is_hidden(name: str) -> bool:
    """True if a child must not see the variable ``name``."""
    upper = name.upper()
    return (
        upper in HIDDEN_VARIABLES
        or upper in _hidden_now
        or (upper.startswith("STACKVAULT_") and upper.endswith("PASSWORD"))
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
