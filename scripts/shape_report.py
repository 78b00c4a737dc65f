"""Print figures about the package's shape: the numbers a structural review compares.

Usage: python scripts/shape_report.py [--json] [SRC]

Reports, for ``src/stackvault`` by default:

- the number of ``dict[str, Any]`` annotations (untyped records crossing boundaries);
- the ten largest modules by lines;
- every function or method longer than 80 lines;
- import cycles between modules (strongly connected components of the module
  import graph, counting imports made inside functions too).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

LONG_FUNCTION = 80


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(root: Path, path: Path, modules: set[str]) -> set[str]:
    name = module_name(root, path)
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(name, path.name == "__init__.py", node)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop()
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, sorted(graph.get(child, ()))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return sorted(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default="src/stackvault")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(args.src)
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    modules = {module_name(root, p) for p in files}
    graph = {module_name(root, p): imports_of(root, p, modules) for p in files}
    # A package's __init__ importing its own submodules is not a design cycle.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    untyped = 0
    sizes: list[tuple[int, str]] = []
    long_functions: list[tuple[int, str]] = []
    for path in files:
        text = path.read_text()
        untyped += text.count("dict[str, Any]")
        sizes.append((len(text.splitlines()), str(path.relative_to(root.parent))))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LONG_FUNCTION:
                    where = f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"
                    long_functions.append((length, where))
    sizes.sort(reverse=True)
    long_functions.sort(reverse=True)
    found = cycles(graph)
    report = {
        "modules": len(files),
        "lines": sum(n for n, _ in sizes),
        "dict_str_any": untyped,
        "largest_modules": [{"lines": n, "module": m} for n, m in sizes[:10]],
        "functions_over_80_lines": [{"lines": n, "function": f} for n, f in long_functions],
        "import_cycles": found,
    }
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(f"modules: {report['modules']}, lines: {report['lines']}")
    print(f"dict[str, Any] annotations: {untyped}")
    print("largest modules:")
    for n, m in sizes[:10]:
        print(f"  {n:5d}  {m}")
    print(f"functions over {LONG_FUNCTION} lines: {len(long_functions)}")
    for n, f in long_functions:
        print(f"  {n:5d}  {f}")
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    raise SystemExit(main())
