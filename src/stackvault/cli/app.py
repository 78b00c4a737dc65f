"""The whole command line (cli layer): the global options, and running the command given.

Plain `argparse`, so that ``--help`` and ``--version`` import nothing heavy. Every command lives
in ``commands/<name>.py``, whose ``register(subparsers)`` adds its parser and handler through
`stackvault.cli.parser`; a handler imports what it needs (engine, repository, crypto, rich)
inside its body.
"""

from __future__ import annotations

import argparse
import sys

from stackvault import __version__
from stackvault.cli.commands import register_all
from stackvault.cli.context import Cli
from stackvault.cli.parser import (
    COMMAND_JSON,
    GROUP,
    HANDLER,
    NAME,
    NO_LOCK_HELP,
    READS_ONLY,
    Parser,
    ParserExit,
    add_global_options,
    commands_of,
)
from stackvault.errors import EXIT_USAGE, UsageError

# `typing.TYPE_CHECKING` without importing typing: `stackvault --version` is timed, and the
# CLI's start-up imports are kept to argparse and stackvault's own light modules.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from stackvault.cli.parser import Handler

__all__ = ["NO_LOCK_HELP", "PROG", "ParserExit", "build_parser", "run_command"]

PROG = "stackvault"


class _Version(argparse.Action):
    """``--version``: print it and stop (before any other option or the command is looked at)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"{PROG} {__version__}\n")
        sys.stdout.flush()
        raise ParserExit(0)


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Back up, verify and restore application stacks into a deduplicated, "
        "encrypted repository.",
        leaf=False,
    )
    add_global_options(parser)
    parser.add_argument("--version", action=_Version, help="Print the version.")
    parser.set_defaults(**{GROUP: parser})
    register_all(commands_of(parser))
    return parser


def run_command(parser: Parser, argv: Sequence[str]) -> int:
    """Parse ``argv`` and run the command; ``stackvault`` or ``stackvault key`` alone print
    their help on stderr and exit 2."""
    args = parser.parse_args(argv)
    ns = vars(args)
    handler: Handler | None = ns.pop(HANDLER, None)
    group: Parser = ns.pop(GROUP)
    if handler is None:
        group.print_help(sys.stderr)
        return EXIT_USAGE
    command_json = ns.pop(COMMAND_JSON, False)  # the command's own --json turns JSON on
    no_lock = ns.pop("no_lock")
    if no_lock and not ns.pop(READS_ONLY):
        raise UsageError(
            f"--no-lock is only for commands that only read the repository; `{ns[NAME]}` "
            "writes to it and must lock it",
            hint="leave out --no-lock",
        )
    cli = Cli(
        repo_location=ns.pop("repo"),
        password_file=ns.pop("password_file"),
        json=ns.pop("json") or command_json,
        quiet=ns.pop("quiet"),
        append_only=ns.pop("append_only"),
        no_lock=no_lock,
        progress_interval=ns.pop("progress_interval"),
        password_command=ns.pop("password_command"),
        retry_lock=ns.pop("retry_lock"),
        utc=ns.pop("utc"),
    )
    kwargs = {k: v for k, v in ns.items() if not k.startswith("_")}
    rv = handler(cli, **kwargs)
    return rv if isinstance(rv, int) else 0
