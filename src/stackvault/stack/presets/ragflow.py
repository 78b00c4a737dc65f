"""The RAGFlow preset (stack layer): what a restorable RAGFlow backup must hold.

RAGFlow (``infiniflow/ragflow``, ``docker/docker-compose.yml`` with
``docker-compose-base.yml``) keeps its state in four stores, all of which must come from the
same cut:

- MySQL (service ``mysql``), database ``rag_flow`` (``MYSQL_DBNAME``): users, tenants,
  knowledge bases, documents (``document.kb_id`` / ``location`` name each file's object),
  tasks, API tokens, the tenants' model keys;
- MinIO (service ``minio``, volume ``minio_data`` at ``/data``): the uploaded files, a bucket
  per knowledge base;
- the document engine (``DOC_ENGINE``): Elasticsearch (``es01``, volume ``esdata01``; the
  default), Infinity (``infinity``, ``infinity_data``) or OpenSearch (``opensearch01``): the
  parsed chunks and their vectors, rebuilt only by parsing every document again;
- Redis/Valkey (service ``redis``): the task queue;
- ``.env`` (``MYSQL_PASSWORD``, ``MINIO_PASSWORD``, ``ELASTIC_PASSWORD``,
  ``REDIS_PASSWORD``, shipped with the public default ``infini_rag_flow``),
  ``service_conf.yaml.template``, ``nginx/``.

`refine` records the stores, stops RAGFlow, MinIO and the document engine for the cut, takes
the configuration files RAGFlow mounts as configuration, and warns about the public default
passwords. `restore_checks`, after a restore, finds every document's object in MinIO's restored
data and the document engine's data.
"""

from __future__ import annotations

import os
import posixpath

from stackvault.records.plan import MYSQL, Plan
from stackvault.stack.compose import Project, Service
from stackvault.stack.presets.common import (
    add_secret_names,
    capture_kept,
    image_matches,
    note_capture,
    services_running,
    stop_for_cut,
)
from stackvault.stack.presets.restored import RestoredStack
from stackvault.stack.restorereport import Validation

IMAGES = ("infiniflow/ragflow",)
DEFAULT_PASSWORD = "infini_rag_flow"
"""The value RAGFlow's ``.env`` ships for every password: public."""
PASSWORDS = ("MYSQL_PASSWORD", "MINIO_PASSWORD", "ELASTIC_PASSWORD", "REDIS_PASSWORD")
SECRETS = (*PASSWORDS, "MINIO_USER", "INFINITY_PASSWORD", "OPENSEARCH_PASSWORD")
DOC_ENGINES = {
    "elasticsearch": (("elasticsearch",), "/usr/share/elasticsearch/data", "es01"),
    "opensearch": (("opensearchproject/opensearch",), "/usr/share/opensearch/data", "opensearch01"),
    "infinity": (("infiniflow/infinity",), "/var/infinity", "infinity"),
}
"""Each document engine: its images, where it keeps its data, its service in RAGFlow's
compose file."""
DATABASE_ROLE = MYSQL
"""The server that holds ``facts.databases`` (`stackvault.stack.presets.name_databases_source`)."""
CHECKED_DOCUMENTS = 200


def detect(project: Project) -> bool:
    """A RAGFlow deployment: a service runs an ``infiniflow/ragflow`` image, or a service
    named ``ragflow`` beside ``minio`` and ``mysql``."""
    if services_running(project, IMAGES):
        return True
    return {"ragflow", "minio", "mysql"} <= set(project.services)


def _engine_service(project: Project, engine: str) -> Service | None:
    images, _data, name = DOC_ENGINES.get(engine, DOC_ENGINES["elasticsearch"])
    found = [s for s in project.services.values() if image_matches(s, images)]
    if found:
        return sorted(found, key=lambda s: s.name)[0]
    return project.services.get(name)


def _data_mount_of(service: Service, default: str) -> tuple[str, str] | None:
    """(destination, how it is captured) of the service's data mount: at ``default``, else its
    only writable mount."""
    writable = [m for m in service.mounts if m.type in ("bind", "volume") and not m.read_only]
    at = [m for m in writable if m.destination.rstrip("/") == default] or writable[:1]
    if not at:
        return None
    m = at[0]
    return m.destination.rstrip("/"), (m.source if m.type == "bind" else f"volume {m.source}")


