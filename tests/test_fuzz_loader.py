"""Property-based tests: however the corpus is mangled, ``load`` returns a Config or raises ConfigError.

Seeds are the valid documents of the conformance corpus. Mutations work on the decoded data
(delete, rename or insert a key, swap a value for another type, duplicate a list item) or on
the text (truncate, inject characters, duplicate a line, inject raw bytes into a file). Every
issue of the outcome must have a non-empty message and, when it gives a line, a line inside
the text it was read from. Bugs found on the way are pinned as strict xfails at the end.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from pymesh.config.load import Config, Text, load
from pymesh.errors import ConfigError, Issue
from pymesh.snapshot.snapshot import build
from pymesh.workload import Workload
from tests.conftest import shared_dir

CORPUS = shared_dir() / "conformance"
SEED_FILES = sorted(
    [
        *(CORPUS / "bookinfo").glob("*.yaml"),
        *(CORPUS / "istio-tutorial").glob("*.y*ml"),
        *(CORPUS / "legacy").glob("*.y*ml"),
        *(CORPUS / "validation").glob("*-valid.yaml"),
    ]
)
SEEDS: list[tuple[str, str, str, list[Any]]] = [
    (
        p.name,
        "tutorial" if p.parent.name == "istio-tutorial" else "default",
        p.read_text(encoding="utf-8"),
        [d for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d is not None],
    )
    for p in SEED_FILES
]

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# YAML's line breaks (libyaml counts these, and only these).
_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


def yaml_lines(text: str) -> int:
    return len(_BREAK.findall(text)) + 1


def check_issue(issue: Issue, text: str | None, name: str) -> None:
    assert issue.severity in ("error", "warning")
    assert issue.message.strip(), issue
    assert issue.file == name
    assert str(issue)
    assert issue.document is None or issue.document >= 0
    if issue.line is None or text is None:
        return
    assert issue.column is not None, issue
    assert issue.column >= 1, issue
    last = yaml_lines(text)
    if issue.message.startswith("YAML syntax") and issue.line == last + 1 and issue.column == 1:
        # libyaml adds a virtual line break at the end of a text that lacks one and reports
        # "unexpected end" there, one line past the text: see test_syntax_error_at_the_end_points_inside_the_text.
        return
    assert 1 <= issue.line <= last, f"line {issue.line} outside a {last}-line text: {issue}"


def _note(label: str) -> None:
    if currently_in_test_context():  # the pinned-bug tests below call outcome() outside hypothesis
        event(label)


def outcome(text: str, name: str, namespace: str = "default") -> Config | ConfigError:
    """Load ``text``; anything but a Config or a ConfigError fails the test (pytest shows the traceback)."""
    result: Config | ConfigError
    try:
        result = load([Text(text, name)], namespace=namespace)
    except ConfigError as err:
        result = err
    if isinstance(result, ConfigError):
        _note("rejected")
        assert result.errors, "a ConfigError carries at least one error"
        issues = result.issues
    else:
        _note("loaded")
        issues = result.warnings
    for issue in issues:
        check_issue(issue, text, name)
    return result


def dump(docs: list[Any]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)


# -- mutations of decoded documents ----------------------------------------------------------------

Slot = tuple[Any, Any]  # (container, key or index)


def slots(node: Any) -> Iterator[Slot]:
    """Every (container, key) position in a tree of dicts and lists."""
    if isinstance(node, dict):
        for key in list(node):
            yield node, key
            yield from slots(node[key])
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield node, i
            yield from slots(item)


def containers(node: Any, kind: type) -> Iterator[Any]:
    if isinstance(node, kind):
        yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from containers(value, kind)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item, kind)


scalars = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
    st.sampled_from(["on", "off", "yes", "NO", "010", "0x1F", "1:30", "1e3", "~", "", "*", ".", "-", "null",
                     "1s", "-1s", "100", "ISTIO_MUTUAL", "STRICT", "mesh", "default", "a/b", "unix://@x"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=8), inner, max_size=3),
    ),
    max_leaves=6,
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["apiVersion", "kind", "metadata", "spec", "name", "namespace", "hosts", "host", "route",
                     "destination", "subset", "weight", "match", "http", "tcp", "tls", "mode", "selector",
                     "rules", "from", "to", "when", "ports", "number", "protocol", "_err", "<<"]),
    st.integers(min_value=-5, max_value=5),
    st.booleans(),
)


def _rename(key: Any, draw: Any) -> Any:
    if not isinstance(key, str) or not key:
        return draw(keys)
    variants = [
        key[:-1],  # a typo: last letter dropped
        key.upper(),
        key.lower(),
        re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(),  # camelCase -> snake_case
        key + key[-1],
    ]
    return draw(st.one_of(st.sampled_from(variants), keys))


@st.composite
def mutated_documents(draw: Any) -> tuple[str, str, list[Any]]:
    name, namespace, _, seed = draw(st.sampled_from(SEEDS))
    docs = copy.deepcopy(seed)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["delete", "rename", "retype", "duplicate", "insert", "drop-document"]))
        if op == "drop-document" and len(docs) > 1:
            docs.pop(draw(st.integers(min_value=0, max_value=len(docs) - 1)))
            continue
        if op in ("delete", "rename", "insert"):
            maps = list(containers(docs, dict))
            if not maps:
                continue
            target = draw(st.sampled_from(maps))
            if op == "insert":
                target[draw(keys)] = draw(values)
                continue
            if not target:
                continue
            key = draw(st.sampled_from(list(target)))
            value = target.pop(key)
            if op == "rename":
                target[_rename(key, draw)] = value
        elif op == "retype":
            places = list(slots(docs))
            if places:
                container, key = draw(st.sampled_from(places))
                container[key] = draw(values)
        elif op == "duplicate":
            lists = [x for x in containers(docs, list) if x]
            if lists:
                target = draw(st.sampled_from(lists))
                i = draw(st.integers(min_value=0, max_value=len(target) - 1))
                target.insert(i, copy.deepcopy(target[i]))
    return name, namespace, docs


@FUZZ
@given(mutated_documents())
def test_mutated_documents_load_or_fail_cleanly(case: tuple[str, str, list[Any]]) -> None:
    name, namespace, docs = case
    outcome(dump(docs), name, namespace)


@FUZZ
@given(mutated_documents())
def test_whatever_loads_also_compiles_into_a_snapshot(case: tuple[str, str, list[Any]]) -> None:
    name, namespace, docs = case
    result = outcome(dump(docs), name, namespace)
    if isinstance(result, Config):
        build(result, Workload(name="fuzz", namespace=namespace, labels={"app": "reviews", "version": "v1"}))


# -- mutations of the text ---------------------------------------------------------------------------

# Any character, lone surrogates and "!" (YAML tags) included.
injected = st.text(alphabet=st.characters(), min_size=1, max_size=8)
structural = st.sampled_from([":", "- ", "---\n", "...\n", "{", "}", "[", "]", "&a ", "*a", "#", "|", ">", "'",
                              '"', "\t", "\n", "  ", "\n  ", "%", "@", "`", "? ", "<<: ", "\r", "\u2028"])


@st.composite
def mutated_text(draw: Any) -> tuple[str, str, str]:
    name, namespace, text, _ = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        op = draw(st.sampled_from(["truncate", "inject", "structural", "duplicate-line", "delete-line"]))
        pos = draw(st.integers(min_value=0, max_value=len(text)))
        if op == "truncate":
            text = text[:pos]
        elif op == "inject":
            text = text[:pos] + draw(injected) + text[pos:]
        elif op == "structural":
            text = text[:pos] + draw(structural) + text[pos:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
                if op == "duplicate-line":
                    lines.insert(i, lines[i])
                else:
                    lines.pop(i)
                text = "".join(lines)
    return name, namespace, text


@FUZZ
@given(mutated_text())
@example(("x.yaml", "default", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\n"
          "spec: {hosts: [a], http: [{route: [{destination: {host: a}}]}"))
@example(("x.yaml", "default", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |\n"
          "    trustDomain: [\n"))
def test_mutated_text_loads_or_fails_cleanly(case: tuple[str, str, str]) -> None:
    name, namespace, text = case
    outcome(text, name, namespace)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pymesh-fuzz-") as d:
        yield Path(d)


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    where=st.floats(min_value=0.0, max_value=1.0),
    junk=st.binary(min_size=1, max_size=16),
)
def test_raw_bytes_in_a_file_load_or_fail_cleanly(
    scratch: Path, seed: tuple[str, str, str, list[Any]], where: float, junk: bytes
) -> None:
    name, namespace, text, _ = seed
    data = text.encode("utf-8")
    pos = int(where * len(data))
    path = scratch / name
    path.write_bytes(data[:pos] + junk + data[pos:])
    result: Config | ConfigError
    try:
        result = load([path], namespace=namespace)
    except ConfigError as err:
        result = err
    try:
        decoded: str | None = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        decoded = None  # no line to check against
        assert isinstance(result, ConfigError)
        (only,) = result.errors
        assert only.message.startswith("not UTF-8 text")
    if isinstance(result, ConfigError):
        assert result.errors
    for issue in result.issues if isinstance(result, ConfigError) else result.warnings:
        check_issue(issue, decoded, str(path))


# -- random text -----------------------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300))
def test_random_unicode_never_crashes_the_loader(text: str) -> None:
    outcome(text, "random.yaml")


yamlish = st.text(alphabet=st.sampled_from(list("abc:-[]{},#&*!|>'\"%@? \n\t0123456789.~")), max_size=120)


@FUZZ
@given(yamlish)
def test_random_yaml_punctuation_never_crashes_the_loader(text: str) -> None:
    outcome(text, "random.yaml")


@FUZZ
@given(
    head=st.sampled_from(["networking.istio.io/v1 VirtualService", "networking.istio.io/v1 DestinationRule",
                          "security.istio.io/v1 AuthorizationPolicy", "config.istio.io/v1alpha2 handler",
                          "rbac.istio.io/v1alpha1 ServiceRoleBinding", "pymesh/v1 MeshConfig",
                          "authentication.istio.io/v1alpha1 Policy"]),
    spec=values,
)
def test_random_spec_of_a_known_kind_never_crashes_the_loader(head: str, spec: Any) -> None:
    api_version, kind = head.split()
    doc = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    outcome(yaml.safe_dump(doc, allow_unicode=True), "spec.yaml")


# -- bugs the fuzzing found, pinned --------------------------------------------------------------------------

HANDLER = """\
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: quota
spec:
  compiledAdapter: memquota
  params: {}
