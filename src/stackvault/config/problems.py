"""Problems of a configuration file (config layer): each named by key path and line.

`Problem` is one mistake at a key path; `validation_problems` turns pydantic's errors of one
entry into problems (unknown keys with a "did you mean", an inline password refused);
`format_problems` writes them as ``FILE:LINE: KEY: MESSAGE``, in file order.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from stackvault.config.yamlfile import KeyPath, YamlFile

INLINE_PASSWORD = (
    "an inline password is not accepted: give password_file (a file holding it), "
    "password_env (an environment variable) or password_command (a command printing it)"
)

_BUILTIN = {
    "missing": "is required",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
}


@dataclass(frozen=True)
class Problem:
    """One mistake: where (a key path of the file) and what (a sentence after the key)."""

    path: KeyPath
    message: str
    line: int | None = None
    """The line, when it is not the key's first (a key given twice)."""


def key_text(path: KeyPath) -> str:
    """``jobs.dify.copies[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_problems(problems: list[Problem], file: YamlFile) -> list[str]:
    """Each problem as ``FILE:LINE: KEY: MESSAGE``, sorted by line (then as given)."""
    lines = [(p.line or file.line(p.path), i, p) for i, p in enumerate(problems)]
    return [
        f"{file.name}:{line}: {key_text(p.path) or '(top)'}: {p.message}"
        for line, _, p in sorted(lines, key=lambda t: (t[0], t[1]))
    ]


def unknown_key(key: str, known: typing.Iterable[str]) -> str:
    """The message for an unknown key, with a close known one as "did you mean"."""
    if key == "password":
        return INLINE_PASSWORD
    names = sorted(known)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r}; did you mean {close[0]!r}?"
    return f"unknown key {key!r} (known: {', '.join(names)})"


def validation_problems(
    exc: ValidationError, model: type[BaseModel], prefix: KeyPath
) -> list[Problem]:
    """The errors of validating one entry of ``model`` found at ``prefix``."""
    out: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = (*prefix, *loc)
        if error["type"] == "extra_forbidden" and loc:
            out.append(Problem(path, unknown_key(str(loc[-1]), keys_of(model, loc[:-1]))))
        elif error["type"] == "config":
            out.append(Problem(path, str(error["msg"])))
        else:
            out.append(Problem(path, _BUILTIN.get(error["type"], "is invalid")))
    return out


def keys_of(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the record at ``loc`` inside ``model`` accepts (by walking its annotations)."""
    current: object = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next(
                (f for n, f in current.model_fields.items() if (f.alias or n) == part), None
            )
            if field is None:
                return []
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _unwrap(tp: object) -> object:
    """``X | None`` → X."""
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp
