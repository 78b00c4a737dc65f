"""Configuration layer: the file a person edits (repositories, policies with RPO/RTO tiers,
jobs, notifications), validated once where it is read, every mistake named by key and line.

The API for what runs jobs: `load_config` → `Config` (``jobs``, ``job(name)`` →
`EffectiveJob`, every value with its provenance; ``notify`` → `NotifySettings`),
`RepositorySettings.password()`, `NotifyTarget.url()`, `EffectiveJob.ping_url()`.

Modules: ``durations`` (rpo/rto/window notation), ``schedule`` (cron, derivation from the
RPO), ``model`` (the file's entries), ``tiers`` (built-in policies), ``repository`` (locations
and references to secrets), ``notify`` (notification targets), ``job`` (the effective job),
``layers`` (where each value comes from), ``resolve`` (cross-references, derived values),
``problems`` (messages by key and line), ``yamlfile`` (lines of keys), ``load`` (the file),
``render`` (the file ``config init`` writes).
"""

from __future__ import annotations

from stackvault.config.job import CheckSettings, EffectiveJob, Hooks, Retention, Sourced
from stackvault.config.load import DEFAULT_PATH, ENV_CONFIG, Config, config_path, load_config
from stackvault.config.notify import NotifySettings, NotifyTarget
from stackvault.config.repository import PasswordRef, RepositorySettings

__all__ = [
    "DEFAULT_PATH",
    "ENV_CONFIG",
    "CheckSettings",
    "Config",
    "EffectiveJob",
    "Hooks",
    "NotifySettings",
    "NotifyTarget",
    "PasswordRef",
    "RepositorySettings",
    "Retention",
    "Sourced",
    "config_path",
    "load_config",
]
