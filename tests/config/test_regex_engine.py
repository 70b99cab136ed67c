"""Which engine matches a config regex: Python's ``re`` where it cannot backtrack badly, RE2 otherwise."""

from __future__ import annotations

import re

import pytest

from pymesh.config.types import compile_re2


@pytest.mark.parametrize("pattern", [
    r"^(a+)+$",  # nested repeats: exponential
    r"(a|aa)*",  # an alternation under a repeat
    r"^.*a.*a.*a.*b$",  # long repeats in sequence: O(n^4) for a backtracking engine
    r".{0,1000}a.{0,1000}b",  # bounded, but long enough to be polynomial
    r"/api/v[0-9]+/.*",
])
def test_patterns_that_can_backtrack_are_matched_by_re2(pattern: str) -> None:
    compiled = compile_re2(pattern)
    assert not isinstance(compiled, re.Pattern)
    assert type(compiled).__module__.split(".")[0] == "re2"


@pytest.mark.parametrize("pattern", [r"^/api/.*", r".*", r"v[12]", r"/reviews/[0-9]{1,8}"])
def test_patterns_with_at_most_one_long_repeat_stay_on_re(pattern: str) -> None:
    assert isinstance(compile_re2(pattern), re.Pattern)


@pytest.mark.parametrize(("pattern", "text", "expected"), [
    (r"^.*a.*a.*a.*b$", "xaxaxaxb", True),
    (r"^.*a.*a.*a.*b$", "a" * 3000, False),  # the input that takes Python's re minutes
    (r"/api/v[0-9]+/.*", "/api/v2/users", True),
    (r"/api/v[0-9]+/.*", "/api/vx/users", False),
])
def test_both_engines_give_full_match_semantics(pattern: str, text: str, expected: bool) -> None:
    assert (compile_re2(pattern).fullmatch(text) is not None) is expected
