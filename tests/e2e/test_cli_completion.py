"""`stackvault completion bash|zsh|fish` and `stackvault man`: generated from the parser, so
they know every command and option."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import Result

Cli = Callable[..., Result]


def _complete(script: Path, *words: str) -> list[str]:
    """What bash completes for ``words`` (the last one being typed)."""
    quoted = " ".join(f"'{w}'" for w in words)
    run = subprocess.run(
        [
            "bash",
            "-c",
            f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
            'COMPREPLY=(); _stackvault; printf "%s\\n" "${COMPREPLY[@]}"',
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=script.parent,
    )
    return [w for w in run.stdout.splitlines() if w]


def test_bash_completes_commands_options_and_subcommands(tmp_path: Path, cli: Cli) -> None:
    res = cli("completion", "bash")
    assert res.code == 0, res.err
    script = tmp_path / "stackvault.bash"
    script.write_text(res.out)
    assert _complete(script, "stackvault", "-r", "/repo", "back") == ["backup"]
    assert _complete(script, "stackvault", "backup", "--exclude-i") == ["--exclude-if-present"]
    assert _complete(script, "stackvault", "key", "pa") == ["passwd"]
    assert _complete(script, "stackvault", "--repo", "/r", "key", "li") == ["list"]
    assert "--project" in _complete(script, "stackvault", "stack", "restore", "--pro")
    assert "--retry-lock" in _complete(script, "stackvault", "--re")
    (tmp_path / "data.txt").write_text("x")
    assert _complete(script, "stackvault", "backup", "da") == ["data.txt"]
    assert _complete(script, "stackvault", "backup", "--exclude-file", "da") == ["data.txt"]


def test_zsh_and_fish(cli: Cli) -> None:
    zsh = cli("completion", "zsh")
    assert zsh.code == 0 and zsh.out.startswith("#compdef stackvault")
    assert "bashcompinit" in zsh.out
    fish = cli("completion", "fish").out
    assert "complete -c stackvault -n '__fish_use_subcommand' -a backup" in fish
    assert "-l exclude-if-present -r -F" in fish
    assert "__fish_seen_subcommand_from key; and not __fish_seen_subcommand_from" in fish
    bad = cli("completion", "tcsh")
    assert bad.code == 2


def test_man_page(cli: Cli) -> None:
    res = cli("man")
    assert res.code == 0, res.err
    page = res.out
    assert page.startswith(".TH STACKVAULT 1")
    for section in (".SH NAME", ".SH SYNOPSIS", ".SH GLOBAL OPTIONS", ".SH COMMANDS"):
        assert section in page
    for command in ("backup", "restore", "forget", "key add", "stack restore", "find", "tag"):
        assert f"\n.SS {command}\n" in page
    assert "\\fB\\-\\-retry\\-lock DURATION\\fR" in page
    assert all(ord(c) < 128 for c in page)
