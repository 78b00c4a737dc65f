"""`stackvault stack ...` (cli layer): whole Compose stacks."""

from __future__ import annotations

from stackvault.cli.app import add_command, add_group, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.app import Subparsers
    from stackvault.cli.context import Cli


def register(subparsers: Subparsers) -> None:
    stack = add_group(
        subparsers, "stack", help="Discover, back up and restore whole Docker Compose stacks."
    )
    p = add_command(stack, "discover", stack_discover)
    p.add_argument(
        "--project",
        metavar="NAME",
        help="The Compose project (default: the only one the Docker engine runs).",
    )
    p.add_argument(
        "--preset",
        default="auto",
        metavar="NAME",
        help="What the stack is: auto (recognise it), generic, or dify.",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="Write the plan there (e.g. stackvault.yaml) instead of printing it; an existing "
        "file is kept unless --force.",
    )
    p.add_argument("--force", action="store_true", help="Replace an existing --output file.")
    add_json_option(p)


def stack_discover(
    cli: Cli, *, project: str | None, preset: str, output: str | None, force: bool
) -> None:
    """Read a Compose project from the Docker engine and write a plan to review: which
    sources, how each is captured, which services stop during the cut, which files hold
    secrets (names only)."""
    import datetime
    import os

    from stackvault.errors import UsageError
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.compose import discover
    from stackvault.stack.plan import render_plan
    from stackvault.stack.presets import plan_for

    client = connect()
    try:
        found = discover(client, project)
    finally:
        client.close()
    plan = plan_for(found, preset)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = render_plan(plan, discovered_at=now)
    if output is not None:
        if os.path.exists(output) and not force:
            raise UsageError(
                f"{output} exists; it may hold your edits",
                hint="pass --force to replace it, or write the new plan elsewhere",
            )
        tmp = f"{output}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
    if cli.json:
        cli.emit_json({"plan": plan.to_dict(), "discovered": found.describe(), "output": output})
        return
    if output is None:
        cli.print(text.rstrip("\n"))
    else:
        stops = ", ".join(plan.stop_order()) or "none"
        cli.notice(
            f"wrote the plan of project {plan.project} (preset {plan.preset}) to {output}: "
            f"{len(plan.services)} services, {len(plan.sources)} sources, {len(plan.paths)} "
            f"data directories, {len(plan.config)} config entries; stopped for the cut: {stops}"
        )
    for w in plan.warnings:
        cli.notice(f"warning: {w}")
