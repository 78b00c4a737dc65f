"""The AnythingLLM preset (stack layer): what a restorable AnythingLLM backup must hold.

AnythingLLM (``mintplexlabs/anythingllm``) keeps its state in its **storage directory**
``/app/server/storage`` (``STORAGE_DIR``; ``server/storage`` or ``$STORAGE_LOCATION`` bind
mounted in its own compose file and ``docker run`` line):

- ``anythingllm.db``: SQLite (Prisma) - workspaces, their documents, users, chats, settings;
- ``documents/``: the parsed documents each workspace document points at (``docpath``);
- ``lancedb/``: the default vector store (``VECTOR_DB=lancedb``), a ``<workspace>.lance``
  table per workspace; other ``VECTOR_DB`` values keep it elsewhere;
- ``vector-cache/``, ``models/`` (downloaded embedders), ``assets/``, ``plugins/``,
  ``comkey/``.

Its secrets - ``JWT_SECRET`` (sessions), ``SIG_KEY`` and ``SIG_SALT`` (the encryption of
stored connector and agent credentials) - live in the server's ``.env``, which its compose file
bind mounts at ``/app/server/.env`` (AnythingLLM writes the keys it generates there). Without
that file mounted, generated keys stay in the container and are lost with it.

`refine` records where the storage is, stops the service for the cut, captures the server's
``.env`` as configuration, and warns when the storage or the keys would not be captured.
`restore_checks`, after a restore, finds the keys, reads the restored database and finds every
workspace document's file and every workspace's LanceDB table.
"""

from __future__ import annotations

import posixpath

from stackvault.records.plan import Plan
from stackvault.stack.compose import Project, Service
from stackvault.stack.presets.common import (
    add_secret_names,
    capture_kept,
    data_mount,
    describe_mount,
    note_capture,
    services_running,
    stop_for_cut,
)
from stackvault.stack.presets.restored import RestoredStack
from stackvault.stack.restorereport import Validation

IMAGES = ("mintplexlabs/anythingllm",)
STORAGE_DIR = "/app/server/storage"
SERVER_ENV = "/app/server/.env"
KEYS = ("JWT_SECRET", "SIG_KEY", "SIG_SALT")
"""The keys AnythingLLM needs back: sessions, and the encryption of stored credentials."""
SECRETS = (*KEYS, "OPEN_AI_KEY", "ANTHROPIC_API_KEY", "AUTH_TOKEN", "PINECONE_API_KEY")
CHECKED_DOCUMENTS = 200
"""At most this many workspace documents are looked for after a restore."""


def detect(project: Project) -> bool:
    """An AnythingLLM deployment: a service runs a ``mintplexlabs/anythingllm`` image, or a
    service named ``anythingllm`` has ``STORAGE_DIR``."""
    if services_running(project, IMAGES):
        return True
    svc = project.services.get("anythingllm")
    return svc is not None and "STORAGE_DIR" in svc.env_names


def _services(project: Project) -> list[Service]:
    found = services_running(project, IMAGES)
    if not found and "anythingllm" in project.services:
        found = [project.services["anythingllm"]]
    return found


