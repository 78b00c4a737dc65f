"""Reading the configuration file (config layer): `load_config` and `Config`.

The file has three sections, each a mapping by name: ``repositories``, ``policies``, ``jobs``,
and an optional ``notify`` (one entry: targets, reminders, digest; `stackvault.config.notify`).
Every entry is validated on its own (`stackvault.config.model`), then the references between
them (`stackvault.config.resolve`); every problem of the file is collected and raised in one
`ConfigError`, one line each, as ``FILE:LINE: KEY: MESSAGE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from stackvault.config.job import EffectiveJob
from stackvault.config.model import JobEntry, NotifyEntry, PolicyEntry, RepositoryEntry
from stackvault.config.notify import NotifySettings, notify_settings
from stackvault.config.problems import Problem, format_problems, unknown_key, validation_problems
from stackvault.config.repository import (
    RepositorySettings,
    check_location,
    is_local,
    location_with_class,
    secret_ref,
)
from stackvault.config.resolve import Resolver
from stackvault.config.tiers import DEFAULT_RETENTION, TIERS
from stackvault.config.yamlfile import YamlFile, read_yaml
from stackvault.errors import ConfigError

DEFAULT_PATH = "/etc/stackvault/stackvault.yaml"
ENV_CONFIG = "STACKVAULT_CONFIG"
SECTIONS = ("repositories", "policies", "jobs")
"""The sections that are mappings of named entries."""
TOP_KEYS = (*SECTIONS, "notify")
"""Every key the file's top level may have."""


def config_path(given: str | None = None) -> str:
    """The file to read: ``given`` (``--config``), else ``$STACKVAULT_CONFIG``, else
    `DEFAULT_PATH`."""
    return given or os.environ.get(ENV_CONFIG) or DEFAULT_PATH


@dataclass(frozen=True)
class Config:
    """A valid configuration: repositories by name, the policy names (built-in tiers first),
    the jobs resolved, warnings (``FILE:LINE: KEY: MESSAGE``) that do not stop it, and where
    notifications go (``notify``: no targets when the file has no ``notify:``)."""

    path: str
    repositories: dict[str, RepositorySettings]
    policies: tuple[str, ...]
    jobs: dict[str, EffectiveJob]
    warnings: tuple[str, ...] = field(default=())
    notify: NotifySettings = field(default_factory=NotifySettings)

    def job(self, name: str) -> EffectiveJob:
        """The job ``name``; `ConfigError` naming the known jobs otherwise."""
        found = self.jobs.get(name)
        if found is None:
            known = ", ".join(self.jobs) or "none"
            raise ConfigError(
                f"there is no job {name!r} in {self.path} (jobs: {known})",
                hint="see them with: stackvault config check",
            )
        return found


def load_config(path: str | None = None, *, check_files: bool = True) -> Config:
    """Read and validate the configuration file ``path`` (default: `config_path`).

    ``check_files``: also read each job's stack plan file and validate it. Raises
    `ConfigError` with every problem, one a line."""
    file = read_yaml(config_path(path))
    return config_from_yaml(file, check_files=check_files)


