"""The drill's probes (stack layer): the restore's validations as drill probes, and HTTP probes
sent from inside the sandbox (see `stackvault.stack.drill`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from stackvault.records.drill import (
    DrillProbe,
    ProbeStatus,
)
from stackvault.records.plan import MYSQL, POSTGRES, REDIS, ProbePlan
from stackvault.records.stack import StackManifest
from stackvault.repo.snapshot import Snapshot
from stackvault.stack.drill.cleanup import Listed, containers
from stackvault.stack.drill.labels import LABEL_DRILL_PROJECT, SANDBOX_SUFFIX
from stackvault.stack.restorereport import StackRestore, Validation

if TYPE_CHECKING:
    from docker import DockerClient


_FETCH = r"""u="$1"
if command -v curl >/dev/null 2>&1; then
  curl -s -o /dev/null -w '%{http_code}' --max-time 10 --noproxy '*' "$u"; exit 0
elif command -v python3 >/dev/null 2>&1; then
  exec python3 -c 'import sys,urllib.request as r,urllib.error as e
o=r.build_opener(r.ProxyHandler({}))
try: print(o.open(sys.argv[1],timeout=10).status)
except e.HTTPError as x: print(x.code)
except Exception: print(0)' "$u"
elif command -v wget >/dev/null 2>&1; then
  wget -S -O /dev/null -T 10 "$u" 2>&1 | awk '/HTTP\//{c=$2} END{print c+0}'; exit 0
elif command -v bash >/dev/null 2>&1; then
  exec bash -c 'h=${1#http://}; p=${h%%/*}; path=/${h#*/}; [ "$p" = "$h" ] && path=/
  host=${p%%:*}; port=${p##*:}; [ "$port" = "$p" ] && port=80
  exec 3<>/dev/tcp/$host/$port || { echo 0; exit 0; }
  printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$path" "$p" >&3
  read -r _ code _ <&3; echo "${code:-0}"' bash "$u"
fi
echo NOTOOL; exit 127
"""
"""Sends one GET from inside a container (status code on stdout, 0 for no answer)."""


def restore_probes(
    restored: StackRestore, snapshot: Snapshot, m: StackManifest
) -> list[DrillProbe]:
    """The restore's validation as probes, by what each checked."""
    kinds = {a.name: a for a in snapshot.artifacts}
    probes: list[DrillProbe] = []
    for v in restored.validation:
        probes.append(_as_probe(v, kinds))
    if m.preset == "dify" and not any(v.subject.startswith("dify ") for v in restored.validation):
        probes.append(
            DrillProbe(
                "dify tenant keys",
                "skipped",
                "the plan has no PostgreSQL source or privkeys directory to check",
            )
        )
    return probes


def _as_probe(v: Validation, artifacts: dict[str, Any]) -> DrillProbe:
    status: ProbeStatus = "pass" if v.ok else "fail"
    if v.subject.startswith("artifact "):
        name = v.subject[len("artifact ") :]
        record = artifacts.get(name)
        kind = record.kind if record is not None else ""
        label = {
            POSTGRES: f"database {name}: loaded, accepts connections, row counts as recorded",
            MYSQL: f"database {name}: loaded, accepts connections, row counts as recorded",
            REDIS: f"redis {name}: keys as recorded",
            "docker-volume": f"volume {name}: files as recorded (SHA-256)",
        }.get(kind, f"artifact {name}")
        facts = (record.metadata or {}).get("facts") if record is not None else None
        if v.ok and not facts:
            return DrillProbe(label, "skipped", "the snapshot recorded no facts to compare")
        return DrillProbe(label, status, v.message)
    if v.subject == "dify tenants' private keys" and v.ok and "nothing to check" in v.message:
        return DrillProbe("dify tenant keys", "skipped", v.message)
    if v.subject == "dify tenants' private keys":
        return DrillProbe("dify tenant keys", status, v.message)
    if v.subject == "data directories":
        return DrillProbe("files: data directories (SHA-256)", status, v.message)
    return DrillProbe(v.subject, status, v.message)


def http_probe_inside(
    client: DockerClient, project: str, probe: ProbePlan, wait: float
) -> DrillProbe:
    """Send the plan's probe from inside the drill's namespace: exec a GET in the probe's
    service container, else in the sandbox, else in any container of the drill, until it
    answers the status or the wait ends."""
    import docker.errors

    name = f"http {probe.url}"
    candidates = drill_containers(client, project, probe.service)
    deadline = time.monotonic() + wait
    got = "no answer"
    while True:
        tried = False
        for container in candidates:
            try:
                found = client.containers.get(container.id)
                code, out = found.exec_run(["sh", "-c", _FETCH, "sh", probe.url])
            except docker.errors.DockerException:
                continue
            raw = out if isinstance(out, bytes) else b"".join(out or [])
            text = raw.decode("utf-8", "replace").strip()
            if code == 127 or text.endswith("NOTOOL") or not text.isdigit():
                continue
            tried = True
            status = int(text)
            if status == probe.status:
                return DrillProbe(name, "pass", f"answered {status} inside the drill")
            got = f"answered {status}" if status else "no answer"
            break
        if not tried:
            return DrillProbe(
                name,
                "skipped",
                "no container of the drill has sh with curl, python3, wget or bash to send it",
            )
        if time.monotonic() > deadline:
            return DrillProbe(name, "fail", f"{got}, not {probe.status}, within {wait:.0f} s")
        time.sleep(1.0)


def drill_containers(client: DockerClient, project: str, service: str | None) -> list[Listed]:
    """The running containers of the drill: the probe's service first, then the sandbox."""
    found = containers(client, f"{LABEL_DRILL_PROJECT}={project}", running=True)
    sandbox = project + SANDBOX_SUFFIX

    def rank(c: Listed) -> int:
        if service and c.labels.get("com.docker.compose.service") == service:
            return 0
        return 1 if c.name == sandbox else 2

    return sorted(found, key=rank)


# --- cleanup -----------------------------------------------------------------------------
