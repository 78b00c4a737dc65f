"""From a file's entries to effective jobs (config layer): cross-references and provenance.

Values come from layers (`stackvault.config.layers`). A schedule no layer gives is derived
from the RPO (`stackvault.config.schedule`); a window no layer gives is the RPO minus the
schedule's longest gap (half that gap when the gap is the whole RPO).

Rules (each broken one is a `Problem`, all found in one pass): policy and repository names
must exist; ``extends`` must not loop; every policy has an ``rpo`` and an ``rto``; a job's
copies are neither its primary nor repeated; retention keys name ``default`` or a repository
a job of that policy (or that job) uses; a schedule whose longest gap exceeds the RPO is an
error, one whose gap plus window exceeds it a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from stackvault.config.durations import Span, span_of_seconds
from stackvault.config.job import (
    CheckSettings,
    DrillSettings,
    EffectiveJob,
    Hooks,
    Retention,
    Sourced,
)
from stackvault.config.layers import (
    Layer,
    check_settings,
    drill_settings,
    first_schedule,
    first_span,
    policy_chain,
    retention_for,
)
from stackvault.config.model import JobEntry, PolicyEntry
from stackvault.config.problems import Problem
from stackvault.config.repository import RepositorySettings, secret_ref
from stackvault.config.schedule import Schedule, derive_schedule
from stackvault.config.tiers import DEFAULT_RETENTION, TIERS
from stackvault.config.yamlfile import KeyPath
from stackvault.errors import StackvaultError
from stackvault.records.drill import drillable_source
from stackvault.redact import redact


@dataclass
class Outcome:
    """What resolving found: the jobs, problems (errors) and warnings."""

    jobs: dict[str, EffectiveJob] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class _Values:
    rpo: Sourced[Span]
    rto: Sourced[Span]
    schedule: Sourced[Schedule]
    window: Sourced[Span]
    check: CheckSettings
    drill: DrillSettings


class Resolver:
    """Resolves valid entries; names of invalid ones (``broken_*``) are known but skipped."""

    def __init__(
        self,
        repositories: dict[str, RepositorySettings],
        policies: dict[str, PolicyEntry],
        jobs: dict[str, JobEntry],
        *,
        broken_policies: set[str],
        broken_repositories: set[str],
        policy_order: list[str],
        repository_order: list[str],
        base_dir: str,
    ) -> None:
        self.repositories = repositories
        self.policies = policies
        self.jobs = jobs
        self.broken_policies = broken_policies
        self.broken_repositories = broken_repositories
        self.policy_names = [*TIERS, *(n for n in policy_order if n not in TIERS)]
        self.repository_order = repository_order
        self.base_dir = base_dir
        self.out = Outcome()

    # --- policies ------------------------------------------------------------------------

    def check_policies(self) -> None:
        """The problems of each file policy on its own (extends, rpo, rto, schedule)."""
        for name, entry in self.policies.items():
            parent = entry.extends
            if (
                parent is not None
                and parent != name
                and parent not in self.policies
                and parent not in TIERS
            ):
                if parent not in self.broken_policies:
                    self._error(
                        ("policies", name, "extends"),
                        f"unknown policy {parent!r} (known: {', '.join(self.policy_names)})",
                    )
                continue
            if policy_chain(name, self.policies) is None:
                if parent is not None and self._loops(name):
                    self._error(("policies", name, "extends"), "extends itself through a loop")
                continue
            layers = policy_chain(name, self.policies)
            assert layers is not None
            self.values(layers, ("policies", name))

    def _loops(self, name: str) -> bool:
        seen: set[str] = set()
        current: str | None = name
        while current in self.policies and current not in seen:
            seen.add(current)
            nxt = self.policies[current].extends
            current = None if nxt == current else nxt
        return current is not None and current in seen

    def values(self, layers: list[Layer], where: KeyPath | None) -> _Values | None:
        """The policy values of ``layers``; a problem at ``where`` (unless None: said
        already) if rpo or rto is missing."""
        rpo = first_span(layers, "rpo")
        rto = first_span(layers, "rto")
        for key, found in (("rpo", rpo), ("rto", rto)):
            if found is None and where is not None:
                self._error(
                    where,
                    f"gives no {key}: set {key}, or extends: a policy that has one "
                    f"({', '.join(TIERS)})",
                )
        if rpo is None:
            return None
        rpo_value: Span = rpo[0]
        schedule = first_schedule(layers)
        if schedule is None:
            sched = Sourced(derive_schedule(rpo_value), "derived from rpo")
        else:
            sched = Sourced(schedule[0], schedule[1].label)
            self._check_schedule(schedule[0], schedule[1], rpo_value)
        window = first_span(layers, "window")
        gap = sched.value.longest_gap
        if window is None:
            left = rpo_value.seconds - gap
            win = Sourced(
                span_of_seconds(left if left >= 60 else max(gap // 2, 60)),
                "derived from rpo and schedule",
            )
        else:
            win = Sourced(window[0], window[1].label)
            if gap <= rpo_value.seconds < gap + window[0].seconds and window[1].path:
                self._warn(
                    (*window[1].path, "window"),
                    f"a run every {span_of_seconds(gap)} that may take {window[0]} can leave "
                    f"the newest restore point older than the rpo {rpo_value}",
                )
        if rto is None:
            return None
        rto_sourced = Sourced(rto[0], rto[1].label)
        return _Values(
            Sourced(rpo_value, rpo[1].label),
            rto_sourced,
            sched,
            win,
            check_settings(layers),
            drill_settings(layers, rto_sourced),
        )

    def _check_schedule(self, schedule: Schedule, layer: Layer, rpo: Span) -> None:
        if layer.path is None:
            return
        gap = schedule.longest_gap
        if gap > rpo.seconds:
            self._error(
                (*layer.path, "schedule"),
                f"'{schedule.cron}' leaves up to {span_of_seconds(gap)} between runs, more than "
                f"the rpo {rpo}: remove it to derive one, or run more often",
            )
        elif gap == rpo.seconds:
            self._warn(
                (*layer.path, "schedule"),
                f"'{schedule.cron}' runs only as often as the rpo {rpo}: the time a run takes "
                "makes the newest restore point older than the rpo",
            )

    # --- jobs ----------------------------------------------------------------------------

    def check_retention_keys(self) -> None:
        """Every retention key names ``default`` or a repository a job of it uses."""
        users: dict[str, set[str]] = {}
        for job in self.jobs.values():
            for layer in policy_chain(job.policy, self.policies) or []:
                if layer.path is not None:
                    users.setdefault(str(layer.path[1]), set()).update(_repos(job))
        for name, entry in self.policies.items():
            for repo in entry.retention or {}:
                path = ("policies", name, "retention", repo)
                if self._unknown_repo(repo, path):
                    continue
                used = users.get(name)
                if used is not None and repo != DEFAULT_RETENTION and repo not in used:
                    self._error(path, f"no job of policy {name} uses repository {repo!r}")

    def _unknown_repo(self, repo: str, path: KeyPath) -> bool:
        if repo == DEFAULT_RETENTION or repo in self.repositories:
            return False
        if repo not in self.broken_repositories:
            self._error(path, f"unknown repository {repo!r} ({self._known_repos()})")
        return True

    def _known_repos(self) -> str:
        names = [n for n in self.repository_order if n != DEFAULT_RETENTION]
        return f"known: {', '.join(names)}" if names else "no repositories are defined"

    def job(self, name: str, entry: JobEntry) -> None:
        """Resolve job ``name``, or report why it cannot be."""
        here: KeyPath = ("jobs", name)
        policy_layers = policy_chain(entry.policy, self.policies)
        if policy_layers is None and entry.policy not in (
            *self.policies,
            *self.broken_policies,
        ):
            self._error(
                (*here, "policy"),
                f"unknown policy {entry.policy!r} (known: {', '.join(self.policy_names)})",
            )
        primary = self._repo(entry.repository, (*here, "repository"))
        copies: list[RepositorySettings] = []
        ok = primary is not None
        for index, copy in enumerate(entry.copies):
            path = (*here, "copies", index)
            if copy == entry.repository:
                self._error(path, f"{copy!r} is the job's repository; a copy must be another one")
                ok = False
            elif copy in entry.copies[:index]:
                self._error(path, f"{copy!r} is listed twice")
                ok = False
            else:
                settings = self._repo(copy, path)
                ok = ok and settings is not None
                if settings is not None:
                    copies.append(settings)
        for repo in entry.retention or {}:
            path = (*here, "retention", repo)
            if not self._unknown_repo(repo, path) and repo not in (
                DEFAULT_RETENTION,
                *_repos(entry),
            ):
                used = ", ".join(dict.fromkeys(_repos(entry)))
                self._error(
                    path,
                    f"repository {repo!r} is not one this job uses ({used})",
                )
        self._check_what(name, entry)
        if policy_layers is None or not ok or primary is None:
            return
        layers = [Layer(f"job {name}", entry, here), *policy_layers]
        values = self.values(layers, None)
        if values is None:
            return
        undrillable = [s for s in entry.sources if not drillable_source(s)]
        if values.drill.every is not None and not entry.stack_plan and undrillable:
            self._error(
                (*here, "drill") if entry.drill is not None else (*here, "policy"),
                f"drill.every ({values.drill.every.source}) asks for restore drills, which "
                "restore a stack, or PostgreSQL and MySQL sources and paths, not "
                f"{redact(undrillable[0])}: give this job a stack_plan, or leave drills out",
            )
            return
        retention = self._retention(layers, [primary.name, *(c.name for c in copies)], here)
        if retention is None:
            return
        self.out.jobs[name] = EffectiveJob(
            name=name,
            policy=entry.policy,
            repository=primary,
            copies=tuple(copies),
            rpo=values.rpo,
            rto=values.rto,
            schedule=values.schedule,
            window=values.window,
            retention=retention,
            check=values.check,
            drill=values.drill,
            hooks=_hooks(entry, name),
            stack_plan=(
                os.path.join(self.base_dir, entry.stack_plan) if entry.stack_plan else None
            ),
            sources=tuple(entry.sources),
            paths=tuple(entry.paths),
            ping=secret_ref(entry.ping_url_file, entry.ping_url_env, entry.ping_url_command),
        )

    def _repo(self, name: str, path: KeyPath) -> RepositorySettings | None:
        found = self.repositories.get(name)
        if found is None and name not in self.broken_repositories:
            self._error(path, f"unknown repository {name!r} ({self._known_repos()})")
        return found

    def _retention(
        self, layers: list[Layer], repos: list[str], here: KeyPath
    ) -> dict[str, Sourced[Retention]] | None:
        out: dict[str, Sourced[Retention]] = {}
        for repo in repos:
            found = retention_for(layers, repo)
            if found is None:
                self._error(
                    (*here, "policy"),
                    f"no retention for repository {repo!r}: give retention.{repo} or "
                    f"retention.{DEFAULT_RETENTION} in the job or its policy",
                )
                continue
            out[repo] = found
        return out if len(out) == len(repos) else None

    def _check_what(self, name: str, entry: JobEntry) -> None:
        for index, path in enumerate(entry.paths):
            if not os.path.isabs(path):
                self._error(("jobs", name, "paths", index), f"{path!r} must be an absolute path")
        from stackvault.sources.registry import open_source

        for index, url in enumerate(entry.sources):
            try:
                open_source(url)
            except StackvaultError as exc:
                self._error(("jobs", name, "sources", index), str(exc))

    def check_plans(self) -> None:
        """Each job's stack plan file reads as a valid plan (`stackvault.stack.plan`)."""
        from stackvault.stack.plan import load_plan

        for name, entry in self.jobs.items():
            if entry.stack_plan is None:
                continue
            try:
                load_plan(os.path.join(self.base_dir, entry.stack_plan))
            except StackvaultError as exc:
                text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                self._error(("jobs", name, "stack_plan"), text)

    def _error(self, path: KeyPath, message: str) -> None:
        problem = Problem(path, message)
        if problem not in self.out.problems:
            self.out.problems.append(problem)

    def _warn(self, path: KeyPath, message: str) -> None:
        problem = Problem(path, message)
        if problem not in self.out.warnings:
            self.out.warnings.append(problem)


def _repos(job: JobEntry) -> list[str]:
    return [job.repository, *job.copies]


def _hooks(entry: JobEntry, name: str) -> Hooks:
    if entry.hooks is None:
        return Hooks()

    def argv(command: str | list[str] | None) -> tuple[str, ...] | None:
        if command is None:
            return None
        return ("sh", "-c", command) if isinstance(command, str) else tuple(command)

    return Hooks(
        argv(entry.hooks.before),
        argv(entry.hooks.after),
        argv(entry.hooks.on_failure),
        source=f"job {name}",
    )
