"""An AnythingLLM-shaped Docker Compose project on a test `DockerEngine`, laid out as
AnythingLLM's own ``docker/docker-compose.yml``: one service ``anythingllm`` (image
``mintplexlabs/anythingllm``, the host skeleton image under that name) running as uid 1000,
with ``./storage`` bind mounted at ``/app/server/storage`` and the project's ``.env`` (which
holds ``JWT_SECRET``, ``SIG_KEY``, ``SIG_SALT``, ``STORAGE_DIR``, ``VECTOR_DB=lancedb``) bind
mounted at ``/app/server/.env``.

The writer writes like AnythingLLM: the SQLite ``anythingllm.db`` (``workspaces``,
``workspace_documents``, ``users``), each document first saved as
``documents/custom-documents/<name>-<uuid>.json`` and then its ``workspace_documents`` row
naming that ``docpath``, then its vectors as a new fragment and version of the workspace's
LanceDB table ``lancedb/<slug>.lance``.

`up` runs ``docker-compose up -d`` and waits until documents are recorded.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .appproject import HOST_MOUNTS, AppProject, app_image, yaml_str

if TYPE_CHECKING:
    from .dockerd import DockerEngine

IMAGE = "mintplexlabs/anythingllm:1.7.2"
STORAGE = "/app/server/storage"
UID = 1000
_WRITER = f"""
import os, signal, sqlite3, sys, time, uuid
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
S = "{STORAGE}"
for sub in ("documents/custom-documents", "lancedb", "vector-cache", "models", "comkey"):
    os.makedirs(os.path.join(S, sub), exist_ok=True)
db = sqlite3.connect(S + "/anythingllm.db", isolation_level=None)
db.executescript('''
CREATE TABLE IF NOT EXISTS workspaces (id INTEGER PRIMARY KEY, name TEXT, slug TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS workspace_documents (id INTEGER PRIMARY KEY, docId TEXT,
  filename TEXT, docpath TEXT, workspaceId INTEGER);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT, role TEXT);
INSERT OR IGNORE INTO workspaces VALUES (1, 'Research', 'research'), (2, 'Support', 'support');
INSERT OR IGNORE INTO users VALUES (1, 'admin', 'admin');
''')
i = 0
while True:
    i += 1
    ws, slug = (1, "research") if i % 2 else (2, "support")
    doc = str(uuid.uuid4())
    docpath = f"custom-documents/report-{{i}}-{{doc}}.json"
    with open(os.path.join(S, "documents", docpath), "w") as f:
        f.write('{{"pageContent": "' + os.urandom(600).hex() + '"}}')
    db.execute("INSERT INTO workspace_documents (docId, filename, docpath, workspaceId) "
               "VALUES (?, ?, ?, ?)", (doc, f"report-{{i}}.pdf", docpath, ws))
    table = os.path.join(S, "lancedb", slug + ".lance")
    for sub in ("data", "_versions", "_transactions"):
        os.makedirs(os.path.join(table, sub), exist_ok=True)
    with open(os.path.join(table, "data", doc + ".lance"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(table, "_versions", f"{{i}}.manifest"), "wb") as f:
        f.write(os.urandom(64))
    time.sleep(0.1)
"""


class AnythingLLMLikeProject(AppProject):
    def __init__(self, directory: Path, engine: DockerEngine, *, name: str | None = None) -> None:
        super().__init__(directory, engine, name or f"svallm{secrets.token_hex(3)}")
        self.keys = {k: secrets.token_hex(16) for k in ("JWT_SECRET", "SIG_KEY", "SIG_SALT")}

    def write(self) -> AnythingLLMLikeProject:
        app_image(self.engine, IMAGE)
        storage = self.directory / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        os.chown(storage, UID, UID)
        env = self.directory / ".env"
        env.write_text(
            f"SERVER_PORT=3001\nSTORAGE_DIR={STORAGE}\nVECTOR_DB=lancedb\n"
            "EMBEDDING_ENGINE=native\n" + "".join(f"{k}='{v}'\n" for k, v in self.keys.items())
        )
        env.chmod(0o600)
        os.chown(env, UID, UID)
        (self.directory / "docker-compose.yaml").write_text(self.compose_yaml())
        return self

    def compose_yaml(self) -> str:
        return f"""version: "2.4"
services:
  anythingllm:
    image: {IMAGE}
    network_mode: host
    user: "{UID}:{UID}"
    command: ["python3", "-c", {yaml_str(_WRITER)}]
    env_file: .env
    volumes:
{HOST_MOUNTS}      - ./storage:{STORAGE}
      - ./.env:/app/server/.env
"""

    def up(self, documents: int = 6) -> AnythingLLMLikeProject:
        self.compose("up", "-d")
        self.wait_for(f"{documents} documents", lambda: self.documents() >= documents)
        return self

    def documents(self) -> int:
        out = self.exec(
            "anythingllm", "sqlite3", f"{STORAGE}/anythingllm.db",
            "SELECT count(*) FROM workspace_documents",
        )  # fmt: skip
        return int(out or 0)
