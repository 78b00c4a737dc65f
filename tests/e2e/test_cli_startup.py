"""Start-up stays light: help and version must not import the engine or native libraries.

Every command pays its process start-up (a no-change backup is measured wall-clock against
restic), so heavy modules are imported only inside the command that needs them.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["rich", "cryptography", "zstandard", "blake3", "pyfastcdc", "stackvault.repo", "typer"]


def _loaded_after(argv: list[str]) -> set[str]:
    script = (
        "import sys\n"
        "from stackvault.cli.main import main\n"
        f"code = main({argv!r})\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    *_, loaded, code = proc.stdout.strip().splitlines()
    assert code == "0"
    return {m for m in loaded.split(",") if m}


def test_version_imports_nothing_heavy() -> None:
    assert _loaded_after(["--version"]) == set()


def test_command_help_imports_nothing_heavy() -> None:
    assert _loaded_after(["backup", "--help"]) == set()
