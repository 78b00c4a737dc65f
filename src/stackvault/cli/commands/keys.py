"""`stackvault key ...` and `unlock` (cli layer): passwords and locks."""

from __future__ import annotations

import typer

from stackvault.cli.app import JSON_OPTION, app, cli_of
from stackvault.repo.lock import list_locks

key_app = typer.Typer(
    help="Manage the passwords (keys) that open the repository.", no_args_is_help=True
)
app.add_typer(key_app, name="key")

NEW_PASSWORD_FILE = typer.Option(
    None,
    "--new-password-file",
    help="Read the new password from a file (default: $STACKVAULT_NEW_PASSWORD or a prompt).",
)


@key_app.command("list")
def key_list(ctx: typer.Context, json_: bool = JSON_OPTION) -> None:
    """List keys; the one in use is marked with *."""
    cli = cli_of(ctx, json_)
    with cli.open_repo(index=False) as repo:
        keys = repo.list_keys()
    if cli.json:
        cli.emit_json([k.__dict__ for k in keys])
        return
    for k in keys:
        cli.print(
            f"{'*' if k.current else ' '} {k.id[:8]}  {k.created[:19]}  {k.username}@{k.host}"
        )


@key_app.command("add")
def key_add(ctx: typer.Context, new_password_file: str | None = NEW_PASSWORD_FILE) -> None:
    """Add a password that opens the repository."""
    cli = cli_of(ctx)
    with cli.open_repo(lock="key add", index=False) as repo:
        key_id = repo.add_key(cli.new_password(new_password_file))
    cli.print(f"added key {key_id[:8]}")


@key_app.command("remove")
def key_remove(
    ctx: typer.Context, key_id: str = typer.Argument(..., help="Key id prefix.")
) -> None:
    """Remove a key (not the one in use)."""
    cli = cli_of(ctx)
    with cli.open_repo(lock="key remove", exclusive=True, index=False) as repo:
        removed = repo.remove_key(key_id)
    cli.print(f"removed key {removed[:8]}")


@key_app.command("passwd")
def key_passwd(ctx: typer.Context, new_password_file: str | None = NEW_PASSWORD_FILE) -> None:
    """Change the password of the key in use."""
    cli = cli_of(ctx)
    with cli.open_repo(lock="key passwd", exclusive=True, index=False) as repo:
        key_id = repo.change_password(cli.new_password(new_password_file))
    cli.print(f"password changed (new key {key_id[:8]})")


@app.command()
def unlock(
    ctx: typer.Context,
    remove_all: bool = typer.Option(
        False, "--remove-all", help="Remove every lock, even of processes that may be alive."
    ),
    json_: bool = JSON_OPTION,
) -> None:
    """Remove stale locks (or all locks with --remove-all)."""
    cli = cli_of(ctx, json_)
    import socket

    with cli.open_repo(index=False) as repo:
        removed = []
        now = repo.clock.now()
        for lk in list_locks(repo.store, repo.envelope, cli.notice):
            reason = lk.stale_reason(now, socket.gethostname())
            if remove_all or reason is not None:
                repo.store.delete(f"locks/{lk.id}")
                removed.append(
                    {
                        "id": lk.id,
                        "host": lk.host,
                        "pid": lk.pid,
                        "reason": reason or "--remove-all",
                    }
                )
    if cli.json:
        cli.emit_json({"removed": removed})
    else:
        for r in removed:
            cli.print(
                f"removed lock {str(r['id'])[:8]} of PID {r['pid']} on {r['host']} ({r['reason']})"
            )
        cli.print(f"{len(removed)} lock(s) removed")
