"""`stackvault version` (cli layer): the version, the repository format it reads and writes,
and the versions of the libraries that decide what is stored and how it is reached."""

from __future__ import annotations

from stackvault.cli.parser import add_command, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Subparsers

LIBRARIES = (
    "pyfastcdc",  # the chunker: its cut points decide deduplication
    "zstandard",
    "blake3",
    "cryptography",
    "orjson",
    "boto3",
    "docker",
    "pydantic",
    "croniter",
    "PyYAML",
    "rich",
)


def register(subparsers: Subparsers) -> None:
    p = add_command(subparsers, "version", version)
    add_json_option(p)
    from stackvault.cli.commands import completion

    completion.register(subparsers)  # completion and man: what the parser says of itself


def version(cli: Cli) -> None:
    """Print the version, the repository format version and the versions of the libraries
    that matter (for a bug report)."""
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from stackvault import __version__
    from stackvault.repo.config import FORMAT_VERSION

    libraries: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            libraries[name] = installed(name)
        except PackageNotFoundError:
            libraries[name] = None
    python = f"{platform.python_implementation()} {platform.python_version()}"
    if cli.json:
        cli.emit_json(
            {
                "version": __version__,
                "repository_format": FORMAT_VERSION,
                "python": python,
                "libraries": libraries,
            }
        )
        return
    cli.print(f"stackvault {__version__}")
    cli.print(f"repository format {FORMAT_VERSION}")
    cli.print(f"python {python}")
    for name, found in libraries.items():
        cli.print(f"{name} {found or 'not installed'}")
