"""`stackvault init` (cli, end to end): concurrent inits of one location, and argument ranges."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import Result

Cli = Callable[..., Result]


def test_five_concurrent_inits_of_one_directory_make_one_repository(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    # A KDF slow enough that every process is past its "no config yet" check before the first
    # one writes its config: the race is then real, not a matter of luck.
    argv = ["init", "--kdf-memory", "64", "--kdf-iterations", "6"]
    procs = []
    for n in range(5):
        env = {**os.environ, "STACKVAULT_REPOSITORY": str(repo), "STACKVAULT_PASSWORD": f"pw-{n}"}
        env.pop("STACKVAULT_PASSWORD_FILE", None)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "stackvault", *argv],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [(p.wait(120), *p.communicate()) for p in procs]
    winners = [n for n, (code, _out, _err) in enumerate(results) if code == 0]
    assert len(winners) == 1, results
    for n, (code, _out, err) in enumerate(results):
        if n in winners:
            continue
        assert code == 1, err  # RepositoryExists, as for an init of an existing repository
        assert len(err.strip().splitlines()) == 1, err
        assert "already exists" in err or "another process at the same time" in err, err
    assert len(os.listdir(repo / "keys")) == 1  # no loser's key left behind
    base = {**os.environ, "STACKVAULT_REPOSITORY": str(repo)}
    for n in range(5):
        res = subprocess.run(
            [sys.executable, "-m", "stackvault", "snapshots"],
            env={**base, "STACKVAULT_PASSWORD": f"pw-{n}"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == (0 if n == winners[0] else 12), (n, res.stderr)


def test_kdf_arguments_out_of_range_are_usage_errors(cli: Cli, repo_env: Path) -> None:
    for args, words in [
        (["--kdf-memory", "10000000"], "give 1 to 4096 MiB"),
        (["--kdf-memory", "0"], "give 1 to 4096 MiB"),
        (["--kdf-iterations", "0"], "give 1 to 1000"),
        (["--kdf-iterations", "100000"], "give 1 to 1000"),
    ]:
        res = cli("init", *args)
        assert res.code == 2, res.err
        assert words in res.err and "internal error" not in res.err
        assert len(res.err.strip().splitlines()) == 1
    assert not repo_env.exists() or not (repo_env / "config").exists()
