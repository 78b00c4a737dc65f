"""The Open WebUI preset (stack layer): what a restorable Open WebUI backup must hold.

Open WebUI (``ghcr.io/open-webui/open-webui``, tags ``main``, ``cuda``, ``ollama``, ...) keeps
its state in its **data directory** ``/app/backend/data`` (``DATA_DIR``; the named volume
``open-webui`` in its own compose file):

- ``webui.db``: SQLite, the default - users (the first is the admin), chats, files,
  knowledge, settings; or PostgreSQL when ``DATABASE_URL`` is a ``postgresql://`` URL;
- ``uploads/``: the uploaded files the ``file`` table names by path;
- ``vector_db/``: the default vector store (Chroma: ``chroma.sqlite3`` and its segment
  directories); other ``VECTOR_DB`` values (``qdrant``, ``milvus``, ``pgvector``, ...) keep it
  in their own service;
- ``cache/``: rebuildable (embedding models, audio).

``WEBUI_SECRET_KEY`` signs the sessions (JWT) and encrypts stored OAuth tokens; unset, the
image generates ``/app/backend/.webui_secret_key`` *outside* the data directory, lost with
the container. An ``ollama`` service (``ollama/ollama``) keeps the models in
``/root/.ollama``: large, and can be pulled again.

`refine` records where the data lives, stops the service for the cut and warns about the
key, an uncaptured data directory and the models. `restore_checks`, after a restore, reads
the restored database: it has users, every upload it names is there, the vector store is.
"""

from __future__ import annotations

import posixpath

from stackvault.records.plan import POSTGRES, Plan
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

IMAGES = ("open-webui/open-webui",)
OLLAMA_IMAGES = ("ollama/ollama",)
DATA_DIR = "/app/backend/data"
KEY_ENV = "WEBUI_SECRET_KEY"
SECRETS = (
    KEY_ENV,
    "DATABASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "OAUTH_CLIENT_SECRET",
    "GOOGLE_CLIENT_SECRET",
    "MICROSOFT_CLIENT_SECRET",
    "WEB_SEARCH_API_KEY",
    "REDIS_URL",
)
"""Open WebUI's secret variables (names only: ``DATABASE_URL`` holds a password)."""
CHECKED_FILES = 200
"""At most this many uploads the database names are looked for after a restore."""
OUTBOUND = ("WEBHOOK_URL",)
"""Outbound settings a restore drill empties: the admin webhook (a value saved in the admin
settings since is kept in the database and not affected)."""


def detect(project: Project) -> bool:
    """An Open WebUI deployment: a service runs an ``open-webui/open-webui`` image, or a
    service named ``open-webui`` has ``WEBUI_*`` variables."""
    if services_running(project, IMAGES):
        return True
    svc = project.services.get("open-webui")
    return svc is not None and any(n.startswith("WEBUI_") for n in svc.env_names)


def _webui_services(project: Project) -> list[Service]:
    found = services_running(project, IMAGES)
    if not found and "open-webui" in project.services:
        found = [project.services["open-webui"]]
    return found


def _data_dir(project: Project) -> str:
    return project.env.get("DATA_DIR") or DATA_DIR


def refine(plan: Plan, project: Project) -> None:
    """Record where Open WebUI keeps its database, uploads and vector store, stop it for the
    cut, and warn about its secret key, an uncaptured data directory and Ollama's models."""
    services = _webui_services(project)
    data_dir = _data_dir(project)
    facts: dict[str, object] = {"webui_services": [s.name for s in services], "data_dir": data_dir}
    stop_for_cut(plan, services, "Open WebUI writes its database, uploads and vector store")
    main = services[0] if services else None
    if main is not None:
        facts["webui_service"] = main.name
        mount = data_mount(main, (data_dir,))
        if mount is not None:
            facts["data_capture"] = describe_mount(mount)
            note_capture(
                plan,
                mount,
                f"Open WebUI data {data_dir}: webui.db, uploads/, vector_db/ (Chroma), cache/ "
                "(rebuildable)",
            )
        else:
            plan.warnings.append(
                f"service {main.name} has no volume or bind mount at {data_dir}: its database "
                "(webui.db), uploads and vector store live in the container and are NOT "
                "captured; mount a volume there before backing up"
            )
    url_defined = "DATABASE_URL" in project.env or any(
        "DATABASE_URL" in s.env_names for s in services
    )
    url = project.env.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")) or (url_defined and not url):
        facts["database"] = "postgres"
        name = url.rsplit("/", 1)[-1].split("?", 1)[0] if url else ""
        if name:
            facts["databases"] = [name]
            facts["webui_database"] = name
        if not any(s.role == POSTGRES for s in plan.services.values()):
            plan.warnings.append(
                "Open WebUI uses DATABASE_URL but no PostgreSQL service was found: an external "
                "database must be added to sources by hand"
            )
    else:
        facts["database"] = "sqlite"
        facts["sqlite"] = f"{data_dir}/webui.db"
    vector_db = (project.env.get("VECTOR_DB") or "chroma").lower()
    facts["vector_db"] = vector_db
    if vector_db == "chroma" and not project.env.get("CHROMA_HTTP_HOST"):
        facts["chroma"] = f"{data_dir}/vector_db/chroma.sqlite3"
    key_in_env = KEY_ENV in project.env or any(KEY_ENV in s.env_names for s in services)
    if not key_in_env or project.env.get(KEY_ENV) == "":
        plan.warnings.append(
            f"{KEY_ENV} is not set: Open WebUI then generates /app/backend/.webui_secret_key "
            "outside its data directory, lost with the container (every session ends, stored "
            f"OAuth tokens cannot be decrypted); set {KEY_ENV} in .env"
        )
    for ollama in services_running(project, OLLAMA_IMAGES):
        if data_mount(ollama, ("/root/.ollama",)) is not None:
            plan.warnings.append(
                f"service {ollama.name} keeps its models in /root/.ollama: captured (often tens "
                "of GB); they can be pulled again (ollama pull) - remove that source to leave "
                "them out"
            )
    add_secret_names(plan, project, SECRETS)
    plan.facts.update(facts)


