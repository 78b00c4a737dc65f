"""The command parser and the way commands register (cli layer).

`Parser` (plain `argparse`, never exiting the process), its help formatter, and the three
functions a command module registers through: `add_command`, `add_group`, `add_json_option`.
Both `cli/app.py` (which builds the whole parser) and every ``commands/<name>.py`` import this
module; it imports neither, so the commands do not depend on the app that lists them.
"""

from __future__ import annotations

import argparse
import os
import sys

from stackvault.errors import UsageError

# `typing.TYPE_CHECKING` without importing typing: `stackvault --version` is timed, and the
# CLI's start-up imports are kept to argparse and stackvault's own light modules.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from typing import Any, NoReturn, TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction["Parser"]
    #: A command body: the shared `Cli`, then the command's own options as keyword arguments.
    #: Returns the exit code (``None`` = 0).
    Handler: TypeAlias = Callable[..., int | None]

JSON_HELP = "Print machine-readable JSON on stdout."
NO_LOCK_HELP = (
    "Read the repository without locking it. Only for commands that only read it "
    "(snapshots, ls, diff, stats, restore except --to with --overwrite, dump, export, "
    "sha256sums, check, key list; copy: the source, the destination is always locked); the "
    "others refuse it. The risk: a prune "
    "running meanwhile may delete data while it is read, and the command may then fail with "
    "damage errors (never give wrong bytes). A read-only repository is read without a lock "
    "anyway, with a notice."
)

# Namespace entries that are not a command's keyword arguments start with "_".
HANDLER = "_handler"
GROUP = "_group"
COMMAND_JSON = "_command_json"
READS_ONLY = "_reads_only"
NAME = "_name"


class ParserExit(Exception):
    """``--help`` or ``--version`` was handled (or help shown for a missing command)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class HelpFormatter(argparse.HelpFormatter):
    """Help close to what the Typer version printed: ``-r, --repo LOCATION``, defaults and
    required options marked, docstring paragraphs kept, help strings printed verbatim."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=_terminal_width() - 2)

    def _format_usage(
        self,
        usage: str | None,
        actions: Iterable[argparse.Action],
        groups: Iterable[argparse._MutuallyExclusiveGroup],
        prefix: str | None,
    ) -> str:
        if usage is None:
            actions = list(actions)
            parts = [self._prog]
            if any(a.option_strings for a in actions):
                parts.append("[OPTIONS]")
            for a in actions:
                if not a.option_strings:
                    parts.append(self._format_args(a, self._get_default_metavar_for_positional(a)))
            usage = " ".join(parts).replace("%", "%%")
        return super()._format_usage(
            usage, actions, groups, "Usage: " if prefix is None else prefix
        )

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        metavar = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {metavar}"

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if action.nargs == argparse.PARSER:
            # the list of commands, without the "COMMAND" line above it
            lines = text.splitlines(keepends=True)[1:]
            text = "".join(line[2:] if line.startswith("  ") else line for line in lines)
        return text

    def _expand_help(self, action: argparse.Action) -> str:
        text = action.help or ""  # verbatim: help strings hold "%" (e.g. "10%")
        # `-h` is handled while `parse_known_intermixed_args` has swapped the positionals'
        # nargs and default out (into save_nargs / save_default)
        nargs = getattr(action, "save_nargs", action.nargs)
        default = getattr(action, "save_default", action.default)
        if action.option_strings:
            if action.required:
                return text + "  [required]"
            shown = nargs != 0 and default not in (None, [], argparse.SUPPRESS)
        else:
            shown = nargs == argparse.OPTIONAL and default is not None
        return text + f"  [default: {default}]" if shown else text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text  # each docstring paragraph on its own
        return "\n\n".join(fill(p, width, indent) for p in text.split("\n\n") if p.strip())


