"""The application presets on discovered projects built by hand (no engine): which preset
``auto`` picks, what each records and warns about, and n8n's credential decryption."""

from __future__ import annotations

from stackvault.stack.compose import Mount, Project, Service
from stackvault.stack.presets import plan_for, preflight_problems
from stackvault.stack.presets.n8n import decrypts

CIPHERTEXT = "U2FsdGVkX1/HTSbQQILA4/yeTbpnPOk6O5OFuD+Y7Q29U6KNSkrorLgLhnUWGNuH"
"""``printf '{"user":"a","password":"b"}' | openssl enc -aes-256-cbc -md md5 -pass pass:k3y
-base64 -A``: n8n's format for a stored credential."""


def svc(
    name: str,
    image: str,
    *,
    mounts: list[Mount] | None = None,
    env: list[str] | None = None,
    command: list[str] | None = None,
) -> Service:
    return Service(
        name=name,
        containers=[f"p_{name}_1"],
        state="running",
        health=None,
        image=image,
        image_id="sha256:" + "0" * 64,
        digests=[],
        command=command or [],
        user="",
        mounts=mounts or [],
        env_names=env or [],
    )


def project(*services: Service, env: dict[str, str] | None = None) -> Project:
    return Project(
        name="p",
        working_dir="/srv/p",
        config_files=["/srv/p/docker-compose.yml"],
        services={s.name: s for s in services},
        env_file="/srv/p/.env",
        env=env or {},
    )


PG = svc("postgres", "postgres:16", env=["POSTGRES_PASSWORD", "POSTGRES_DB"])


def test_auto_picks_each_preset_and_generic_otherwise() -> None:
    n8n = svc("n8n", "docker.n8n.io/n8nio/n8n:1.80.0")
    webui = svc("open-webui", "ghcr.io/open-webui/open-webui:main")
    dify = svc("api", "langgenius/dify-api:1.9.0")
    app = svc("app", "example/app:1", mounts=[Mount("bind", "/srv/p/data", "/data")])
    assert plan_for(project(PG, n8n)).preset == "n8n"
    assert plan_for(project(webui)).preset == "open-webui"
    assert plan_for(project(PG, dify, n8n)).preset == "dify"  # Dify first
    assert plan_for(project(PG, app)).preset == "generic"
    # by service name and variables, when the image is a private build
    named = svc("n8n", "registry.example/ops/automation:3", env=["N8N_HOST"])
    assert plan_for(project(named)).preset == "n8n"
    assert plan_for(project(svc("n8n", "registry.example/other:1"))).preset == "generic"


def test_n8n_sqlite_without_a_mount_or_a_key_is_warned_about() -> None:
    plan = plan_for(
        project(svc("n8n", "n8nio/n8n:1.80.0"), svc("n8n-worker", "n8nio/n8n:1.80.0")),
        "n8n",
    )
    assert plan.facts["database"] == "sqlite"
    assert plan.facts["sqlite"] == "/home/node/.n8n/database.sqlite"
    assert plan.facts["encryption_key"] == "file:/home/node/.n8n/config"
    assert plan.services["n8n"].stop and plan.services["n8n-worker"].stop
    assert "stopped for the cut" in plan.services["n8n-worker"].reason
    text = "\n".join(plan.warnings)
    assert "service n8n has no volume or bind mount at /home/node/.n8n" in text
    assert "N8N_ENCRYPTION_KEY is not set" in text
    assert "service n8n-worker runs n8n without N8N_ENCRYPTION_KEY" in text
    assert "user_folder_capture" not in plan.facts


def test_n8n_with_its_key_in_env_and_a_bind_mounted_user_folder() -> None:
    folder = Mount("bind", "/srv/p/n8n_data", "/home/node/.n8n")
    n8n = svc("n8n", "n8nio/n8n", mounts=[folder], env=["N8N_ENCRYPTION_KEY", "DB_TYPE"])
    plan = plan_for(
        project(PG, n8n, env={"N8N_ENCRYPTION_KEY": "s3cret", "DB_TYPE": "postgresdb",
                              "POSTGRES_DB": "automations"}),
    )  # fmt: skip
    assert plan.preset == "n8n" and plan.warnings == []
    assert plan.facts["encryption_key"] == "env:N8N_ENCRYPTION_KEY"
    assert plan.facts["databases"] == ["automations"]
    assert plan.facts["user_folder_capture"] == "/srv/p/n8n_data"
    [path] = plan.paths
    assert "config (encryptionKey)" in path.note
    assert "N8N_ENCRYPTION_KEY" in plan.secrets
    assert "s3cret" not in repr(plan.to_dict())


