"""One set of ``?key=value`` rules (urloptions.py) for source URLs and S3 locations."""

from __future__ import annotations

import pytest

from stackvault.errors import UsageError
from stackvault.sources.url import SourceURL
from stackvault.store.s3options import S3Options
from stackvault.urloptions import (
    FALSE_WORDS,
    TRUE_WORDS,
    number_at_least,
    positive_float,
    positive_int,
    yes_no,
)


@pytest.mark.parametrize("word", sorted(TRUE_WORDS | FALSE_WORDS))
def test_source_urls_and_s3_locations_take_the_same_yes_no_words(word: str) -> None:
    for spelled in (word, word.upper()):
        expected = yes_no(spelled)
        assert expected is (word in TRUE_WORDS)
        assert SourceURL.parse(f"s3-bucket://b?create-bucket={spelled}").flag("create-bucket") is (
            expected
        )
        assert S3Options.from_url(f"s3://b?tls-verify={spelled}", {}).verify is expected


def test_a_word_that_is_neither_is_refused_by_both() -> None:
    with pytest.raises(ValueError, match="expected true or false, got 'maybe'"):
        yes_no("maybe")
    with pytest.raises(UsageError, match="is not a yes/no value"):
        SourceURL.parse("s3-bucket://b?create-bucket=maybe").flag("create-bucket")
    with pytest.raises(UsageError, match="bad value for S3 option 'tls-verify'"):
        S3Options.from_url("s3://b?tls-verify=maybe", {})


def test_numbers() -> None:
    assert number_at_least("1.5", 1) == 1.5
    for bad in ("0.5", "x", ""):
        with pytest.raises(ValueError, match="must be a number >= 1"):
            number_at_least(bad, 1)
    assert positive_int("3") == 3
    with pytest.raises(ValueError, match="must be at least 1, got 0"):
        positive_int("0")
    assert positive_float("0.1") == 0.1
    with pytest.raises(ValueError, match="must be positive, got 0"):
        positive_float("0")
    with pytest.raises(UsageError, match=r"option timeout='0' of .* must be a number >= 1"):
        SourceURL.parse("redis://h?timeout=0").number("timeout", 300.0, minimum=1)
