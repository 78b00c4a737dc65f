"""The systemd units of ``deploy/systemd/``: parsed (the keys that make them work), and checked by
``systemd-analyze verify`` (installed with the test dependencies; any warning fails: unknown
keys and bad values are only warnings to it). The executable is pointed at this venv's
``stackvault`` and the templates instantiated as ``@etc``, since verify wants both to exist."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/usr/local/bin/stackvault"


def parse(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values (systemd repeats keys; comments and blank lines skipped)."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path.name}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def test_daemon_unit() -> None:
    unit = parse(DEPLOY / "stackvault.service")
    service = unit["Service"]
    assert service["ExecStart"] == [
        f"{INSTALLED} serve --config /etc/stackvault/stackvault.yaml"
        " --metrics-listen 127.0.0.1:9598"
    ]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Restart"] == ["on-failure"]
    assert service["NoNewPrivileges"] == ["true"]
    assert service["ProtectSystem"] == ["full"]  # not strict: local repositories anywhere
    assert "ProtectHome" not in service  # a backup reads /home
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_run_template_and_timer() -> None:
    service = parse(DEPLOY / "stackvault-run@.service")["Service"]
    assert service["Type"] == ["oneshot"]
    (exec_start,) = service["ExecStart"]
    assert exec_start.startswith(f"{INSTALLED} run %i --trigger schedule ")
    assert service["SuccessExitStatus"] == ["3"]
    timer = parse(DEPLOY / "stackvault-run@.timer")
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == ["true"]
    assert timer["Install"]["WantedBy"] == ["timers.target"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, (
        "systemd-analyze is missing: scripts/install-test-deps.sh installs it"
    )
    exe = Path(sys.executable).parent / "stackvault"
    assert exe.exists(), exe
    names = {
        "stackvault.service": "stackvault.service",
        "stackvault-run@.service": "stackvault-run@etc.service",
        "stackvault-run@.timer": "stackvault-run@etc.timer",
    }
    for source, target in names.items():
        text = (DEPLOY / source).read_text().replace(INSTALLED, str(exe))
        (tmp_path / target).write_text(text)
    proc = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / t) for t in names.values())],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