"""


@pytest.mark.parametrize("value", ["!foo {a: b}", "{a: !!int abc}", "{a: !!timestamp 2001-13-45}",
                                   "!!python/object:os.system {}"])
def test_tag_in_a_free_form_field_is_a_config_error(value: str) -> None:
    outcome(HANDLER.replace("params: {}", f"params: {value}"), "handler.yaml")


def test_tag_in_metadata_owner_references_is_a_config_error() -> None:
    text = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            "metadata: {name: a, ownerReferences: !!int zz}\nspec: {host: a}\n")
    outcome(text, "dr.yaml")


def test_lone_surrogate_in_text_is_a_config_error() -> None:
    outcome("apiVersion: v1\nkind: \ud800\n", "surrogate.yaml")


def test_syntax_error_at_the_end_points_inside_the_text() -> None:
    text = "apiVersion: networking.istio.io/v1\nkind: [VirtualService"
    err = outcome(text, "eof.yaml")
    assert isinstance(err, ConfigError)
    (issue,) = err.errors
    assert issue.line is not None
    assert issue.line <= yaml_lines(text)


def test_control_character_is_reported_on_one_line_at_its_position() -> None:
    err = outcome("apiVersion: v1\nkind: a\x00b\n", "nul.yaml")
    assert isinstance(err, ConfigError)
    (issue,) = err.errors
    assert "\n" not in issue.message, issue.message
    assert (issue.line, issue.column) == (2, 8)
