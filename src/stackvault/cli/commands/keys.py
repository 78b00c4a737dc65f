"""`stackvault key ...` and `unlock` (cli layer): passwords and locks."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_group, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Parser, Subparsers


def _new_password_file(parser: Parser) -> None:
    parser.add_argument(
        "--new-password-file",
        metavar="FILE",
        help="Read the new password from a file (default: $STACKVAULT_NEW_PASSWORD or a prompt).",
    )


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "unlock", unlock)
    p.add_argument(
        "--remove-all",
        action="store_true",
        help="Remove every lock, even of processes that may be alive.",
    )
    add_json_option(p)

    keys = add_group(
        subparsers, "key", help="Manage the passwords (keys) that open the repository."
    )
    p = add_command(keys, "list", key_list, reads_only=True)
    add_json_option(p)
    p = add_command(keys, "add", key_add)
    _new_password_file(p)
    p = add_command(keys, "remove", key_remove)
    p.add_argument("key_id", metavar="KEY_ID", help="Key id prefix.")
    p = add_command(keys, "passwd", key_passwd)
    _new_password_file(p)


def _new_password_given(new_password_file: str | None) -> None:
    """Without --new-password-file, $STACKVAULT_NEW_PASSWORD or a terminal to ask on, say
    so naming those (not the repository's password variables), before anything is done."""
    import os
    import sys

    from stackvault.cli.context import ENV_NEW_PASSWORD
    from stackvault.errors import ConfigError

    if new_password_file or ENV_NEW_PASSWORD in os.environ or sys.stdin.isatty():
        return
    raise ConfigError(
        "no new password given and no terminal to ask for one",
        hint=f"set {ENV_NEW_PASSWORD} or pass --new-password-file FILE",
    )


def key_list(cli: Cli) -> None:
    """List keys; the one in use is marked with *."""
    with cli.open_repo(index=False) as repo:
        keys = repo.list_keys()
    if cli.json:
        cli.emit_json([k.__dict__ for k in keys])
        return
    for k in keys:
        cli.print(
            f"{'*' if k.current else ' '} {k.id[:8]}  {cli.time(k.created)}  {k.username}@{k.host}"
        )


def key_add(cli: Cli, *, new_password_file: str | None) -> None:
    """Add a password that opens the repository."""
    _new_password_given(new_password_file)
    with cli.open_repo(lock="key add", index=False) as repo:
        key_id = repo.add_key(cli.new_password(new_password_file))
    cli.print(f"added key {key_id[:8]}")


def key_remove(cli: Cli, *, key_id: str) -> None:
    """Remove a key (not the one in use)."""
    cli.refuse_if_append_only("key remove", "deletes a key file")
    with cli.open_repo(lock="key remove", exclusive=True, index=False) as repo:
        removed = repo.remove_key(key_id)
    cli.print(f"removed key {removed[:8]}")


def key_passwd(cli: Cli, *, new_password_file: str | None) -> None:
    """Change the password of the key in use."""
    cli.refuse_if_append_only(
        "key passwd",
        "deletes the old key file",
        "use `key add` to add a password without removing one",
    )
    _new_password_given(new_password_file)
    with cli.open_repo(lock="key passwd", exclusive=True, index=False) as repo:
        key_id = repo.change_password(cli.new_password(new_password_file))
    cli.print(f"password changed (new key {key_id[:8]})")


def unlock(cli: Cli, *, remove_all: bool) -> None:
    """Remove stale locks (or all locks with --remove-all)."""

    from stackvault.repo.lock import REMOVE_ALL_REFUSAL, remove_locks

    if remove_all:
        # Stale locks go as in every command; a live one may be an administrator's prune.
        cli.refuse_if_append_only(*REMOVE_ALL_REFUSAL)

    with cli.open_repo(index=False) as repo:
        removed = remove_locks(
            repo.store, repo.envelope, repo.clock, cli.notice, remove_all=remove_all
        )
    if cli.json:
        cli.emit_json({"removed": [r.__dict__ for r in removed]})
    else:
        for r in removed:
            cli.print(f"removed lock {r.id[:8]} of PID {r.pid} on {r.host} ({r.reason})")
        cli.print(f"{len(removed)} lock(s) removed")
