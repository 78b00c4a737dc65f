"""The n8n preset (stack layer): what a restorable n8n backup must hold.

n8n (``n8nio/n8n``, also as ``docker.n8n.io/n8nio/n8n``; its queue-mode workers and webhook
processors run the same image) keeps its state in:

- its **user folder** ``/home/node/.n8n`` (``N8N_USER_FOLDER``/.n8n), a named volume
  (``n8n_data`` in n8n's own compose files) or a bind mount: the ``config`` file with the
  ``encryptionKey`` - every stored credential is encrypted with it (AES-256-CBC, OpenSSL's
  ``Salted__`` format), so a database restored without its key is useless - the SQLite
  ``database.sqlite`` when ``DB_TYPE`` is ``sqlite`` (the default), ``binaryData/``, custom
  ``nodes/``;
- PostgreSQL (``DB_TYPE=postgresdb``, ``DB_POSTGRESDB_*``): workflows, executions and the
  encrypted credentials (``credentials_entity``);
- ``.env``: ``N8N_ENCRYPTION_KEY`` (when set it must equal the config file's key: n8n refuses
  to start on a mismatch), the database password, ``N8N_USER_MANAGEMENT_JWT_SECRET``.

`refine` insists on the key: the user folder must be on a mount (captured; its services
stopped for the cut), else the plan warns that the key and the SQLite database are lost with
the container. `restore_checks`, after a restore, reads the restored ``config``, and finds that
its key (or ``N8N_ENCRYPTION_KEY``) decrypts every stored credential.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

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

IMAGES = ("n8nio/n8n", "n8nio/runners")
"""The images of n8n's services (``runners``: the external task runners)."""
USER_FOLDER = "/home/node/.n8n"
"""Where n8n's images keep the user folder (``N8N_USER_FOLDER`` + ``/.n8n``)."""
KEY_ENV = "N8N_ENCRYPTION_KEY"
SECRETS = (
    KEY_ENV,
    "N8N_USER_MANAGEMENT_JWT_SECRET",
    "DB_POSTGRESDB_PASSWORD",
    "POSTGRES_PASSWORD",
    "POSTGRES_NON_ROOT_PASSWORD",
    "QUEUE_BULL_REDIS_PASSWORD",
    "N8N_RUNNERS_AUTH_TOKEN",
    "N8N_BASIC_AUTH_PASSWORD",
    "N8N_SMTP_PASS",
)
"""n8n's secret variables (names only)."""
CHECKED_CREDENTIALS = 1000
"""At most this many stored credentials are decrypted after a restore."""
OUTBOUND = ("N8N_SMTP_*",)
"""Outbound settings a restore drill empties (shell patterns): the mail of user management."""


def detect(project: Project) -> bool:
    """An n8n deployment: a service runs an ``n8nio/n8n`` image, or a service named ``n8n``
    has ``N8N_*`` variables."""
    if services_running(project, IMAGES[:1]):
        return True
    svc = project.services.get("n8n")
    return svc is not None and any(n.startswith("N8N_") for n in svc.env_names)


def _n8n_services(project: Project) -> list[Service]:
    found = services_running(project, IMAGES)
    if not found and "n8n" in project.services:
        found = [project.services["n8n"]]
    return found


def _main(services: list[Service]) -> tuple[Service | None, str]:
    """The service holding the user folder (the main instance), and where it is mounted."""
    for svc in services:
        mount = data_mount(svc, (USER_FOLDER,))
        if mount is None:
            mount = next(
                (m for m in svc.mounts if m.destination.rstrip("/").endswith("/.n8n")), None
            )
        if mount is not None and not mount.read_only and mount.type in ("bind", "volume"):
            return svc, mount.destination.rstrip("/")
    main = next((s for s in services if s.name == "n8n"), services[0] if services else None)
    return main, USER_FOLDER


def _uses_postgres(project: Project, services: list[Service]) -> bool:
    db_type = project.env.get("DB_TYPE")
    if db_type is not None:
        return db_type.strip().lower() in ("postgresdb", "postgres")
    return any(n.startswith("DB_POSTGRESDB_") for s in services for n in s.env_names)


