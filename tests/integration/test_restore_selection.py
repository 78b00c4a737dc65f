"""A restore of some paths (``--include`` / ``--exclude``) decodes only the trees it needs: a
directory nothing below which can be restored is not descended into, and what is restored is
exactly what a walk of every tree restores."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import describe
from stackvault.crypto.kdf import KdfParams
from stackvault.engine.backup import BackupJob, BackupOptions
from stackvault.engine.restore import FileRestoreOptions, RestoreJob
from stackvault.repo.repository import Repository
from stackvault.store.memory import MemoryStore

PW = b"restore selection"
FAST_KDF = KdfParams(memory_kib=8 * 1024, iterations=1)


def _tree(root: Path) -> Path:
    """data/{a,b}/{x,y}/ with two files each, b/keep, and c/one.txt."""
    for top in ("a", "b"):
        for sub in ("x", "y"):
            folder = root / top / sub
            folder.mkdir(parents=True)
            (folder / "one.txt").write_text(f"{top}/{sub}/one")
            (folder / "two.log").write_text(f"{top}/{sub}/two")
    (root / "b" / "keep").write_text("keep")
    (root / "c").mkdir()
    (root / "c" / "one.txt").write_text("c/one")
    return root


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> tuple[MemoryStore, Path]:
    data = _tree(tmp_path_factory.mktemp("sel") / "data")
    store = MemoryStore()
    Repository.init(store, PW, kdf=FAST_KDF)
    repo = Repository.open(store, PW)
    with repo.lock(exclusive=False, operation="backup"):
        repo.load_index()
        BackupJob(repo, BackupOptions(paths=[str(data)], processes=0)).run()
    return store, data


def _restore(
    store: MemoryStore, target: Path, monkeypatch: pytest.MonkeyPatch, prune: bool, **sel: object
) -> tuple[dict[str, object], set[str]]:
    """Restore with ``sel``; what was restored and the paths of the directories whose trees
    were loaded. ``prune=False`` descends into every directory, as before pruning existed."""
    repo = Repository.open(store, PW)
    repo.load_index()
    trees = {
        node.subtree: path
        for path, node in repo.iter_tree(repo.list_snapshots()[-1].tree, "")
        if node.type == "dir" and node.subtree is not None
    }
    loaded: set[str] = set()
    load = repo.load_tree

    def counting(tree_id: bytes) -> list:  # type: ignore[type-arg]
        if tree_id in trees:
            loaded.add(trees[tree_id])
        return load(tree_id)

    monkeypatch.setattr(repo, "load_tree", counting)
    if not prune:
        monkeypatch.setattr(RestoreJob, "_descend", lambda self, place, node: True)
    options = FileRestoreOptions(target=str(target), processes=0, **sel)  # type: ignore[arg-type]
    RestoreJob(repo, repo.list_snapshots()[-1], options).run()
    monkeypatch.undo()
    return (describe(target) if target.exists() else {}), loaded


def _rel(data: Path, path: str) -> str:
    return str(data / path)


@pytest.mark.parametrize(
    ("selection", "descended", "skipped"),
    [
        ({"include": ["{data}/a"]}, ["a", "a/x", "a/y"], ["b", "b/x", "c"]),
        ({"include": ["{data}/b/x/one.txt"]}, ["b", "b/x"], ["a", "b/y", "c"]),
        ({"exclude": ["{data}/b"]}, ["a", "a/x", "c"], ["b", "b/x", "b/y"]),
        ({"include": ["{data}/b"], "exclude": ["{data}/b/y"]}, ["b", "b/x"], ["a", "b/y"]),
        ({"exclude": ["{data}/b", "!{data}/b/keep"]}, ["a", "c"], []),
        ({"include": ["one.txt"]}, ["a", "a/x", "b/y", "c"], []),
        ({"include": ["{data}/*/x"]}, ["a", "b", "a/x", "b/x"], []),
        ({"iexclude": ["{data}/A"]}, ["b", "c"], ["a", "a/x"]),
    ],
    ids=[
        "include-dir",
        "include-file",
        "exclude-dir",
        "include-and-exclude",
        "exclude-with-negation",
        "include-basename",
        "include-wildcard",
        "iexclude",
    ],
)
def test_a_selection_restores_what_a_full_walk_restores_and_skips_unneeded_trees(
    backed_up: tuple[MemoryStore, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    selection: dict[str, list[str]],
    descended: list[str],
    skipped: list[str],
) -> None:
    store, data = backed_up
    sel = {k: [p.replace("{data}", str(data)) for p in v] for k, v in selection.items()}
    pruned, loaded = _restore(store, tmp_path / "pruned", monkeypatch, True, **sel)
    full, loaded_all = _restore(store, tmp_path / "full", monkeypatch, False, **sel)
    assert pruned == full
    assert pruned  # every selection restores something
    dirs = {_rel(data, d) for d in ("a", "a/x", "a/y", "b", "b/x", "b/y", "c")}
    assert loaded_all >= dirs
    assert {_rel(data, d) for d in descended} <= loaded
    assert not {_rel(data, d) for d in skipped} & loaded


def test_a_selection_of_nothing_that_exists_restores_nothing_and_loads_no_subtree(
    backed_up: tuple[MemoryStore, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, data = backed_up
    restored, loaded = _restore(
        store, tmp_path / "out", monkeypatch, True, include=[f"{data}/nowhere"]
    )
    assert not [k for k in restored if k.endswith((".txt", ".log", "keep"))]
    assert not loaded & {_rel(data, d) for d in ("a", "b", "c")}
