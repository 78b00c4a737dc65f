"""`stackvault init` (cli layer): create a repository."""

from __future__ import annotations

import typer

from stackvault.chunking.cdc import ChunkerParams
from stackvault.cli.app import JSON_OPTION, app, cli_of
from stackvault.crypto.kdf import KdfParams
from stackvault.repo.repository import Repository
from stackvault.store.local import LocalStore


@app.command()
def init(
    ctx: typer.Context,
    pack_size_mib: int = typer.Option(8, "--pack-size", help="Target pack size in MiB."),
    kdf_memory_mib: int = typer.Option(
        32, "--kdf-memory", help="Argon2id memory in MiB (lower only on tiny machines)."
    ),
    kdf_iterations: int = typer.Option(3, "--kdf-iterations", help="Argon2id iterations."),
    json_: bool = JSON_OPTION,
) -> None:
    """Create a new, empty repository."""
    cli = cli_of(ctx, json_)
    store = cli.store()
    if isinstance(store, LocalStore):
        store.ensure_root()
    password = cli.password(confirm=True)
    repo = Repository.init(
        store,
        password,
        chunker=ChunkerParams(),
        pack_size=pack_size_mib * 1024 * 1024,
        kdf=KdfParams(memory_kib=kdf_memory_mib * 1024, iterations=kdf_iterations),
        notice=cli.notice,
    )
    if cli.json:
        cli.emit_json({"id": repo.config.id, "location": store.describe()})
    else:
        cli.print(f"created stackvault repository {repo.config.id[:8]} at {store.describe()}")
        cli.print("Keep the password safe: without it the data cannot be recovered.")