def refine(plan: Plan, project: Project) -> None:
    """Record RAGFlow's four stores, stop its writers for the cut, keep its configuration
    files as configuration, and warn about public default passwords."""
    env = project.env
    ragflow = services_running(project, IMAGES) or (
        [project.services["ragflow"]] if "ragflow" in project.services else []
    )
    facts: dict[str, object] = {"ragflow_services": [s.name for s in ragflow]}
    database = env.get("MYSQL_DBNAME") or "rag_flow"
    facts["ragflow_database"] = database
    facts["databases"] = [database]
    if not any(s.role == MYSQL for s in plan.services.values()):
        plan.warnings.append(
            "no MySQL service was found: RAGFlow's rag_flow database would not be captured (an "
            "external database must be added to sources by hand)"
        )
    for s in plan.sources:
        if s.service in plan.services and plan.services[s.service].role == MYSQL:
            s.note = f"every database: {database} (knowledge bases, documents, tenants' keys)"
    minio = next((s for s in project.services.values() if image_matches(s, ("minio/minio",))), None)
    minio = minio or project.services.get("minio")
    engine = (env.get("DOC_ENGINE") or "elasticsearch").lower()
    facts["doc_engine"] = engine
    doc = _engine_service(project, engine)
    stores = [s for s in (minio, doc) if s is not None]
    stop_for_cut(plan, [*ragflow, *stores], "RAGFlow writes its files and chunks there")
    if minio is not None:
        found = _data_mount_of(minio, "/data")
        facts["minio_service"] = minio.name
        if found is not None:
            facts["minio_data"], facts["minio_capture"] = found
            for m in minio.mounts:
                if m.destination.rstrip("/") == found[0]:
                    note_capture(plan, m, "RAGFlow's uploaded files: a bucket per knowledge base")
        else:
            plan.warnings.append(
                f"service {minio.name} has no data mount: RAGFlow's uploaded files would not be "
                "captured"
            )
    if doc is not None:
        default = DOC_ENGINES.get(engine, DOC_ENGINES["elasticsearch"])[1]
        found = _data_mount_of(doc, default)
        facts["doc_engine_service"] = doc.name
        if found is not None:
            facts["doc_engine_data"], facts["doc_engine_capture"] = found
            for m in doc.mounts:
                if m.destination.rstrip("/") == found[0]:
                    note_capture(
                        plan,
                        m,
                        f"RAGFlow's chunks and vectors ({engine}): otherwise every document must "
                        "be parsed again",
                    )
    for svc in ragflow:  # configuration files it mounts writable (service_conf.yaml.template)
        for m in svc.mounts:
            if m.type == "bind" and not m.read_only and os.path.isfile(m.source):
                plan.paths = [p for p in plan.paths if p.path != m.source]
                if m.source not in plan.config:
                    plan.config.append(m.source)
    defaults = [n for n in PASSWORDS if env.get(n) == DEFAULT_PASSWORD]
    if defaults:
        plan.warnings.append(
            f"{', '.join(defaults)} in .env still the public default {DEFAULT_PASSWORD!r}: "
            "change them (and in the stores) - anyone who reaches the ports can read the data"
        )
    add_secret_names(plan, project, SECRETS)
    plan.facts.update(facts)


def preflight_problems(plan: Plan) -> list[str]:
    """MinIO's data (the uploaded files the database names) is not captured."""
    if "minio_service" not in plan.facts or capture_kept(plan, plan.facts.get("minio_capture")):
        return []
    return ["MinIO's data is not captured: the files every RAGFlow document names would be lost"]


# --- after a restore --------------------------------------------------------------------------


def documents_check(stack: RestoredStack) -> Validation:
    """Every document of ``rag_flow`` (up to `CHECKED_DOCUMENTS`) has its object in MinIO's
    restored data (``DATA/<kb_id>/<location>``: a file, or a directory with ``xl.meta``)."""
    subject = "ragflow documents"
    facts = stack.facts
    db = str(facts.get("ragflow_database") or "rag_flow")
    rows = stack.mysql_rows(
        db,
        "SELECT kb_id, location FROM document WHERE location IS NOT NULL AND location <> '' "
        f"ORDER BY id LIMIT {CHECKED_DOCUMENTS}",
    )
    if rows is None:
        return Validation(subject, False, f"the document table of {db} is unreadable")
    minio = facts.get("minio_service")
    data = str(facts.get("minio_data") or "/data")
    if not isinstance(minio, str):
        return Validation(subject, True, f"{len(rows)} documents (no MinIO service to look in)")
    missing = [
        f"{kb}/{loc}" for kb, loc in rows if not stack.exists(minio, posixpath.join(data, kb, loc))
    ]
    if missing:
        return Validation(
            subject,
            False,
            f"{len(missing)} of {len(rows)} documents have no object in MinIO: "
            f"{', '.join(missing[:5])}",
        )
    return Validation(subject, True, f"all {len(rows)} documents have their object in MinIO")


def doc_engine_check(stack: RestoredStack) -> Validation | None:
    """The document engine's restored data directory holds data (None without one)."""
    facts = stack.facts
    service, data = facts.get("doc_engine_service"), facts.get("doc_engine_data")
    if not isinstance(service, str) or not isinstance(data, str):
        return None
    engine = str(facts.get("doc_engine") or "elasticsearch")
    marker = "indices" if engine in ("elasticsearch", "opensearch") else ""
    path = posixpath.join(data, marker) if marker else data
    ok = stack.exists(service, path)
    return Validation(
        f"ragflow {engine}",
        ok,
        f"{path} restored" if ok else f"{path} is missing: every document must be parsed again",
    )


def restore_checks(stack: RestoredStack) -> list[Validation]:
    """The RAGFlow checks of a restored stack: documents against MinIO, the document
    engine's data."""
    out = [documents_check(stack)]
    engine = doc_engine_check(stack)
    if engine is not None:
        out.append(engine)
    return out
