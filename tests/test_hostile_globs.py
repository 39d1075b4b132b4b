"""allowed_models patterns are matched in linear time, and exactly as the regex did."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from conduit_tornado.admission.keys import Globs

ALPHABET = "ab*."


def as_regex(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$")


@given(st.text(ALPHABET, max_size=8), st.text("ab.", max_size=12))
def test_same_answers_as_the_regex(pattern: str, name: str) -> None:
    globs = Globs.of([pattern])
    assert globs is not None
    assert globs.match(name) == (as_regex(pattern).match(name) is not None)


def globs(*patterns: str) -> Globs:
    made = Globs.of(list(patterns))
    assert made is not None
    return made


def test_many_stars_on_a_long_name_answer_at_once() -> None:
    # As a regex this backtracks through ~200^12 ways before answering no.
    pattern = "*a" * 12 + "*b"
    assert globs(pattern).match("a" * 199 + "b")
    assert not globs(pattern).match("a" * 200)
    assert globs("gpt-*", "claude").match("claude")
    assert not globs("gpt-*", "claude").match("claude-2")
    assert Globs.of([]) is None