def config_from_yaml(file: YamlFile, *, check_files: bool = True) -> Config:
    """Validate the parsed file ``file`` (see `load_config`)."""
    problems: list[Problem] = [
        Problem(p, f"{p[-1]!s} is given twice in this mapping", line) for p, line in file.duplicates
    ]
    doc = file.doc if file.doc is not None else {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{file.name}:1: the file must be a mapping of {', '.join(SECTIONS)}")
    if "project" in doc and "preset" in doc and not any(k in doc for k in SECTIONS):
        raise ConfigError(
            f"{file.name} is a stack plan (written by stack discover), not a configuration file",
            hint="name it in a job's stack_plan; write a configuration with: stackvault config "
            "init --stack-plan " + file.name,
        )
    for key in doc:
        if key not in TOP_KEYS:
            problems.append(Problem((key,), unknown_key(key, TOP_KEYS)))
    sections: dict[str, dict[str, object]] = {}
    for section in SECTIONS:
        value = doc.get(section)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            problems.append(Problem((section,), "must be a mapping of names"))
            value = {}
        sections[section] = value
    if not sections["jobs"] and "jobs" not in [p.path[0] for p in problems]:
        problems.append(Problem(("jobs",), "defines no job: add one under jobs"))

    repos, broken_repos = _entries(
        sections["repositories"], RepositoryEntry, "repositories", problems
    )
    policies, broken_policies = _entries(sections["policies"], PolicyEntry, "policies", problems)
    jobs, _ = _entries(sections["jobs"], JobEntry, "jobs", problems)
    notify = _notify(doc.get("notify"), problems)
    settings = _repositories(repos, problems, broken_repos)
    resolver = Resolver(
        settings,
        policies,
        jobs,
        broken_policies=broken_policies,
        broken_repositories=broken_repos,
        policy_order=list(sections["policies"]),
        repository_order=list(sections["repositories"]),
        base_dir=os.path.dirname(os.path.abspath(file.name)),
    )
    resolver.check_policies()
    resolver.check_retention_keys()
    for name, entry in jobs.items():
        resolver.job(name, entry)
    if check_files:
        resolver.check_plans()
    problems.extend(resolver.out.problems)
    if problems:
        lines = format_problems(problems, file)
        count = f"{len(lines)} problem{'s' if len(lines) > 1 else ''}"
        raise ConfigError(f"{file.name}: {count}:\n" + "\n".join(lines))
    return Config(
        path=file.name,
        repositories=settings,
        policies=tuple(resolver.policy_names),
        jobs=resolver.out.jobs,
        warnings=tuple(format_problems(resolver.out.warnings, file)),
        notify=notify,
    )


M = TypeVar("M", bound=BaseModel)


def _entries(
    section: dict[str, object], model: type[M], name: str, problems: list[Problem]
) -> tuple[dict[str, M], set[str]]:
    """The valid entries of ``section`` and the names of the others (their problems added)."""
    valid: dict[str, M] = {}
    broken: set[str] = set()
    for key, value in section.items():
        try:
            valid[key] = model.model_validate(value)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, model, (name, key)))
            broken.add(key)
    return valid, broken


def _notify(value: object, problems: list[Problem]) -> NotifySettings:
    """The ``notify:`` section (its problems added; left out or broken: no targets)."""
    if value is None:
        return NotifySettings()
    try:
        entry = NotifyEntry.model_validate(value)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, NotifyEntry, ("notify",)))
        return NotifySettings()
    return notify_settings(entry)


def _repositories(
    entries: dict[str, RepositoryEntry], problems: list[Problem], broken: set[str]
) -> dict[str, RepositorySettings]:
    out: dict[str, RepositorySettings] = {}
    for name, entry in entries.items():
        here = ("repositories", name)
        if name == DEFAULT_RETENTION or name in TIERS:
            what = "retention rules for every repository" if name == DEFAULT_RETENTION else ""
            problems.append(Problem(here, f"the name {name!r} is reserved ({what or 'a tier'})"))
            broken.add(name)
            continue
        wrong = check_location(entry.url)
        if wrong is not None:
            problems.append(Problem((*here, "url"), wrong))
            broken.add(name)
            continue
        if entry.storage_class is not None:
            if is_local(entry.url):
                problems.append(
                    Problem(
                        (*here, "storage_class"),
                        "applies to S3 repositories only; remove it for a local path",
                    )
                )
                broken.add(name)
                continue
            location = location_with_class(entry.url, entry.storage_class)
            wrong = (
                "is given twice: here and as the URL's storage-class option; keep one"
                if "storage-class=" in entry.url
                else check_location(location)
            )
            if wrong:
                problems.append(Problem((*here, "storage_class"), wrong))
                broken.add(name)
                continue
        else:
            location = entry.url
        ref = secret_ref(entry.password_file, entry.password_env, entry.password_command)
        assert ref is not None  # the entry gives exactly one (`RepositoryEntry`)
        out[name] = RepositorySettings(
            name=name,
            url=entry.url,
            location=location,
            password_ref=ref,
            storage_class=entry.storage_class,
        )
    return out
