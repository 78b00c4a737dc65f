"""Append-only refusal (repository layer): stop an operation that deletes before it starts.

A store opened append-only refuses every delete and overwrite (locks excepted) by itself; an
operation that deletes would then fail part-way, after work that is lost. Operations that
delete (forget, prune, key removal, repairs that replace objects, removing live locks) call
`refuse_if_append_only` first, so they stop before doing anything, with one sentence that
says what they would have deleted.
"""

from __future__ import annotations

from stackvault.errors import AppendOnlyRefused
from stackvault.store.base import Store

_FULL_ACCESS = "run it from a client with full access to the repository"


def refuse_if_append_only(
    append_only: bool,
    command: str,
    action: str,
    alternative: str | None = None,
    *,
    setting: str,
) -> None:
    """Raise `AppendOnlyRefused` if ``append_only``: "`command` action, which a repository
    opened append-only (setting) does not allow", with a hint to run it with full access
    (or ``alternative``). ``setting`` names how append-only mode was chosen (an option, an
    environment variable, the store)."""
    if append_only:
        raise AppendOnlyRefused(
            f"`{command}` {action}, which a repository opened append-only "
            f"({setting}) does not allow",
            hint=f"{_FULL_ACCESS}, or {alternative}" if alternative else _FULL_ACCESS,
        )


def refuse_on_append_only_store(
    store: Store, command: str, action: str, alternative: str | None = None
) -> None:
    """`refuse_if_append_only` for a store that reports itself append-only (its
    `Capabilities.append_only`); the store's description names the setting."""
    refuse_if_append_only(
        store.capabilities().append_only,
        command,
        action,
        alternative,
        setting=store.describe(),
    )