def refine(plan: Plan, project: Project) -> None:
    """Record where n8n keeps its key and data, stop its services for the cut, and warn
    when the encryption key would not be captured."""
    services = _n8n_services(project)
    main, folder = _main(services)
    facts: dict[str, object] = {
        "n8n_services": [s.name for s in services],
        "user_folder": folder,
    }
    stop_for_cut(plan, services, "n8n writes executions, binary data and credentials")
    key_in_env = KEY_ENV in project.env or any(KEY_ENV in s.env_names for s in services)
    facts["encryption_key"] = "env:" + KEY_ENV if key_in_env else f"file:{folder}/config"
    if main is not None:
        facts["n8n_service"] = main.name
        mount = next((m for m in main.mounts if m.destination.rstrip("/") == folder), None)
        if mount is not None and not mount.read_only:
            facts["user_folder_capture"] = describe_mount(mount)
            note_capture(
                plan,
                mount,
                f"n8n user folder {folder}: config (encryptionKey), database.sqlite, "
                "binaryData/, nodes/",
            )
        else:
            plan.warnings.append(
                f"service {main.name} has no volume or bind mount at {folder}: its config file "
                "with the encryptionKey (and an SQLite database, binary data) lives in the "
                "container and is NOT captured; mount a volume there before backing up - "
                "without the key the stored credentials cannot be decrypted"
            )
    if not key_in_env:
        plan.warnings.append(
            f"{KEY_ENV} is not set: the encryption key exists only in {folder}/config; keep "
            f"that file in every backup, and set {KEY_ENV} to the same value in .env so a "
            "lost user folder does not take the credentials with it"
        )
    for worker in services:
        if worker is not main and KEY_ENV not in worker.env_names:
            plan.warnings.append(
                f"service {worker.name} runs n8n without {KEY_ENV}: in queue mode every worker "
                "needs the main instance's key to decrypt credentials"
            )
    if _uses_postgres(project, services):
        facts["database"] = "postgresdb"
        name = project.env.get("DB_POSTGRESDB_DATABASE") or project.env.get("POSTGRES_DB")
        if name:
            facts["databases"] = [name]
            facts["n8n_database"] = name
        pg = [s for s in plan.services.values() if s.role == POSTGRES]
        if not pg:
            plan.warnings.append(
                "n8n uses PostgreSQL (DB_POSTGRESDB_*) but no PostgreSQL service was found: an "
                "external database must be added to sources by hand"
            )
        for s in plan.sources:
            if s.service in plan.services and plan.services[s.service].role == POSTGRES:
                s.note = "every database (n8n's workflows, executions, encrypted credentials)"
    else:
        facts["database"] = "sqlite"
        facts["sqlite"] = f"{folder}/database.sqlite"
    add_secret_names(plan, project, SECRETS)
    plan.facts.update(facts)


def preflight_problems(plan: Plan) -> list[str]:
    """What makes a backup of this plan useless for n8n, each a sentence: the user folder
    with the encryption key is not captured (not mounted, or removed from the plan), while
    ``N8N_ENCRYPTION_KEY`` does not hold the key either."""
    facts = plan.facts
    if capture_kept(plan, facts.get("user_folder_capture")):
        return []
    folder = facts.get("user_folder") or USER_FOLDER
    if str(facts.get("encryption_key", "")).startswith("env:"):
        return []
    return [
        f"the n8n user folder {folder} with the encryptionKey is not captured and "
        f"{KEY_ENV} is not set: the stored credentials could not be decrypted after a restore"
    ]


# --- after a restore --------------------------------------------------------------------------


