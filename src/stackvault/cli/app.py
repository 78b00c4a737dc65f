"""The command-line application object and shared options (cli layer)."""

from __future__ import annotations

import typer

from stackvault import __version__
from stackvault.cli.context import Cli

app = typer.Typer(
    name="stackvault",
    help="Back up, verify and restore application stacks into a deduplicated, encrypted "
    "repository.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"stackvault {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    repo: str | None = typer.Option(
        None, "--repo", "-r", help="Repository location (default: $STACKVAULT_REPOSITORY)."
    ),
    password_file: str | None = typer.Option(
        None,
        "--password-file",
        "-p",
        help="Read the password from this file (default: $STACKVAULT_PASSWORD_FILE, "
        "$STACKVAULT_PASSWORD, or a prompt).",
    ),
    json_: bool = typer.Option(False, "--json", help="Print machine-readable JSON on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Global options."""
    ctx.obj = Cli(repo_location=repo, password_file=password_file, json=json_, quiet=quiet)


def cli_of(ctx: typer.Context, json_: bool = False) -> Cli:
    """The shared `Cli` of this invocation; a command's own ``--json`` turns JSON on."""
    cli: Cli = ctx.obj
    if json_:
        cli.json = True
    return cli
