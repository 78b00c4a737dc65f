"""`stackvault stack ...` (cli layer): whole Compose stacks."""

from __future__ import annotations

from stackvault.cli.commands import stackrestore
from stackvault.cli.parser import add_command, add_group, add_json_option

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up time)
if TYPE_CHECKING:
    from stackvault.cli.context import Cli
    from stackvault.cli.parser import Parser, Subparsers
    from stackvault.records.stack import ServiceDowntime
    from stackvault.stack.preflight import Check


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
        help="What the stack is: auto (recognise it), generic, dify, n8n, open-webui, "
        "anythingllm or ragflow.",
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

    p = add_command(stack, "preflight", stack_preflight)
    _config_option(p)
    add_json_option(p)

    p = add_command(stack, "backup", stack_backup)
    _config_option(p)
    p.add_argument(
        "--consistency",
        choices=("strict", "online"),
        default=None,
        help="Override the plan's: strict stops the writers for the cut, online stops nothing.",
    )
    p.add_argument(
        "--tag", dest="tags", action="append", default=[], metavar="TAG", help="Add a tag."
    )
    p.add_argument(
        "--with-images",
        action="store_true",
        help="Also store the images the services run (read before the cut; deduplicated), "
        "so that a host without registry access can restore the stack.",
    )
    add_json_option(p)
    stackrestore.register(stack)


def _config_option(p: Parser) -> None:
    p.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="The plan written by stack discover or stack restore (default: "
        "$STACKVAULT_STACK_CONFIG, else stackvault.yaml in the current directory).",
    )


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
    from stackvault.stack.reach import engine_views

    client = connect()
    try:
        found = discover(client, project)
        plan = plan_for(found, preset, engine_views(client))
    finally:
        client.close()
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
        for src in plan.sources:  # how each server is reached: for a person to check
            if src.port or src.socket or src.password_from:
                socket = f", socket {src.socket}" if src.socket else ""
                cli.notice(
                    f"  {src.name}: port {src.port or 'default'}{socket}, password from "
                    f"{src.password_from or 'the default'} ({src.found or 'as written'})"
                )
    for w in plan.warnings:
        cli.notice(f"warning: {w}")


def stack_preflight(cli: Cli, *, config: str | None) -> int:
    """Check that a stack backup would work: the engine, every service, the database tools and
    credentials in the containers, the data directories, the repository. Exit 1 if a problem
    would make the backup fail or be incomplete."""
    import os

    from stackvault.sources.docker.engine import connect
    from stackvault.stack.plan import find_plan
    from stackvault.stack.preflight import ERROR, OK, WARNING, preflight

    plan = find_plan(config, os.environ)
    client = connect()
    try:
        checks, _found = preflight(plan, client)
    finally:
        client.close()
    checks.append(_repository_check(cli, plan.project))
    bad = [c for c in checks if c.status == ERROR]
    if cli.json:
        cli.emit_json({"ok": not bad, "checks": [c.to_dict() for c in checks]})
    else:
        marks = {OK: "ok  ", WARNING: "warn", ERROR: "FAIL"}
        for c in checks:
            line = f"{marks.get(c.status, c.status)}  {c.subject}: {c.message}"
            cli.print(line + (f" -> {c.fix}" if c.fix and c.status != OK else ""))
        warned = sum(1 for c in checks if c.status == WARNING)
        cli.notice(
            f"preflight of {plan.project}: {len(bad)} problem(s), {warned} warning(s)"
            + ("; the backup would fail or be incomplete" if bad else "")
        )
    return 1 if bad else 0


def _repository_check(cli: Cli, project: str) -> Check:
    import os
    import shutil

    from stackvault.errors import StackvaultError
    from stackvault.stack.preflight import ERROR, OK, WARNING, Check, space_check

    try:
        location = cli.location()
    except StackvaultError as exc:
        return Check("repository", WARNING, exc.message, exc.hint or "")
    try:
        with cli.open_repo(index=False) as repo:
            describe = repo.store.describe()
            if "://" in location or not os.path.isdir(location):
                return Check("repository", OK, f"{describe} opens")
            tag = f"stack:{project}"
            recent = [s for s in repo.list_snapshots() if tag in s.tags][-10:]
    except StackvaultError as exc:
        return Check("repository", ERROR, exc.message, exc.hint or "")
    stored = [int(s.summary.get("data_added_stored") or 0) for s in recent]
    return space_check(describe, shutil.disk_usage(location).free, stored)


def stack_backup(
    cli: Cli, *, config: str | None, consistency: str | None, tags: list[str], with_images: bool
) -> int:
    """Back up the whole stack of the plan in one consistent cut: preflight, stop the writers
    (strict), dump the databases, read volumes, data directories and configuration, start the
    writers again, save one snapshot with the stack manifest."""
    import os

    from stackvault.cli.commands.backup import make_progress
    from stackvault.cli.render import human_bytes
    from stackvault.errors import EXIT_INCOMPLETE
    from stackvault.sources.docker.engine import connect
    from stackvault.stack.backup import backup_stack
    from stackvault.stack.plan import find_plan

    plan = find_plan(config, os.environ)
    client = connect()
    try:
        with cli.open_repo(lock="stack backup") as repo:
            progress = make_progress(cli, "stack backup")
            done = backup_stack(
                repo,
                plan,
                client,
                consistency=consistency,
                tags=tags,
                progress=progress,
                notice=cli.notice,
                with_images=with_images,
            )
    finally:
        client.close()
    snap, m = done.snapshot, done.manifest
    if cli.json:
        cli.emit_json(
            {
                "snapshot": snap.id,
                "complete": snap.complete,
                "problems": snap.problems,
                "summary": snap.summary,
                "manifest": m.to_dict(),
                "checks": [c.to_dict() for c in done.checks],
            }
        )
    else:
        for a in snap.artifacts:
            state = "ok" if a.complete else f"FAILED: {a.error}"
            size = human_bytes(a.bytes or 0)
            cli.print(f"artifact {a.name} ({a.kind}): {size}, {state}")
        if m.consistency == "strict":
            down = m.downtime
            cli.print(
                f"writers down for {down.seconds if down else 0:.2f} s "
                f"({', '.join(down.containers if down else ()) or 'none stopped'})"
            )
            for name, svc in ((down.services if down else None) or {}).items():
                cli.print(downtime_line(name, svc))
        else:
            cli.print(f"online: parts captured over {m.skew_s or 0:.2f} s")
        for h in m.hooks:
            state = "ok" if h.ok else f"FAILED ({h.error})"
            cli.print(f"hook {h.phase} of {h.service} ({h.where}): {state}")
        if m.app.alembic_version:
            cli.print(f"application schema (alembic_version): {m.app.alembic_version}")
        cli.print(
            f"stack snapshot {snap.short_id} of {plan.project} saved"
            + ("" if snap.complete else " INCOMPLETE")
            + f" in {m.timings.total_s or 0:.1f} s"
        )
    return EXIT_INCOMPLETE if not snap.complete else 0


def downtime_line(name: str, svc: ServiceDowntime) -> str:
    """``  NAME: stop|pause, level L, down X.XX s[, killed after T s]`` for a service a strict
    cut stopped or paused (``down not started again`` when the backup did not start it)."""
    took = "not started again" if svc.downtime_s is None else f"{svc.downtime_s:.2f} s"
    killed = f", killed after {svc.timeout_s:g} s" if svc.killed else ""
    return f"  {name}: {svc.mode}, level {svc.level}, down {took}{killed}"
