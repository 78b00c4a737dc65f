"""The error tree of stackvault (leaf module): every failure a user can meet, with its exit code.

Every exception that leaves a stackvault API is a `StackvaultError`. Foreign exceptions (OSError,
cryptography, subprocess, ...) are translated where they enter, with ``raise X(...) from exc``.
The CLI prints ``str(error)`` — one sentence saying what happened and what to do — and exits with
``error.exit_code``. Messages never contain secrets (passwords, keys, credentials in URLs).

Exit codes (documented in README.md, asserted in tests):

====  ==========================================================
0     success
1     error (generic; the message says what and what to do)
2     usage error on the command line
3     backup finished but is incomplete (some input could not be read)
10    no repository at the given location
11    repository is locked by another process
12    wrong password (no key in the repository opens with it)
20    integrity error: damaged or missing repository data
130   interrupted (Ctrl-C / SIGTERM); nothing unfinished was recorded
====  ==========================================================
"""

from __future__ import annotations

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_NO_REPOSITORY = 10
EXIT_LOCKED = 11
EXIT_WRONG_PASSWORD = 12
EXIT_INTEGRITY = 20
EXIT_INTERRUPTED = 130


class StackvaultError(Exception):
    """Base of every stackvault error. ``str()`` is the user-facing sentence."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}; {self.hint}"
        return self.message


class UsageError(StackvaultError):
    """The command line asks for something impossible (bad option value, conflicting flags)."""

    exit_code = EXIT_USAGE


class ConfigError(StackvaultError):
    """A setting (environment variable, option, config file) is missing or invalid."""


# --- storage -------------------------------------------------------------------------------


class StoreError(StackvaultError):
    """A storage backend failed. Subclasses say whether a retry can help."""

    transient: bool = False


class TransientStoreError(StoreError):
    """A failure that may go away when retried (timeout, connection reset, 5xx, throttling)."""

    transient = True


class ObjectNotFound(StoreError):
    """A named object does not exist in the store."""


class ObjectExists(StoreError):
    """An object was to be created but one of that name exists and the store forbids overwrites."""


class StorePermissionDenied(StoreError):
    """The store refused the operation for lack of permission (file mode, bucket policy, lock)."""


class ObjectLocked(StorePermissionDenied):
    """The object is under Object Lock retention and cannot be deleted or shortened yet."""


class StoreFull(StoreError):
    """The storage medium has no space left."""


class StoreUnreachable(StoreError):
    """The store cannot be reached at all (no such host, connection refused, TLS failure)."""


# --- repository ----------------------------------------------------------------------------


class RepositoryNotFound(StackvaultError):
    """No repository at the given location."""

    exit_code = EXIT_NO_REPOSITORY


class RepositoryExists(StackvaultError):
    """`init` was asked to create a repository where one exists."""


class UnsupportedFormat(StackvaultError):
    """The repository was written in a format version this program does not understand."""


class WrongPassword(StackvaultError):
    """No key of the repository could be opened with the given password."""

    exit_code = EXIT_WRONG_PASSWORD


class RepositoryLocked(StackvaultError):
    """Another live process holds a conflicting lock on the repository."""

    exit_code = EXIT_LOCKED


class IntegrityError(StackvaultError):
    """Repository data is damaged or missing (failed authentication, wrong hash, absent pack)."""

    exit_code = EXIT_INTEGRITY


class SnapshotNotFound(StackvaultError):
    """No snapshot matches the given reference (id prefix or ``latest``)."""


class PathNotFound(StackvaultError):
    """A path asked for does not exist in the snapshot."""


class KeyManagementError(StackvaultError):
    """A key management request cannot be done (removing the key in use, the last key, ...)."""


class AppendOnlyRefused(StackvaultError):
    """The command would delete or overwrite repository objects, and the repository is opened
    append-only (``--append-only`` / ``STACKVAULT_APPEND_ONLY``)."""


# --- capture and restore -------------------------------------------------------------------


class SourceError(StackvaultError):
    """Capturing a source failed (a dump command exited non-zero, a stream broke, ...)."""


class SourceVanished(SourceError):
    """A file or directory a backup listed was gone when it came to be read (deleted or
    renamed meanwhile). Not a failure: it no longer exists, so nothing is missing from the
    backup; the backup reports a notice and stays complete."""


class SourceChanged(SourceError):
    """The data changed while it was read (e.g. a file of a busy volume shrank during a hot
    capture): the capture is worthless, but trying it again may well succeed."""


class RestoreRefused(StackvaultError):
    """Restore refused to act because it could destroy data or escape its target."""


class RestoreFailed(StackvaultError):
    """A stack restore failed part-way: the message, hint and exit code are those of the
    failure; ``report`` is the restore's report (`stackvault.stack.restorereport.StackRestore`):
    what was done, what failed, which logs to read, how to clean up."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        exit_code: int = EXIT_ERROR,
        report: object = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.report = report


class RestoreIncomplete(StackvaultError):
    """Restore finished, but the system refused to create some entries (a device node
    without the privilege to make one); each was reported and everything else restored."""


class Interrupted(StackvaultError):
    """The run was interrupted (SIGINT/SIGTERM); nothing unfinished was recorded."""

    exit_code = EXIT_INTERRUPTED
