"""``?key=value`` options of locations and source URLs (leaf module): the value rules.

One set of rules for every kind of URL — a repository's ``s3://`` location (`store`) and a
source's URL (`sources`) — so that ``?tls-verify=no`` and ``?delete-extra=no`` accept the same
words. Each function takes an option's text and returns its value or raises `ValueError`
with a short reason; the caller names the option and the URL (credentials redacted) in its
own `UsageError`.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

TRUE_WORDS = frozenset({"", "1", "true", "yes", "on"})
"""What a yes/no option accepts for yes (case-insensitive); ``?key`` alone means yes."""
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
"""What a yes/no option accepts for no (case-insensitive)."""


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The ``key=value`` pairs of a URL's query, in order, blank values kept (``?key``)."""
    return parse_qsl(query, keep_blank_values=True)


def yes_no(value: str) -> bool:
    """A yes/no option: one of `TRUE_WORDS` or `FALSE_WORDS`."""
    low = value.lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def number_at_least(value: str, minimum: float) -> float:
    """A number (``float`` syntax) not below ``minimum``."""
    try:
        number = float(value)
    except ValueError:
        number = minimum - 1
    if number < minimum:
        raise ValueError(f"must be a number >= {minimum}")
    return number


def positive_int(value: str) -> int:
    """A whole number of at least 1 (``int`` syntax)."""
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def positive_float(value: str) -> float:
    """A number above 0 (``float`` syntax)."""
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be positive, got {value}")
    return number
