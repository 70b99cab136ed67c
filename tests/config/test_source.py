"""The reader's guards: size, depth, alias bombs, duplicate keys, syntax errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pymesh.config.load import Text, load
from pymesh.config.source import Limits, read_file, read_text
from pymesh.errors import ConfigError

BOMB = "\n".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]",
        "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]",
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]",
        "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]",
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]",
        "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]",
        "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]",
        "h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]",
        "i: [*h, *h, *h, *h, *h, *h, *h, *h, *h]",
    ]
)


@pytest.mark.timeout(5)
def test_billion_laughs_is_refused_before_expansion() -> None:
    docs, issues = read_text(BOMB, "bomb.yaml", Limits())
    assert docs == []
    assert len(issues) == 1
    assert "alias expansion bomb" in issues[0].message
    assert issues[0].file == "bomb.yaml"
    assert issues[0].line is not None


def test_small_aliases_are_fine() -> None:
    docs, issues = read_text("a: &x {k: v}\nb: *x\n", "ok.yaml", Limits())
    assert issues == []
    assert len(docs) == 1


def test_recursive_alias_is_refused() -> None:
    docs, issues = read_text("a: &x [1, *x]\n", "loop.yaml", Limits())
    # libyaml either refuses the self-reference itself or composes a cycle we catch.
    assert docs == []
    assert issues, "a self-referencing alias must not load"


def test_deep_nesting_is_refused_by_the_reader_when_aliases_are_possible() -> None:
    text = "a: &x 1\nx: " + "[" * 100 + "]" * 100
    docs, issues = read_text(text, "deep.yaml", Limits(max_depth=64))
    assert docs == []
    assert "nesting deeper than 64" in issues[0].message


@pytest.mark.timeout(5)
def test_deep_nesting_is_a_config_error_in_any_field() -> None:
    deep = "[" * 900 + "]" * 900
    for field in ("hosts", "exportTo"):  # a typed list, and a list of strings
        head = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\n"
        text = head + f"spec: {{{field}: {deep}}}\n"
        with pytest.raises(ConfigError):
            load([Text(text, "deep.yaml")])
    owner = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, ownerReferences: "
    with pytest.raises(ConfigError) as info:
        load([Text(owner + deep + "}\nspec: {host: a}\n", "deep.yaml")])  # a free-form field: measured
    assert any("nesting deeper than" in i.message for i in info.value.issues)


def test_duplicate_keys_are_an_error_with_both_lines() -> None:
    text = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\n"
            "spec:\n  host: a\n  host: b\n")
    with pytest.raises(ConfigError) as info:
        load([Text(text, "dup.yaml")])
    (issue,) = info.value.errors
    assert issue.message == "duplicate key 'host' (first at line 5)"
    assert (issue.path, issue.line, issue.column) == ("spec.host", 6, 3)


def test_duplicate_keys_are_found_by_the_reader_when_aliases_are_possible() -> None:
    text = "a: &x 1\nspec:\n  hosts: [a]\n  hosts: [b]\n"
    docs, issues = read_text(text, "dup.yaml", Limits())
    assert docs == []
    assert issues[0].message == "duplicate key 'hosts' (first at line 3)"
    assert (issues[0].line, issues[0].column) == (4, 3)


def test_oversized_file_is_refused_without_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 2000)
    docs, issues = read_file(big, Limits(max_file_bytes=1000))
    assert docs == []
    assert "over the limit of 1000" in issues[0].message


def test_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    _, issues = read_file(bad, Limits())
    assert "not UTF-8" in issues[0].message


def test_syntax_error_points_at_the_line() -> None:
    docs, issues = read_text("a: 1\n---\nb: [1, 2\n", "broken.yaml", Limits())
    assert len(docs) == 1  # the document before the error still composed
    assert issues[0].message.startswith("YAML syntax:")
    assert issues[0].document == 1
    assert issues[0].line is not None
    assert issues[0].line >= 3


def test_empty_documents_are_skipped_but_counted() -> None:
    docs, issues = read_text("---\n---\na: 1\n---\n", "e.yaml", Limits())
    assert issues == []
    assert [d.index for d in docs] == [1]


def test_json_is_read_too() -> None:
    docs, issues = read_text('{"apiVersion": "v1", "kind": "X"}', "x.json", Limits())
    assert issues == []
    assert len(docs) == 1
