"""An Open WebUI-shaped Docker Compose project on a test `DockerEngine`, laid out as Open
WebUI's own ``docker-compose.yaml``: services ``open-webui`` (image
``ghcr.io/open-webui/open-webui:main``, the host skeleton image under that name; the named
volume ``open-webui`` at ``/app/backend/data``; ``WEBUI_SECRET_KEY`` from ``.env``) and
``ollama`` (image ``ollama/ollama``, the named volume ``ollama`` at ``/root/.ollama`` with a
model blob).

The writer writes like Open WebUI with its defaults: the SQLite ``webui.db`` (tables
``user`` with the admin, ``chat``, ``file``), each upload first saved under ``uploads/`` as
``<id>_<name>`` and then its ``file`` row naming its absolute path, and the built-in Chroma
store ``vector_db/chroma.sqlite3`` (``embeddings``) with a segment directory.

`up` runs ``docker-compose up -d`` and waits until uploads are recorded; `sqlite` queries
``webui.db`` in the running container.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from .appproject import HOST_MOUNTS, IDLE, AppProject, app_image, yaml_str

if TYPE_CHECKING:
    from .dockerd import DockerEngine

WEBUI_IMAGE = "ghcr.io/open-webui/open-webui:main"
OLLAMA_IMAGE = "ollama/ollama:0.5.7"
DATA = "/app/backend/data"
_WRITER = f"""
import os, signal, sqlite3, sys, time, uuid
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
D = "{DATA}"
for sub in ("uploads", "vector_db", "cache/embedding/models"):
    os.makedirs(os.path.join(D, sub), exist_ok=True)
db = sqlite3.connect(D + "/webui.db", isolation_level=None)
db.executescript('''
CREATE TABLE IF NOT EXISTS "user" (id TEXT PRIMARY KEY, name TEXT, email TEXT, role TEXT);
CREATE TABLE IF NOT EXISTS chat (id TEXT PRIMARY KEY, user_id TEXT, title TEXT, chat TEXT);
CREATE TABLE IF NOT EXISTS file (id TEXT PRIMARY KEY, user_id TEXT, filename TEXT, path TEXT);
INSERT OR IGNORE INTO "user" VALUES ('admin', 'Admin', 'admin@example.com', 'admin');
''')
vec = sqlite3.connect(D + "/vector_db/chroma.sqlite3", isolation_level=None)
vec.execute("CREATE TABLE IF NOT EXISTS embeddings "
            "(id INTEGER PRIMARY KEY, segment_id TEXT, embedding_id TEXT)")
segment = D + "/vector_db/2c6a1f0e-segment"
os.makedirs(segment, exist_ok=True)
i = 0
while True:
    i += 1
    fid = str(uuid.uuid4())
    path = f"{{D}}/uploads/{{fid}}_doc-{{i}}.txt"
    with open(path, "wb") as f:
        f.write(os.urandom(1500))
    db.execute("INSERT INTO file VALUES (?, 'admin', ?, ?)", (fid, f"doc-{{i}}.txt", path))
    chat = (str(uuid.uuid4()), f"chat {{i}}")
    db.execute("INSERT INTO chat VALUES (?, 'admin', ?, '{{}}')", chat)
    vec.execute("INSERT INTO embeddings (segment_id, embedding_id) VALUES ('seg', ?)", (fid,))
    with open(segment + "/data_level0.bin", "ab") as f:
        f.write(os.urandom(256))
    time.sleep(0.1)
"""
_OLLAMA = (
    "mkdir -p /root/.ollama/models/blobs && "
    "head -c 65536 /dev/urandom > /root/.ollama/models/blobs/sha256-model; " + IDLE
)


class OpenWebUILikeProject(AppProject):
    def __init__(self, directory: Path, engine: DockerEngine, *, name: str | None = None) -> None:
        super().__init__(directory, engine, name or f"svowui{secrets.token_hex(3)}")
        self.secret_key = secrets.token_urlsafe(24)

    def write(self) -> OpenWebUILikeProject:
        app_image(self.engine, WEBUI_IMAGE)
        app_image(self.engine, OLLAMA_IMAGE)
        env = self.directory / ".env"
        env.write_text(f"WEBUI_SECRET_KEY={self.secret_key}\nOLLAMA_DOCKER_TAG=0.5.7\n")
        env.chmod(0o600)
        (self.directory / "docker-compose.yaml").write_text(self.compose_yaml())
        return self

    def compose_yaml(self) -> str:
        return f"""version: "2.4"
services:
  ollama:
    image: {OLLAMA_IMAGE}
    network_mode: host
    user: "0:0"
    command: ["sh", "-c", {yaml_str(_OLLAMA)}]
    volumes:
{HOST_MOUNTS}      - ollama:/root/.ollama
  open-webui:
    image: {WEBUI_IMAGE}
    network_mode: host
    user: "0:0"
    command: ["python3", "-c", {yaml_str(_WRITER)}]
    environment:
      OLLAMA_BASE_URL: http://127.0.0.1:11434
      WEBUI_SECRET_KEY: ${{WEBUI_SECRET_KEY}}
    depends_on: [ollama]
    volumes:
{HOST_MOUNTS}      - open-webui:{DATA}
volumes:
  ollama:
  open-webui:
"""

    def up(self, uploads: int = 5) -> OpenWebUILikeProject:
        self.compose("up", "-d")
        self.wait_for(f"{uploads} uploads", lambda: self.uploads() >= uploads)
        return self

    def sqlite(self, sql: str) -> str:
        """``sql``'s output in ``webui.db`` of the running ``open-webui`` container."""
        return self.exec("open-webui", "sqlite3", f"{DATA}/webui.db", sql)

    def uploads(self) -> int:
        return int(self.sqlite("SELECT count(*) FROM file") or 0)
