"""docs/configuration.md is generated from the models and pymesh/config/support.py, and stays so."""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.config.decode import INVALID, Report, decode, field
from pymesh.config.kinds import KINDS
from pymesh.config.support import METADATA, SUPPORT, Support, lookup, parse_pattern, support_for
from pymesh.config.types import Duration, Labels, Port
from tools import gen_config_reference as gen

REGENERATE = "run: python tools/gen_config_reference.py"


def test_reference_is_what_the_generator_writes() -> None:
    current = gen.OUTPUT.read_text(encoding="utf-8") if gen.OUTPUT.exists() else ""
    expected = gen.render()
    if current != expected:
        diff = difflib.unified_diff(current.splitlines(), expected.splitlines(), "docs/configuration.md",
                                    "generated", lineterm="", n=1)
        shown = "\n".join(list(diff)[:40])
        pytest.fail(f"docs/configuration.md is out of date; {REGENERATE}\n{shown}")


def test_every_support_pattern_names_a_real_kind_and_field() -> None:
    assert gen.stale_patterns() == []


def test_every_kind_is_in_the_reference_and_the_support_table() -> None:
    text = gen.OUTPUT.read_text(encoding="utf-8")
    names = [spec.kind for spec in KINDS.values()]
    assert len(set(names)) == len(names), "support patterns name kinds without their group"
    for spec in KINDS.values():
        assert f"\n### {spec.kind}\n" in text, spec.kind
        assert parse_pattern(lookup(spec.kind)[0]) == (spec.kind, "", True), f"no default entry for {spec.kind}"
    assert support_for(METADATA).status == "ignored"


def test_stale_patterns_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {**SUPPORT, "VirtualService.http.nope": Support("enforced"), "Nope": Support("enforced"),
             "DestinationRule.subsets.*": Support("enforced")}
    monkeypatch.setattr(gen, "SUPPORT", table)
    assert gen.stale_patterns() == ["VirtualService.http.nope", "Nope"]


def test_the_most_specific_pattern_wins() -> None:
    assert support_for("VirtualService", "http.route.destination.host").status == "enforced"
    assert str(support_for("VirtualService", "http.route.destination.port.name")) == "accepted (outbound routing)"
    assert support_for("VirtualService", "http.fault.delay.fixedDelay").status == "enforced"
    assert support_for("VirtualService", "http.fault.delay.exponentialDelay").status == "rejected"
    assert support_for("VirtualService", "hosts").status == "enforced"
    # An exact entry covers its own path only; a subtree entry covers everything under it.
    assert support_for("DestinationRule", "trafficPolicy").status == "enforced"
    assert str(support_for("DestinationRule", "trafficPolicy.connectionPool.tcp")) == "accepted (resilience)"
    assert support_for("DestinationRule", "trafficPolicy.tls.mode").status == "enforced"
    assert support_for("DestinationRule", "trafficPolicy.tls.credentialName").status == "ignored"
    assert support_for("ServiceEntry", "endpoints.locality").status == "enforced"
    assert lookup("ServiceEntry", "endpoints.locality")[0] == "ServiceEntry.endpoints.*"
    with pytest.raises(KeyError):
        support_for("NoSuchKind", "x")


def test_support_entries_say_what_they_mean() -> None:
    with pytest.raises(ValueError, match="area"):
        Support("accepted")
    with pytest.raises(ValueError, match="area"):
        Support("enforced", area="routing")
    with pytest.raises(ValueError, match="note"):
        Support("ignored")


# What a "rejected" entry promises: the decoder refuses the field. One case per entry.
REJECTED: dict[str, tuple[str, str]] = {
    "VirtualService.http.fault.delay.exponentialDelay": (
        "hosts: [a]\nhttp: [{fault: {delay: {exponentialDelay: 1s}}, route: [{destination: {host: a}}]}]",
        "spec.http[0].fault.delay.exponentialDelay",
    ),
    "VirtualService.http.fault.abort.http2Error": (
        "hosts: [a]\nhttp: [{fault: {abort: {http2Error: REFUSED_STREAM}}, route: [{destination: {host: a}}]}]",
        "spec.http[0].fault.abort.http2Error",
    ),
    "Gateway.servers.port.targetPort": (
        "servers: [{port: {number: 80, protocol: HTTP, name: http, targetPort: 8080}, hosts: ['*.example.com']}]",
        "spec.servers[0].port.targetPort",
    ),
}


@pytest.mark.parametrize("pattern", sorted(p for p, s in SUPPORT.items() if s.status == "rejected"))
def test_rejected_fields_are_refused(pattern: str) -> None:
    assert pattern in REJECTED, f"add a case for {pattern} to REJECTED"
    text, path = REJECTED[pattern]
    kind = parse_pattern(pattern)[0]
    model = next(spec.spec for spec in KINDS.values() if spec.kind == kind)
    report = Report("t.yaml", 0)
    node = yaml.compose(textwrap.dedent(text))
    assert node is not None
    value = decode(model, node, report, ("spec",))
    assert value is not INVALID  # the error comes from the model's own check, not a decode failure
    assert [i.path for i in report.issues if i.severity == "error"] == [path]


def test_check_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out: list[str] = []
    target = tmp_path / "configuration.md"
    monkeypatch.setattr(gen, "OUTPUT", target)
    assert gen.main(["--check"], write=out.append) == 1
    assert gen.main([], write=out.append) == 0
    assert target.read_text(encoding="utf-8") == gen.render()
    assert gen.main(["--check"], write=out.append) == 0
    target.write_text(gen.render() + "\nedited by hand\n", encoding="utf-8")
    assert gen.main(["--check"], write=out.append) == 1
    assert "out of date" in out[-1]


@pytest.mark.parametrize(
    ("tp", "label"),
    [
        (str, "string"),
        (Duration | None, "duration"),
        (Port, "port"),
        (tuple[int, ...], "list of int"),
        (dict[str, tuple[str, ...]], "map of string to list of string"),
        (Labels, "labels (map of string to string)"),
        (Any, None),
    ],
)
def test_types_read_as_a_reader_says_them(tp: Any, label: str | None) -> None:
    if label is None:
        with pytest.raises(TypeError):
            gen.render_type(tp)
    else:
        assert gen.render_type(tp) == label


@dataclass(frozen=True, slots=True, kw_only=True)
class _Leaf:
    """A leaf. With more words."""

    timeout: Duration | None = field(default=None, deprecated="use another field")
    mode: str = "ON"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Tree:
    name: str
    from_: tuple[_Leaf, ...] = ()
    by_name: Mapping[str, _Leaf] = field(default_factory=dict)
    children: tuple[_Tree, ...] = ()
    wired: int = field(default=0, wire="otherName")


def test_walk_follows_lists_and_maps_and_stops_on_recursion() -> None:
    rows = {row.path: row for row in gen.walk(_Tree)}
    assert list(rows) == ["name", "from", "from.timeout", "from.mode", "byName", "byName.<key>.timeout",
                          "byName.<key>.mode", "children", "otherName"]
    assert rows["name"].required
    assert not rows["from"].required
    assert rows["from"].type_label == "list of _Leaf"
    assert rows["from"].message is _Leaf
    assert rows["byName"].type_label == "map of string to _Leaf"
    assert rows["children"].recursive
    assert rows["children"].message is _Tree
    assert rows["from.timeout"].deprecated == "use another field"
    assert rows["from.mode"].default == "ON"
