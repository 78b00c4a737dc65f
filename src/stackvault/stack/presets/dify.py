"""The Dify preset (stack layer): what a restorable Dify backup must hold.

Dify (langgenius/dify, ``docker/docker-compose.yaml``) keeps its state in:

- PostgreSQL databases ``dify`` **and** ``dify_plugin`` (the plugin daemon's, created by it on
  the same server and easily forgotten): the postgres source of the ``db``/``db_postgres``
  service captures every database, and the plan records both names so preflight can check them;
- ``volumes/app/storage``: uploads, ``privkeys/<tenant>/private.pem`` (the per-tenant keys that
  decrypt every stored model and tool credential) and ``.dify_secret_key``, owned by UID 1001;
- ``volumes/plugin_daemon``: installed plugins with symlinks; its ``cwd/`` holds per-plugin
  virtual environments that can be rebuilt (excluding it is offered, not done);
- the vector store of the active profile (``VECTOR_STORE``), a directory or a named volume;
- ``.env`` (``SECRET_KEY`` and the other secrets), compose files, ``nginx/``, ``ssrf_proxy/``,
  ``volumes/sandbox/{conf,dependencies}``, ``volumes/certbot``, ``envs/``;
- Redis: optional (sessions, the task queue).

`refine` adds the configuration directories that exist, records those facts, and warns when
``SECRET_KEY`` is unset or the public default, and when uploads live in an external store.
`tenant_keys_check`, after a restore, finds every tenant's private key file.
`backup_facts` records, at backup time, what the operator chose to leave out (``cwd/``), so
the restore can say what must be rebuilt.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from stackvault.records.plan import POSTGRES, Plan
from stackvault.stack.classify import image_repository
from stackvault.stack.compose import Project
from stackvault.stack.restorereport import Validation

if TYPE_CHECKING:
    pass

DEFAULT_SECRET_KEY = "sk-9f73s3ljTXVcMT3Blb3ljTqtsKiGHXVcMT3BlbkFJLK7U"
"""The value shipped in Dify's ``.env.example`` and compose defaults: public."""
DATABASES = ("dify", "dify_plugin")
CONFIG_DIRS = (
    "envs",
    "nginx",
    "ssrf_proxy",
    "volumes/sandbox/conf",
    "volumes/sandbox/dependencies",
    "volumes/certbot",
    "volumes/local_sandbox/credentials",
)
OUTBOUND = (
    "MAIL_TYPE",
    "MAIL_DEFAULT_SEND_FROM",
    "SMTP_*",
    "RESEND_*",
    "SENDGRID_*",
    "*WEBHOOK*",
    "CODE_EXECUTION_ENDPOINT",
    "CODE_EXECUTION_API_KEY",
    "SSRF_PROXY_HTTP_URL",
    "SSRF_PROXY_HTTPS_URL",
    "ENABLE_NETWORK",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "*SENTRY_DSN",
)
"""The containers' variables of outbound integrations (shell patterns), emptied by a restore
drill: mail (SMTP, Resend, SendGrid), webhooks, code execution and the sandbox's egress
(``ENABLE_NETWORK`` and its proxies), the SSRF proxy, error reporting. Model provider keys
stay."""
STORAGE = "volumes/app/storage"
PLUGIN_STORAGE = "volumes/plugin_daemon"
_DIFY_SERVICES = {"api", "worker", "web", "plugin_daemon"}


def detect(project: Project) -> bool:
    """A Dify deployment: a ``langgenius/dify-*`` image, or its service names."""
    if any(
        image_repository(s.image).startswith("langgenius/dify") for s in project.services.values()
    ):
        return True
    return len(_DIFY_SERVICES & set(project.services)) >= 3


