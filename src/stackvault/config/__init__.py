"""Configuration layer: the file a person edits (repositories, policies with RPO/RTO tiers,
jobs), validated once where it is read, every mistake named by key and line.

The API for what runs jobs: `load_config` → `Config` (``jobs``, ``job(name)`` →
`EffectiveJob`, every value with its provenance), `RepositorySettings.password()`.

Modules: ``durations`` (rpo/rto/window notation), ``schedule`` (cron, derivation from the
RPO), ``model`` (the file's entries), ``tiers`` (built-in policies), ``repository`` (locations
and password references), ``job`` (the effective job), ``layers`` (where each value comes
from), ``resolve`` (cross-references, derived values), ``problems`` (messages by key and line),
``yamlfile`` (lines of keys), ``load`` (the file), ``render`` (the file ``config init`` writes).
"""

from __future__ import annotations

from stackvault.config.job import CheckSettings, EffectiveJob, Hooks, Retention, Sourced
from stackvault.config.load import DEFAULT_PATH, ENV_CONFIG, Config, config_path, load_config
from stackvault.config.repository import PasswordRef, RepositorySettings

__all__ = [
    "DEFAULT_PATH",
    "ENV_CONFIG",
    "CheckSettings",
    "Config",
    "EffectiveJob",
    "Hooks",
    "PasswordRef",
    "RepositorySettings",
    "Retention",
    "Sourced",
    "config_path",
    "load_config",
]
