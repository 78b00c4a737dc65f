"""The configuration file as YAML (config layer): its document and the line of every key.

PyYAML's node tree (`yaml.compose`) gives each key and list item its line; `YamlFile.line`
finds the line of a key path (``("jobs", "dify", "policy")``), or of its nearest ancestor
the file has. Mapping keys are read as strings (``1:`` is the key ``"1"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from stackvault.errors import ConfigError

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class YamlFile:
    """A parsed file: ``doc`` (plain data), ``lines`` (key path → 1-based line) and the keys
    given twice in one mapping (``duplicates``, each path with its second line)."""

    name: str
    doc: object
    lines: dict[KeyPath, int] = field(default_factory=dict)
    duplicates: list[tuple[KeyPath, int]] = field(default_factory=list)

    def line(self, path: KeyPath) -> int:
        """The line of ``path`` or of its nearest ancestor in the file (1 for the top)."""
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return 1


def read_yaml(path: str) -> YamlFile:
    """Read ``path``; `ConfigError` if it cannot be read or is not YAML (with its line)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"there is no configuration file {path}",
            hint="write one with: stackvault config init --output " + path,
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"cannot read the configuration file {path}: {reason}") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, name: str) -> YamlFile:
    """Parse ``text`` (the file ``name``, for messages)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {reason}") from None
    out = YamlFile(name, _string_keys(doc))
    if node is not None:
        _walk(node, (), out)
    return out


def _walk(node: yaml.Node, path: KeyPath, out: YamlFile) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            child = (*path, name)
            line = key.start_mark.line + 1
            if name in seen:
                out.duplicates.append((child, line))
            else:
                out.lines[child] = line
                seen.add(name)
            _walk(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out.lines.setdefault((*path, index), item.start_mark.line + 1)
            _walk(item, (*path, index), out)


def _string_keys(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_string_keys(v) for v in value]
    return value