def _env_names(path: str) -> set[str]:
    """The variable names of the env file ``path`` on this host (empty when unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    names = set()
    for line in lines:
        name, eq, _value = line.strip().removeprefix("export ").partition("=")
        if eq and name and not name.startswith("#"):
            names.add(name.strip())
    return names


def refine(plan: Plan, project: Project) -> None:
    """Record AnythingLLM's storage and keys, stop it for the cut, and warn when either
    would not be captured."""
    services = _services(project)
    storage = project.env.get("STORAGE_DIR") or STORAGE_DIR
    facts: dict[str, object] = {"anythingllm_services": [s.name for s in services]}
    facts["storage_dir"] = storage
    facts["sqlite"] = f"{storage}/anythingllm.db"
    vector_db = (project.env.get("VECTOR_DB") or "lancedb").lower()
    facts["vector_db"] = vector_db
    stop_for_cut(plan, services, "AnythingLLM writes its database, documents and vectors")
    main = services[0] if services else None
    known = set(project.env)
    if main is not None:
        facts["anythingllm_service"] = main.name
        known.update(main.env_names)
        mount = data_mount(main, (storage,))
        if mount is not None:
            facts["storage_capture"] = describe_mount(mount)
            note_capture(
                plan,
                mount,
                f"AnythingLLM storage {storage}: anythingllm.db, documents/, lancedb/, "
                "vector-cache/, models/ (rebuildable)",
            )
        else:
            plan.warnings.append(
                f"service {main.name} has no volume or bind mount at {storage}: its database, "
                "documents and vectors live in the container and are NOT captured; mount a "
                "directory there before backing up"
            )
        server_env = next(
            (m for m in main.mounts if m.type == "bind" and m.destination == SERVER_ENV), None
        )
        if server_env is not None:
            facts["server_env"] = SERVER_ENV
            known.update(_env_names(server_env.source))
            # a file, not a data directory: captured (and restored) as configuration
            plan.paths = [p for p in plan.paths if p.path != server_env.source]
            if server_env.source not in plan.config:
                plan.config.append(server_env.source)
    missing = [k for k in KEYS if k not in known]
    if missing:
        plan.warnings.append(
            f"{', '.join(missing)} not found in .env, the server's {SERVER_ENV} or the "
            "service's environment: AnythingLLM generates them into a file in the container "
            "that is lost with it (stored credentials then cannot be decrypted); set them in "
            f".env, or mount the server's .env at {SERVER_ENV}"
        )
    facts["keys"] = list(KEYS)
    add_secret_names(plan, project, SECRETS)
    plan.secrets = sorted(set(plan.secrets) | (set(KEYS) & known))
    plan.facts.update(facts)


def preflight_problems(plan: Plan) -> list[str]:
    """The storage directory (database, documents, vectors) is not captured."""
    if capture_kept(plan, plan.facts.get("storage_capture")):
        return []
    return [
        f"AnythingLLM's storage {plan.facts.get('storage_dir') or STORAGE_DIR} is not "
        "captured: its database, documents and vectors would be lost"
    ]


# --- after a restore --------------------------------------------------------------------------


def keys_check(stack: RestoredStack) -> Validation:
    """``JWT_SECRET``, ``SIG_KEY`` and ``SIG_SALT`` are set for the restored service: in its
    environment or in its restored server ``.env`` (names checked, values never shown)."""
    service = str(stack.facts.get("anythingllm_service") or "anythingllm")
    have = {k for k, v in stack.env(service).items() if v}
    data = stack.read_file(service, SERVER_ENV, limit=1 << 20)
    if data is not None:
        for line in data.decode("utf-8", "replace").splitlines():
            name, eq, value = line.strip().partition("=")
            if eq and value.strip().strip("'\""):
                have.add(name.strip())
    missing = [k for k in KEYS if k not in have]
    if missing:
        return Validation(
            "anythingllm keys",
            False,
            f"{', '.join(missing)} missing: stored credentials cannot be decrypted and "
            "sessions are invalid",
        )
    return Validation("anythingllm keys", True, f"{', '.join(KEYS)} set")


def storage_check(stack: RestoredStack) -> list[Validation]:
    """The restored database can be read, each workspace document's file (up to
    `CHECKED_DOCUMENTS`) is in ``documents/`` and, with LanceDB, each workspace holding
    documents has its table."""
    facts = stack.facts
    service = str(facts.get("anythingllm_service") or "anythingllm")
    storage = str(facts.get("storage_dir") or STORAGE_DIR)
    db = str(facts.get("sqlite") or f"{storage}/anythingllm.db")
    rows = stack.sqlite_rows(
        service,
        db,
        "SELECT w.slug, d.docpath FROM workspace_documents d JOIN workspaces w "
        f"ON w.id = d.workspaceId ORDER BY d.id LIMIT {CHECKED_DOCUMENTS}",
    )
    workspaces = stack.sqlite_rows(service, db, "SELECT count(*) FROM workspaces")
    if rows is None or workspaces is None:
        return [Validation("anythingllm database", False, f"{db} is missing or unreadable")]
    out = [
        Validation(
            "anythingllm database", True, f"{workspaces[0][0]} workspaces, {len(rows)} documents"
        )
    ]
    missing = [
        str(path)
        for _slug, path in rows
        if not stack.exists(service, posixpath.join(storage, "documents", str(path)))
    ]
    out.append(
        Validation(
            "anythingllm documents",
            not missing,
            f"all {len(rows)} workspace documents are in documents/"
            if not missing
            else f"{len(missing)} of {len(rows)} workspace documents are missing: "
            f"{', '.join(missing[:5])}",
        )
    )
    if facts.get("vector_db", "lancedb") == "lancedb":
        slugs = sorted({str(slug) for slug, _path in rows})
        absent = [
            s for s in slugs if not stack.exists(service, f"{storage}/lancedb/{s}.lance/_versions")
        ]
        out.append(
            Validation(
                "anythingllm vectors",
                not absent,
                f"LanceDB tables of all {len(slugs)} workspaces with documents"
                if not absent
                else f"no LanceDB table for workspace(s) {', '.join(absent[:5])}: re-embed them",
            )
        )
    return out


def restore_checks(stack: RestoredStack) -> list[Validation]:
    """The AnythingLLM checks of a restored stack: its keys, then its storage."""
    return [keys_check(stack), *storage_check(stack)]
