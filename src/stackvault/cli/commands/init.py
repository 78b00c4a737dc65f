"""`stackvault init` (cli layer): create a repository."""

from __future__ import annotations

from stackvault.cli.commands.copy import add_from_password_file
from stackvault.cli.parser import add_command, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers
    from stackvault.config.repository import RepositorySettings
    from stackvault.crypto.kdf import KdfParams
    from stackvault.repo.repository import Repository
    from stackvault.store.base import Retention, Store


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
    p.add_argument(
        "--object-lock",
        choices=("governance", "compliance"),
        default=None,
        help="Write every object with S3 Object Lock retention in this mode (the bucket is "
        "created with Object Lock if it does not exist).",
    )
    p.add_argument(
        "--lock-days",
        type=int,
        default=None,
        metavar="N",
        help="Days each object stays locked after it is written or last extended by prune "
        "(required with --object-lock).",
    )
    p.add_argument(
        "--copy-chunker-params-from",
        dest="copy_chunker_params_from",
        metavar="LOCATION",
        help="Give the new repository the id key, chunker seed and chunk sizes of this one "
        "(its own encryption key stays new), so `copy` between them transfers only missing "
        "blobs without reading the others; see docs/FORMAT.md for what sharing them reveals.",
    )
    add_from_password_file(p)
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="Create every repository of this configuration file that does not exist yet "
        "(each with its own password reference; a job's copies share its primary's chunking, "
        "so copies transfer only missing data), and open the existing ones to check their "
        "passwords. --repo and the password options are not used then.",
    )
    add_json_option(p)


def init(
    cli: Cli,
    *,
    pack_size_mib: int,
    kdf_memory_mib: int,
    kdf_iterations: int,
    object_lock: str | None = None,
    lock_days: int | None = None,
    copy_chunker_params_from: str | None = None,
    from_password_file: str | None = None,
    config: str | None = None,
) -> None:
    """Create a new, empty repository (with ``--config``: every missing repository of the
    configuration file)."""
    if config is not None:
        _init_from_config(
            cli,
            config,
            pack_size_mib,
            kdf_memory_mib,
            kdf_iterations,
            object_lock,
            lock_days,
            copy_chunker_params_from,
            from_password_file,
        )
        return
    from stackvault.chunking.cdc import ChunkerParams
    from stackvault.crypto.kdf import KdfParams
    from stackvault.errors import ObjectExists, RepositoryExists, UsageError
    from stackvault.repo.repository import Repository
    from stackvault.store.createonly import CreateOnlyStore

    retention = _retention(kdf_memory_mib, kdf_iterations, object_lock, lock_days)
    if from_password_file is not None and copy_chunker_params_from is None:
        raise UsageError("--from-password-file goes with --copy-chunker-params-from")
    store = cli.store()
    ids_from = None
    if copy_chunker_params_from is not None:
        # Read the source first: a wrong location or password creates nothing.
        with cli.open_repo(
            store=cli.store(copy_chunker_params_from, append_only=False),
            password=lambda: cli.source_password(from_password_file),
            role="source",
            index=False,
        ) as ids_from:
            pass
    store.ensure_root(object_lock=retention is not None)
    password = cli.password(confirm=True)
    # Create-only: of several `init`s racing for one location exactly one writes the config;
    # the others take their key file back and are told the repository exists.
    created = CreateOnlyStore(store)
    try:
        repo = Repository.init(
            created,
            password,
            chunker=None if ids_from is not None else ChunkerParams(),
            pack_size=pack_size_mib * 1024 * 1024,
            kdf=KdfParams(memory_kib=kdf_memory_mib * 1024, iterations=kdf_iterations),
            notice=cli.notice,
            object_lock=retention,
            ids_from=ids_from,
        )
    except ObjectExists as exc:
        created.remove_created()
        raise RepositoryExists(
            f"a repository was created at {store.describe()} by another process at the same time",
            hint="use it, or choose another location for a new one",
        ) from exc
    _report(cli, repo, store, ids_from)