def _terminal_width() -> int:
    """`shutil.get_terminal_size().columns` without importing shutil (and with it zlib, bz2,
    lzma): argparse creates a formatter for every argument added, not only to print help."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that never exits the process: usage errors raise `UsageError` (one
    ``stackvault: error:`` line, exit 2), help and version raise `ParserExit`. A command's own
    options and arguments may be given in any order (``ls latest --long /etc``), as before."""

    def __init__(self, *args: Any, leaf: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("add_help", False)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._positionals.title = "Arguments"
        self._optionals.title = "Options"
        self.leaf = leaf
        self._intermixing = False
        self.add_argument(
            "-h",
            "--help",
            action="help",
            default=argparse.SUPPRESS,
            help="Show this message and exit.",
        )

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:
            return super().parse_known_args(args, namespace)
        args = self._attach_values(sys.argv[1:] if args is None else list(args))
        if not self.leaf:
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back into this method
        try:
            parsed, extras = self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False
        if extras:  # said here, so that the message points at this command's help
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        assert parsed is not None
        return parsed, extras

    def _attach_values(self, args: list[str]) -> list[str]:
        """``--exclude -foo`` means the pattern "-foo", as it did before: the word after an
        option that takes a value is that value, even if it starts with "-" (argparse would
        take it for an option). Such a pair is passed on as ``--exclude=-foo``. Only this
        parser's own options are looked at: a command's, or the global ones before the
        command name."""
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--" or (not self.leaf and not arg.startswith("-")):
                break  # the end of options, or the command name
            action = self._option_string_actions.get(arg)
            if action is not None and action.nargs is None and i + 1 < len(args):
                value = args[i + 1]
                out.extend([f"{arg}={value}"] if value.startswith("-") else [arg, value])
                i += 2
                continue
            out.append(arg)
            i += 1
        return out + args[i:]

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} -h')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise ParserExit(status)


def add_command(
    subparsers: Subparsers,
    name: str,
    handler: Handler | None = None,
    *,
    help: str | None = None,
    reads_only: bool = False,
) -> Parser:
    """Add a command; its help is ``help`` or the handler's docstring (first paragraph in the
    list of commands, all of it in the command's own help). Without a handler it is a group
    of subcommands (`add_group`). ``reads_only``: the command never writes to the repository
    (or, like copy, to the one it reads from), so it accepts the global ``--no-lock``."""
    doc = help if help is not None else _dedent(handler.__doc__ if handler else None)
    summary = " ".join(doc.split("\n\n", 1)[0].split())
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=doc,
        leaf=handler is not None,
        conflict_handler="resolve",  # a command's own option of a global's name is its own
    )
    if handler is not None:
        add_global_options(parser, after_command=True)
        parser.set_defaults(
            **{HANDLER: handler, READS_ONLY: reads_only, NAME: parser.prog.split(" ", 1)[-1]}
        )
    return parser


def add_global_options(parser: Parser, *, after_command: bool = False) -> None:
    """The global options: on the top-level parser (before the command name) and, with
    ``after_command``, on every command's own parser too, so that ``stackvault init --repo
    X`` means what ``stackvault --repo X init`` does. After the command they default to
    nothing at all (`argparse.SUPPRESS`): a value given before the command then stands, one
    given after it wins. A command that defines an option of the same name keeps its own."""
    target: Any = parser
    extra: dict[str, Any] = {}
    if after_command:
        target = parser.add_argument_group("Global options (before or after the command)")
        extra = {"default": argparse.SUPPRESS}
    target.add_argument(
        "-r",
        "--repo",
        metavar="LOCATION",
        help="Repository location (default: $STACKVAULT_REPOSITORY).",
        **extra,
    )
    target.add_argument(
        "-p",
        "--password-file",
        metavar="FILE",
        help="Read the password from this file (default: $STACKVAULT_PASSWORD_FILE, "
        "$STACKVAULT_PASSWORD, or a prompt).",
        **extra,
    )
    target.add_argument(
        "--password-command",
        metavar="COMMAND",
        help="Run COMMAND (by sh -c) and use the first line it prints as the password "
        "(default: $STACKVAULT_PASSWORD_COMMAND).",
        **extra,
    )
    target.add_argument(
        "--append-only",
        action="store_true",
        help="Open a local repository so that nothing in it can be deleted or overwritten "
        "(locks excepted); commands that delete refuse (default: $STACKVAULT_APPEND_ONLY=1).",
        **extra,
    )
    target.add_argument("--no-lock", action="store_true", help=NO_LOCK_HELP, **extra)
    target.add_argument("--json", action="store_true", help=JSON_HELP, **extra)
    target.add_argument("-q", "--quiet", action="store_true", help="Print only errors.", **extra)
    target.add_argument(
        "--utc",
        action="store_true",
        help="Print times in UTC instead of the local time zone (JSON is always UTC).",
        **extra,
    )
    target.add_argument(
        "--retry-lock",
        type=_wait,
        metavar="DURATION",
        help="When the repository is locked by another process (a prune), try again for "
        "up to DURATION (30s, 10m, 1h) instead of failing at once with exit 11 (default: "
        "$STACKVAULT_RETRY_LOCK seconds, or 0).",
        **extra,
    )
    target.add_argument(
        "--progress-interval",
        type=_seconds,
        metavar="SECONDS",
        help="Without a terminal (a log, cron), print a line with the progress of a long "
        "backup, restore or copy every SECONDS (default: 60; 0: never).",
        **extra,
    )