def decrypts(data: str, key: str) -> bool:
    """Whether ``key`` decrypts ``data`` as n8n encrypts a credential (its ``Cipher``, as
    CryptoJS and ``openssl enc -aes-256-cbc -md md5``: base64 of ``Salted__``, an 8-byte salt
    and the ciphertext; key and IV from MD5 ``EVP_BytesToKey``) into a JSON document."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    if len(raw) < 32 or raw[:8] != b"Salted__" or (len(raw) - 16) % 16:
        return False
    salt, body = raw[8:16], raw[16:]
    derived, block = b"", b""
    while len(derived) < 48:
        block = hashlib.md5(block + key.encode() + salt, usedforsecurity=False).digest()
        derived += block
    decryptor = Cipher(algorithms.AES(derived[:32]), modes.CBC(derived[32:48])).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    try:
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        json.loads(plain)
    except ValueError:
        return False
    return True


def _file_key(stack: RestoredStack, service: str, folder: str) -> tuple[str | None, str]:
    """The ``encryptionKey`` of the restored ``config`` and, when there is none, why."""
    data = stack.read_file(service, f"{folder}/config", limit=1 << 20)
    if data is None:
        return None, f"{folder}/config is not in the restored container of {service}"
    try:
        doc = json.loads(data)
    except ValueError:
        return None, f"{folder}/config is not JSON"
    key = doc.get("encryptionKey") if isinstance(doc, dict) else None
    if not isinstance(key, str) or not key:
        return None, f"{folder}/config has no encryptionKey"
    return key, ""


def key_check(stack: RestoredStack) -> tuple[Validation, str | None]:
    """The validation of the restored encryption key, and the key n8n will use (None when it
    has none): the user folder's ``config`` holds an ``encryptionKey`` (required when the
    backup captured the folder), equal to ``N8N_ENCRYPTION_KEY`` where that is set."""
    subject = "n8n encryption key"
    facts = stack.facts
    service = str(facts.get("n8n_service") or "n8n")
    folder = str(facts.get("user_folder") or USER_FOLDER)
    key, why = _file_key(stack, service, folder)
    env_key = stack.env(service).get(KEY_ENV) or None
    if key is None and (facts.get("user_folder_capture") or env_key is None):
        return Validation(subject, False, f"{why}: the stored credentials cannot be decrypted"), (
            env_key
        )
    if key is not None and env_key is not None and key != env_key:
        return Validation(
            subject,
            False,
            f"{folder}/config and {KEY_ENV} hold different keys: n8n refuses to start",
        ), None
    where = f"{folder}/config" if key is not None else KEY_ENV
    if key is not None and env_key is not None:
        where += f" (equal to {KEY_ENV})"
    return Validation(subject, True, f"present in {where}"), key or env_key


def _postgres_credentials(stack: RestoredStack) -> list[str] | None:
    from stackvault.stack.reach import postgres_query

    url = stack.postgres_url()
    db = stack.facts.get("n8n_database")
    if url is None or not isinstance(db, str):
        return None
    # n8n stores each credential as one base64 line (no newline in it)
    out = postgres_query(
        url, db, f"SELECT data FROM credentials_entity ORDER BY id LIMIT {CHECKED_CREDENTIALS}"
    )
    if out is None:
        return None
    return [line for line in out.splitlines() if line.strip()]


def _sqlite_credentials(stack: RestoredStack) -> list[str] | None:
    service = str(stack.facts.get("n8n_service") or "n8n")
    path = str(stack.facts.get("sqlite") or f"{USER_FOLDER}/database.sqlite")
    rows = stack.sqlite_rows(
        service,
        path,
        f"SELECT data FROM credentials_entity ORDER BY id LIMIT {CHECKED_CREDENTIALS}",
    )
    return None if rows is None else [str(r[0]) for r in rows]


def credentials_check(stack: RestoredStack, key: str) -> Validation:
    """Every stored credential (up to `CHECKED_CREDENTIALS`) decrypts with ``key``."""
    subject = "n8n credentials"
    if stack.facts.get("database") == "postgresdb":
        data = _postgres_credentials(stack)
        where = f"database {stack.facts.get('n8n_database')}"
    else:
        data = _sqlite_credentials(stack)
        where = str(stack.facts.get("sqlite") or "database.sqlite")
    if data is None:
        return Validation(subject, False, f"the credentials_entity table of {where} is unreadable")
    bad = sum(1 for d in data if not decrypts(d, key))
    if bad:
        return Validation(
            subject,
            False,
            f"{bad} of {len(data)} stored credentials in {where} do not decrypt with the "
            "restored key",
        )
    return Validation(subject, True, f"all {len(data)} stored credentials in {where} decrypt")


def restore_checks(stack: RestoredStack) -> list[Validation]:
    """The n8n checks of a restored stack: `key_check`, then `credentials_check` with it."""
    validation, key = key_check(stack)
    if key is None:
        return [validation]
    return [validation, credentials_check(stack, key)]