def _init_from_config(
    cli: Cli,
    path: str,
    pack_size_mib: int,
    kdf_memory_mib: int,
    kdf_iterations: int,
    object_lock: str | None,
    lock_days: int | None,
    copy_chunker_params_from: str | None,
    from_password_file: str | None,
) -> None:
    """`init --config`: each repository of the file, primaries before the copies that share
    their chunking; one line (or one JSON entry) per repository: created or exists."""
    from stackvault.config import load_config
    from stackvault.crypto.kdf import KdfParams
    from stackvault.errors import UsageError

    if object_lock or lock_days or copy_chunker_params_from or from_password_file:
        raise UsageError(
            "--config creates plain repositories: create an Object-Locked one or one sharing "
            "another's chunking with --repo, then run init --config for the rest"
        )
    _retention(kdf_memory_mib, kdf_iterations, None, None)
    kdf = KdfParams(memory_kib=kdf_memory_mib * 1024, iterations=kdf_iterations)
    loaded = load_config(path)
    primaries = {job.repository.name: job.repository for job in loaded.jobs.values()}
    shares = {c.name: job.repository.name for job in loaded.jobs.values() for c in job.copies}
    settings = {r.name: r for job in loaded.jobs.values() for r in job.repositories}
    order = [*primaries, *(n for n in settings if n not in primaries)]
    opened: dict[str, Repository] = {}
    created_stores: list[Store] = []
    results: list[dict[str, str]] = []
    try:
        for name in order:
            repo_settings = settings[name]
            hint = f"check repositories.{name} in {loaded.path}"
            source = opened.get(shares.get(name, ""))
            repo, created = _open_or_create(
                cli, repo_settings, hint, source, pack_size_mib * 1024 * 1024, kdf
            )
            opened[name] = repo
            if created:
                created_stores.append(repo.store)
            entry = {
                "repository": name,
                "location": repo_settings.shown,
                "state": "created" if created else "exists",
                "id": repo.config.id,
            }
            results.append(entry)
            if not cli.json:
                verb = "created" if created else "exists, password ok:"
                cli.print(f"{name}: {verb} repository {entry['id'][:8]} at {entry['location']}")
    finally:
        for store in created_stores:
            store.close()
    if cli.json:
        cli.emit_json({"repositories": results})
    elif any(r["state"] == "created" for r in results):
        cli.print("Keep the passwords safe: without them the data cannot be recovered.")


def _open_or_create(
    cli: Cli,
    settings: RepositorySettings,
    hint: str,
    source: Repository | None,
    pack_size: int,
    kdf: KdfParams,
) -> tuple[Repository, bool]:
    """The repository of ``settings``, opened (its password checked; its store closed
    again) or created (its chunking shared with ``source`` if given; its store left open for
    the caller to close); True when created."""
    from stackvault.chunking.cdc import ChunkerParams
    from stackvault.errors import RepositoryNotFound
    from stackvault.repo.repository import Repository
    from stackvault.store.createonly import CreateOnlyStore

    try:
        with cli.open_repo(
            store=cli.store(settings.location),
            password=settings.password,
            role=repr(settings.name),
            hint=hint,
            index=False,
        ) as repo:
            return repo, False
    except RepositoryNotFound:
        pass
    store = cli.store(settings.location)
    store.ensure_root()
    repo = Repository.init(
        CreateOnlyStore(store),
        settings.password(),
        chunker=None if source is not None else ChunkerParams(),
        pack_size=pack_size,
        kdf=kdf,
        notice=cli.notice,
        ids_from=source,
    )
    return repo, True


def _retention(
    kdf_memory_mib: int,
    kdf_iterations: int,
    object_lock: str | None,
    lock_days: int | None,
) -> Retention | None:
    """The Object Lock retention asked for, once the KDF and Object Lock options are checked
    (`UsageError` for a value out of range or one option of a pair given alone)."""
    from stackvault.crypto.kdf import MAX_KDF_ITERATIONS, MAX_KDF_MEMORY_MIB
    from stackvault.errors import UsageError
    from stackvault.store.base import Retention

    if not 1 <= kdf_memory_mib <= MAX_KDF_MEMORY_MIB:
        raise UsageError(
            f"--kdf-memory {kdf_memory_mib} is out of range: give 1 to {MAX_KDF_MEMORY_MIB} MiB"
        )
    if not 1 <= kdf_iterations <= MAX_KDF_ITERATIONS:
        raise UsageError(
            f"--kdf-iterations {kdf_iterations} is out of range: give 1 to {MAX_KDF_ITERATIONS}"
        )
    if object_lock is None and lock_days is None:
        return None
    if object_lock is None or lock_days is None or lock_days < 1:
        raise UsageError("--object-lock MODE and --lock-days N (N >= 1) go together")
    return Retention(object_lock, lock_days)


def _report(cli: Cli, repo: Repository, store: Store, ids_from: Repository | None) -> None:
    """What was created: lines, or the --json document."""
    if cli.json:
        cli.emit_json(
            {
                "id": repo.config.id,
                "location": store.describe(),
                "chunker_params_from": ids_from.config.id if ids_from is not None else None,
            }
        )
    else:
        cli.print(f"created stackvault repository {repo.config.id[:8]} at {store.describe()}")
        if ids_from is not None:
            cli.print(
                f"it shares blob ids and chunking with repository {ids_from.config.id[:8]}: "
                "`stackvault copy` between them transfers only missing data"
            )
        cli.print("Keep the password safe: without it the data cannot be recovered.")