_WAIT_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_wait(text: str) -> float:
    """A wait such as ``30s``, ``10m``, ``1h30m`` or ``90`` (seconds), in seconds;
    `ValueError` (one sentence) for anything else."""
    import re

    body = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", body):
        return float(body)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"{text!r} is not a duration (e.g. 30s, 10m, 1h30m)")
    return sum(float(n) * _WAIT_UNITS[u] for n, u in parts)


def _wait(text: str) -> float:
    """`parse_wait` as an argparse ``type`` (``--retry-lock``)."""
    try:
        return parse_wait(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _seconds(text: str) -> float:
    """A non-negative number of seconds (argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """A size in bytes: ``500M``, ``2G``, ``1.5GiB``, ``4096`` (binary units: K = KiB = 1024
    bytes, M = MiB, G = GiB, T = TiB); `ValueError` (one sentence) for anything else."""
    body = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = body[-1:] if body[-1:] in _SIZE_UNITS else ""
    number = body[: len(body) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf") or (text.strip().upper().endswith("IB") and not unit):
        raise ValueError(f"{text!r} is not a size (e.g. 500M, 2G, 4096)")
    return int(value * _SIZE_UNITS[unit])


def size_arg(text: str) -> int:
    """`parse_size` as an argparse ``type``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_group(subparsers: Subparsers, name: str, *, help: str) -> Subparsers:
    """Add a command that has subcommands (``key list``); shows its help when given alone."""
    parser = add_command(subparsers, name, help=help)
    parser.set_defaults(**{GROUP: parser})
    return commands_of(parser)


def add_config_option(parser: Parser) -> None:
    """``--config/-c FILE``: the configuration file of scheduled protection (keyword
    argument ``config``; None: `stackvault.config.load.config_path` decides)."""
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="The configuration file (default: $STACKVAULT_CONFIG, else "
        "/etc/stackvault/stackvault.yaml).",
    )


def add_json_option(parser: Parser) -> None:
    """``--json`` after the command name, as an alternative to the global one."""
    parser.add_argument("--json", dest=COMMAND_JSON, action="store_true", help=JSON_HELP)


def add_snapshot_filters(parser: Parser, *, path_option: bool = True) -> None:
    """``--host``, ``--tag``, ``--path`` that decide which snapshot ``latest`` names (keyword
    arguments ``host``, ``tag``, ``snapshot_path``, for `SnapshotFilter.of`). ``--path`` is
    also spelled ``--snapshot-path``; a command whose ``--path`` means something else
    (``export``'s subtree) passes ``path_option=False`` and keeps that spelling only."""
    group = parser.add_argument_group("Which snapshot 'latest' is")
    group.add_argument("--host", metavar="HOST", help="'latest': the newest snapshot of this host.")
    group.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="'latest': the newest snapshot with this tag (repeatable: all of them).",
    )
    group.add_argument(
        *(("--path", "--snapshot-path") if path_option else ("--snapshot-path",)),
        dest="snapshot_path",
        action="append",
        default=[],
        metavar="PATH",
        help="'latest': the newest snapshot that includes this backed-up path (repeatable: "
        "all of them).",
    )


def commands_of(parser: Parser) -> Subparsers:
    """The list of subcommands of ``parser`` (the top level, or a group such as ``key``)."""
    # an explicit prog: argparse would otherwise format the parent's usage to find it
    return parser.add_subparsers(
        title="Commands", metavar="COMMAND", dest="_command", parser_class=Parser, prog=parser.prog
    )


def _dedent(doc: str | None) -> str:
    """A docstring as paragraphs of text (like `inspect.cleandoc`, without importing inspect)."""
    if not doc:
        return ""
    lines = doc.expandtabs().strip().splitlines()
    indents = [len(ln) - len(ln.lstrip()) for ln in lines[1:] if ln.strip()]
    cut = min(indents, default=0)
    return "\n".join([lines[0].strip()] + [ln[cut:].rstrip() for ln in lines[1:]])