def test_open_webui_on_postgres_without_a_secret_key() -> None:
    webui = svc(
        "open-webui",
        "ghcr.io/open-webui/open-webui:cuda",
        mounts=[Mount("volume", "p_open-webui", "/app/backend/data")],
        env=["DATABASE_URL"],
    )
    ollama = svc("ollama", "ollama/ollama", mounts=[Mount("volume", "p_ollama", "/root/.ollama")])
    url = "postgresql://webui:pw@127.0.0.1:5432/openwebui"
    plan = plan_for(project(PG, webui, ollama, env={"DATABASE_URL": url}))
    assert plan.preset == "open-webui"
    assert plan.facts["database"] == "postgres" and plan.facts["databases"] == ["openwebui"]
    assert plan.facts["data_capture"] == "volume p_open-webui"
    assert plan.facts["chroma"] == "/app/backend/data/vector_db/chroma.sqlite3"
    text = "\n".join(plan.warnings)
    assert "WEBUI_SECRET_KEY is not set" in text and "/root/.ollama: captured" in text
    assert "DATABASE_URL" in plan.secrets and "pw@" not in repr(plan.to_dict()["secrets"])


def test_n8n_credentials_decrypt_only_with_their_key() -> None:
    assert decrypts(CIPHERTEXT, "k3y")
    assert not decrypts(CIPHERTEXT, "another key")
    assert not decrypts("not base64!", "k3y")
    assert not decrypts("U2FsdGVkX1/HTSbQ", "k3y")  # too short


def test_anythingllm_without_its_server_env_is_warned_about() -> None:
    storage = Mount("bind", "/srv/p/storage", "/app/server/storage")
    allm = svc("anythingllm", "mintplexlabs/anythingllm:latest", mounts=[storage])
    plan = plan_for(project(allm, env={"JWT_SECRET": "x"}))
    assert plan.preset == "anythingllm" and plan.facts["storage_capture"] == "/srv/p/storage"
    [warning] = plan.warnings
    assert warning.startswith("SIG_KEY, SIG_SALT not found in .env")
    assert "server_env" not in plan.facts
    assert plan.secrets == ["JWT_SECRET"]
    bare = plan_for(project(svc("anythingllm", "mintplexlabs/anythingllm")))
    assert any("no volume or bind mount at /app/server/storage" in w for w in bare.warnings)


def test_ragflow_on_infinity_with_its_default_passwords() -> None:
    mysql = svc("mysql", "mysql:8.0.39", env=["MYSQL_ROOT_PASSWORD"])
    minio = svc("minio", "quay.io/minio/minio:RELEASE.2025-06-13T11-33-47Z",
                mounts=[Mount("volume", "p_minio_data", "/data")])  # fmt: skip
    infinity = svc("infinity", "infiniflow/infinity:v0.6.0",
                   mounts=[Mount("volume", "p_infinity_data", "/var/infinity")])  # fmt: skip
    ragflow = svc("ragflow", "infiniflow/ragflow:v0.20.5")
    env = {"DOC_ENGINE": "infinity", "MYSQL_PASSWORD": "infini_rag_flow", "MINIO_PASSWORD": "x"}
    plan = plan_for(project(mysql, minio, infinity, ragflow, env=env))
    assert plan.preset == "ragflow"
    assert plan.facts["doc_engine_service"] == "infinity"
    assert plan.facts["doc_engine_capture"] == "volume p_infinity_data"
    assert plan.facts["minio_data"] == "/data" and plan.facts["databases"] == ["rag_flow"]
    assert plan.services["infinity"].stop and plan.services["ragflow"].stop
    [warning] = plan.warnings
    assert warning.startswith("MYSQL_PASSWORD in .env still the public default")
    # by its service names, when the images are private builds
    named = [svc(n, f"registry.example/{n}:1") for n in ("ragflow", "minio", "mysql")]
    assert plan_for(project(*named)).preset == "ragflow"


def test_preflight_problems_when_the_key_or_the_data_is_no_longer_captured() -> None:
    folder = Mount("volume", "p_n8n_data", "/home/node/.n8n")
    plan = plan_for(project(svc("n8n", "n8nio/n8n", mounts=[folder])))
    assert preflight_problems(plan) == []
    plan.sources = [s for s in plan.sources if "p_n8n_data" not in s.url]  # edited away
    [problem] = preflight_problems(plan)
    assert problem.startswith("the n8n user folder /home/node/.n8n with the encryptionKey")
    keyed = plan_for(
        project(svc("n8n", "n8nio/n8n", env=["N8N_ENCRYPTION_KEY"])), "n8n"
    )  # no mount, but the key is in the environment: a warning, not a failure
    assert preflight_problems(keyed) == [] and keyed.warnings
    storage = Mount("bind", "/srv/p/storage", "/app/server/storage")
    allm = plan_for(project(svc("anythingllm", "mintplexlabs/anythingllm", mounts=[storage])))
    assert preflight_problems(allm) == []
    allm.paths = []
    assert preflight_problems(allm)[0].startswith("AnythingLLM's storage /app/server/storage")
    webui = plan_for(project(svc("open-webui", "ghcr.io/open-webui/open-webui:main")))
    assert "is not captured" in preflight_problems(webui)[0]
    assert preflight_problems(plan_for(project(PG))) == []  # generic
