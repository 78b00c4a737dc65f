"""`stackvault init` (cli layer): create a repository."""

from __future__ import annotations

from stackvault.cli.app import add_command, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.app import Subparsers
    from stackvault.cli.context import Cli


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "init", init)
    p.add_argument(
        "--pack-size",
        dest="pack_size_mib",
        type=int,
        default=8,
        metavar="MIB",
        help="Target pack size in MiB.",
    )
    p.add_argument(
        "--kdf-memory",
        dest="kdf_memory_mib",
        type=int,
        default=32,
        metavar="MIB",
        help="Argon2id memory in MiB (lower only on tiny machines).",
    )
    p.add_argument(
        "--kdf-iterations", type=int, default=3, metavar="N", help="Argon2id iterations."
    )
    add_json_option(p)


def init(cli: Cli, *, pack_size_mib: int, kdf_memory_mib: int, kdf_iterations: int) -> None:
    """Create a new, empty repository."""
    from stackvault.chunking.cdc import ChunkerParams
    from stackvault.crypto.kdf import KdfParams
    from stackvault.repo.repository import Repository
    from stackvault.store.local import LocalStore

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