def preflight_problems(plan: Plan) -> list[str]:
    """The data directory (database, uploads, vector store) is not captured."""
    if capture_kept(plan, plan.facts.get("data_capture")):
        return []
    return [
        f"Open WebUI's data directory {plan.facts.get('data_dir') or DATA_DIR} is not "
        "captured: its database, uploads and vector store would be lost"
    ]


# --- after a restore --------------------------------------------------------------------------


def _rows(stack: RestoredStack, sql: str) -> list[tuple[object, ...]] | None:
    """``sql``'s rows in Open WebUI's restored database (SQLite file or PostgreSQL)."""
    facts = stack.facts
    if facts.get("database") == "postgres":
        from stackvault.stack.reach import postgres_query

        url, db = stack.postgres_url(), facts.get("webui_database")
        if url is None or not isinstance(db, str):
            return None
        out = postgres_query(url, db, sql)
        return None if out is None else [tuple(line.split("|")) for line in out.splitlines()]
    service = str(facts.get("webui_service") or "open-webui")
    return stack.sqlite_rows(service, str(facts.get("sqlite") or f"{DATA_DIR}/webui.db"), sql)


def database_check(stack: RestoredStack) -> Validation:
    """The restored database can be read and has users (the first one is the admin)."""
    subject = "open-webui database"
    rows = _rows(stack, 'SELECT count(*) FROM "user"')
    if rows is None:
        return Validation(subject, False, "the user table of the restored database is unreadable")
    users = int(str(rows[0][0])) if rows else 0
    if not users:
        return Validation(subject, False, "the restored database has no user (not even the admin)")
    chats = _rows(stack, "SELECT count(*) FROM chat")
    what = f"{users} users" + (f", {chats[0][0]} chats" if chats else "")
    return Validation(subject, True, what)


def uploads_check(stack: RestoredStack) -> Validation:
    """Every upload the ``file`` table names (up to `CHECKED_FILES`) is in the restored
    container."""
    subject = "open-webui uploads"
    rows = _rows(stack, f"SELECT path FROM file WHERE path IS NOT NULL LIMIT {CHECKED_FILES}")
    if rows is None:
        return Validation(subject, False, "the file table of the restored database is unreadable")
    service = str(stack.facts.get("webui_service") or "open-webui")
    data_dir = str(stack.facts.get("data_dir") or DATA_DIR)
    missing = []
    for (path,) in rows:
        where = str(path)
        if not posixpath.isabs(where):
            where = posixpath.join(data_dir, "uploads", where)
        if not stack.exists(service, where):
            missing.append(posixpath.basename(where))
    if missing:
        return Validation(
            subject,
            False,
            f"{len(missing)} of {len(rows)} uploads the database names are missing: "
            f"{', '.join(missing[:5])}",
        )
    return Validation(subject, True, f"all {len(rows)} uploads the database names are there")


def vector_store_check(stack: RestoredStack) -> Validation | None:
    """The built-in Chroma store is there (None when another vector store is used)."""
    chroma = stack.facts.get("chroma")
    if not isinstance(chroma, str):
        return None
    service = str(stack.facts.get("webui_service") or "open-webui")
    rows = stack.sqlite_rows(service, chroma, "SELECT count(*) FROM embeddings")
    if rows is None:
        return Validation(
            "open-webui vector store",
            False,
            f"{chroma} is missing or unreadable: the knowledge bases must be re-indexed",
        )
    return Validation("open-webui vector store", True, f"Chroma: {rows[0][0]} embeddings")


def restore_checks(stack: RestoredStack) -> list[Validation]:
    """The Open WebUI checks of a restored stack: its database, its uploads, its vector
    store."""
    out = [database_check(stack), uploads_check(stack)]
    vectors = vector_store_check(stack)
    if vectors is not None:
        out.append(vectors)
    return out
