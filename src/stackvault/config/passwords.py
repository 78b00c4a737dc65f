"""Reading a password from where it is kept (configuration layer): the first line of a file,
or of what a command prints. One implementation for the repositories of the configuration
file (``password_file``, ``password_command``), for the other secrets it names by reference
(notification URLs: ``url_file``, ``url_command``) and for the command line's
``--password-file`` / ``--password-command``.

A password never appears in a message; neither does a failing command's output or error
output (a password tool may print secrets there). Each error names where the setting came
from (``subject``: e.g. ``repository offsite: ``) and what to check (``hint``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from stackvault.errors import ConfigError
from stackvault.sources.tools.childenv import child_environment

PASSWORD_TIMEOUT = 60.0
"""Seconds a password command may take."""


def first_line(data: bytes) -> bytes:
    """A password kept in a file or printed by a command: its first line, without the line
    end (like restic: a trailing newline is not part of it)."""
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def describe_command(argv: Sequence[str]) -> str:
    """``command pass show backup``: a command written as one string (``sh -c TEXT``) shown
    as its text."""
    return "command " + (argv[2] if tuple(argv[:2]) == ("sh", "-c") else " ".join(argv))


def password_from_file(path: str, *, subject: str = "", hint: str, what: str = "password") -> bytes:
    """The first line of the file at ``path``; `ConfigError` when it cannot be read (``what``
    names the secret in it: ``password``, ``URL``)."""
    try:
        with open(path, "rb") as f:
            return first_line(f.read())
    except OSError as exc:
        raise ConfigError(
            f"{subject}cannot read the {what} file {path}: {exc.strerror}", hint=hint
        ) from None


def password_from_command(
    argv: Sequence[str], *, subject: str = "", hint: str, what: str = "password"
) -> bytes:
    """The first line of what ``argv`` prints, run on this host with nothing on its standard
    input and the environment every child gets (`child_environment`: without stackvault's
    own secrets), within `PASSWORD_TIMEOUT`; `ConfigError` naming the command (as the
    ``what`` command) when it cannot start, does not finish or exits with a non-zero
    status."""
    shown = describe_command(argv)
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=child_environment(),
            timeout=PASSWORD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = (
            f"did not finish within {PASSWORD_TIMEOUT:.0f} s"
            if isinstance(exc, subprocess.TimeoutExpired)
            else f"cannot be started ({exc.strerror})"
        )
        raise ConfigError(f"{subject}the {what} {shown} {reason}", hint=hint) from None
    if proc.returncode != 0:
        raise ConfigError(
            f"{subject}the {what} {shown} exited with status {proc.returncode}",
            hint="run it by hand to see why",
        )
    return first_line(bytes(proc.stdout))