def refine(plan: Plan, project: Project) -> None:
    directory = plan.directory
    env = project.env
    facts: dict[str, object] = {"databases": list(DATABASES)}
    if directory:
        for rel in CONFIG_DIRS:
            path = os.path.join(directory, rel)
            if os.path.exists(path) and path not in plan.config:
                plan.config.append(path)
        storage = os.path.join(directory, STORAGE)
        facts["storage"] = storage
        facts["privkeys"] = os.path.join(storage, "privkeys")
        plugin = os.path.join(directory, PLUGIN_STORAGE)
        for p in plan.paths:
            if p.path == storage:
                p.note = "uploads, privkeys/<tenant>/private.pem, .dify_secret_key (UID 1001)"
            elif p.path == plugin:
                p.note = (
                    "plugins (symlinks kept); add 'cwd' to exclude to skip the rebuildable "
                    "virtual environments"
                )
        if not any(p.path == storage for p in plan.paths):
            plan.warnings.append(
                f"no service mounts {storage}: uploads and the tenants' private keys "
                "(privkeys/) would not be captured; add it to paths"
            )
    pg = [s for s in plan.services.values() if s.role == POSTGRES]
    if not pg:
        plan.warnings.append(
            "no PostgreSQL service was found: the dify and dify_plugin databases would not be "
            "captured (an external database must be added to sources by hand)"
        )
    for s in plan.sources:
        if plan.services.get(s.service) and plan.services[s.service].role == POSTGRES:
            s.note = "every database: dify and dify_plugin, with the roles"
    secret = env.get("SECRET_KEY")
    if project.env_file is not None and not secret:
        plan.warnings.append(
            "SECRET_KEY is not set in .env: Dify then uses a default or generated key; pin it "
            "(openssl rand -base64 42) so that a restore can decrypt what the old one signed"
        )
    elif secret == DEFAULT_SECRET_KEY:
        plan.warnings.append(
            "SECRET_KEY in .env is the public default from .env.example; set your own "
            "(openssl rand -base64 42) - sessions and signed URLs are forgeable with it"
        )
    storage_type = env.get("STORAGE_TYPE", "opendal")
    scheme = env.get("OPENDAL_SCHEME", "fs")
    if storage_type not in ("local", "opendal") or (storage_type == "opendal" and scheme != "fs"):
        plan.warnings.append(
            f"uploads are stored externally (STORAGE_TYPE={storage_type}"
            + (f", OPENDAL_SCHEME={scheme}" if storage_type == "opendal" else "")
            + "): add that bucket to sources (s3://BUCKET/PREFIX?endpoint=…), or the files "
            "the database refers to are not in the backup"
        )
    facts["vector_store"] = env.get("VECTOR_STORE", "weaviate")
    plan.facts.update(facts)


def backup_facts(plan: Plan) -> dict[str, object]:
    """Facts of this cut for the restore: ``plugins_rebuild`` when the plan excludes the
    plugin daemon's ``cwd/`` (the plugins' virtual environments, rebuilt at first start)."""
    if not plan.directory:
        return {}
    plugin = os.path.join(plan.directory, PLUGIN_STORAGE)
    for p in plan.paths:
        if os.path.normpath(p.path) == plugin and any(e.strip("/") == "cwd" for e in p.exclude):
            return {"plugins_rebuild": True}
    return {}


def tenant_keys_check(url: str, keys_dir: str) -> Validation:
    """The validation: every tenant of the ``dify`` database of the PostgreSQL source
    ``url`` (`stackvault.stack.reach.source_url`) has ``keys_dir/<tenant>/private.pem``
    (without it, the tenant's stored model and tool credentials cannot be decrypted)."""
    from stackvault.stack.reach import postgres_query

    out = postgres_query(url, "dify", "SELECT id FROM tenants")
    subject = "dify tenants' private keys"
    if out is None:
        return Validation(subject, True, "no tenants table (nothing to check)")
    tenants = [t for t in out.split() if t]
    missing = [t for t in tenants if not os.path.isfile(os.path.join(keys_dir, t, "private.pem"))]
    if not missing:
        message = f"all {len(tenants)} tenants have privkeys/<tenant>/private.pem"
    else:
        message = (
            f"{len(missing)} of {len(tenants)} tenants have no private key: "
            f"{', '.join(missing[:5])} (their stored credentials cannot be decrypted)"
        )
    return Validation(subject, not missing, message)
