"""The method+path index of ``Authorizer`` answers exactly what trying every policy in turn answers.

Policy sets and requests are generated from a fixed seed and judged twice: by the engine
(indexed) and by :func:`reference`, a deliberately plain reading of the rules written here,
policy after policy in Istio's order. The verdict and the matched policy name must agree.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymesh.inbound.authz_match import PathIndex
from pymesh.inbound.paths import strip_params

from .helpers import authorizer, request

# Exact, prefix, suffix, presence and template values, overlapping on purpose.
PATHS = ("/a", "/a/b", "/a/*", "/a*", "/ab", "/b/*", "*.json", "*/c", "*", "/a/{*}", "/a/{*}/c", "/{*}/b",
         "/a/{**}", "/{**}", "/admin", "/admin/*", "/c")
REQUEST_PATHS = ("/", "/a", "/a/", "/a/b", "/a/b/c", "/a/x.json", "/ab", "/abc", "/b", "/b/c.json", "/c",
                 "/admin", "/admin/x", "/admin;x=1/y", "/a;p/b", "/a/b;q", "/z/b", "/zz")
METHODS = ("GET", "POST", "PUT")
IPS = ("10.0.0.1", "10.0.0.9")


@dataclass(frozen=True)
class Probe:
    method: str
    path: str
    header: str | None  # x-k
    ip: str


# -- the reference: one policy after another, nothing indexed ---------------------------------------------


def _value(value: str, s: str) -> bool:
    if value == "*":
        return s != ""
    if value.endswith("*"):
        return s.startswith(value[:-1])
    if value.startswith("*"):
        return s.endswith(value[1:])
    return s == value


def _template(value: str, s: str) -> bool:
    want, got = value.split("/"), s.split("/")
    for i, seg in enumerate(want):
        if seg == "{**}":  # the rest, possibly empty; always last
            return len(got) > i and want[:i] == got[:i]
        if i >= len(got) or (seg == "{*}" and not got[i]) or (seg != "{*}" and seg != got[i]):
            return False
    return len(got) == len(want)


def _path_in(values: Sequence[str], s: str) -> bool:
    return any(_template(v, s) if "{" in v else _value(v, s) for v in values)


def _operation(op: dict[str, Any], p: Probe, deny: bool) -> bool:
    stripped = strip_params(p.path)
    if "methods" in op and p.method not in op["methods"]:
        return False
    if "paths" in op:
        # A DENY also sees the path without ;params; an ALLOW's notPaths too (pymesh contract, section 3).
        hit = _path_in(op["paths"], p.path) or (deny and _path_in(op["paths"], stripped))
        if not hit:
            return False
    if "notPaths" in op:
        hit = _path_in(op["notPaths"], p.path) or (not deny and _path_in(op["notPaths"], stripped))
        if hit:
            return False
    return True


def _rule(rule: dict[str, Any], p: Probe, deny: bool) -> bool:
    if "to" in rule and not any(_operation(t["operation"], p, deny) for t in rule["to"]):
        return False
    if "from" in rule and not any(p.ip in f["source"]["ipBlocks"] for f in rule["from"]):
        return False
    return all(p.header is not None and p.header in c["values"] for c in rule.get("when", ()))


def reference(policies: dict[str, dict[str, Any]], p: Probe) -> tuple[bool, str]:
    """(allowed, matched policy): first matching DENY, else first matching ALLOW, by name (no creation times)."""
    ordered = sorted(policies.items())
    for name, spec in ordered:
        if spec["action"] == "DENY" and any(_rule(r, p, True) for r in spec.get("rules", ())):
            return False, f"foo/{name}"
    allows = [(name, spec) for name, spec in ordered if spec["action"] == "ALLOW"]
    for name, spec in allows:
        if any(_rule(r, p, False) for r in spec.get("rules", ())):
            return True, f"foo/{name}"
    return not allows, ""


# -- generation --------------------------------------------------------------------------------------------


def _operation_spec(rnd: random.Random) -> dict[str, Any]:
    op: dict[str, Any] = {}
    if rnd.random() < 0.4:
        op["methods"] = rnd.sample(METHODS[:2], rnd.randint(1, 2))
    if rnd.random() < 0.75:
        op["paths"] = rnd.sample(PATHS, rnd.randint(1, 3))
    if rnd.random() < 0.25:
        op["notPaths"] = rnd.sample(PATHS, rnd.randint(1, 2))
    return op or {"methods": ["GET"]}


def _rule_spec(rnd: random.Random) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if rnd.random() < 0.8:
        rule["to"] = [{"operation": _operation_spec(rnd)} for _ in range(rnd.randint(1, 2))]
    if rnd.random() < 0.15:
        rule["from"] = [{"source": {"ipBlocks": [rnd.choice(IPS)]}}]
    if rnd.random() < 0.15:
        rule["when"] = [{"key": "request.headers[x-k]", "values": [rnd.choice(("v", "w"))]}]
    return rule


def policy_set(rnd: random.Random, size: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for _ in range(size):
        action = "DENY" if rnd.random() < 0.3 else "ALLOW"
        spec: dict[str, Any] = {"action": action}
        if action == "DENY" or rnd.random() > 0.05:  # an ALLOW without rules matches nothing
            spec["rules"] = [_rule_spec(rnd) for _ in range(rnd.randint(1, 3))]
        out[f"p{rnd.randrange(10**6):06d}"] = spec  # random names: the order is not the generation order
    return out


def yaml(policies: dict[str, dict[str, Any]]) -> str:
    return "".join(f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: foo}}
spec: {json.dumps(spec)}
---
""" for name, spec in policies.items())


def probes(rnd: random.Random, count: int) -> list[Probe]:
    return [Probe(rnd.choice(METHODS), rnd.choice(REQUEST_PATHS), rnd.choice((None, "v", "w")), rnd.choice(IPS))
            for _ in range(count)]


def _disagreements(policies: dict[str, dict[str, Any]], asks: Sequence[Probe]) -> list[str]:
    az = authorizer(yaml(policies))
    wrong: list[str] = []
    for p in asks:
        headers = [("x-k", p.header)] if p.header is not None else []
        d = az.check(request(p.path, method=p.method, headers=headers, source_ip=p.ip), p.path)
        want = reference(policies, p)
        if (d.allowed, d.policy) != want:
            wrong.append(f"{p}: engine {(d.allowed, d.policy)}, reference {want}")
    return wrong


# -- tests -------------------------------------------------------------------------------------------------


def test_indexed_engine_agrees_with_a_linear_reading() -> None:
    rnd = random.Random(20240605)
    wrong: list[str] = []
    verdicts: set[tuple[bool, bool]] = set()
    for _ in range(150):
        policies = policy_set(rnd, rnd.randint(1, 25))
        asks = probes(rnd, 30)
        wrong += [f"{yaml(policies)}\n{w}" for w in _disagreements(policies, asks)]
        verdicts |= {(ok, bool(name)) for ok, name in (reference(policies, p) for p in asks)}
    assert not wrong, "\n".join(wrong[:3])
    # The generator reaches every outcome: allowed by a policy, denied by one, denied by default.
    assert verdicts >= {(True, True), (False, True), (False, False)}


def test_a_new_policy_set_gets_a_new_index() -> None:
    """A reload compiles a new Authorizer: verdicts follow the new set, with nothing kept from the old."""
    rnd = random.Random(7)
    asks = probes(rnd, 60)
    for _ in range(2):
        before, after = policy_set(rnd, 20), policy_set(rnd, 20)
        assert not _disagreements(before, asks)
        assert not _disagreements(after, asks)


def test_the_matching_policy_tried_last_among_many() -> None:
    """The benchmark's shape: the one policy that matches sorts after a thousand that cannot."""
    policies: dict[str, dict[str, Any]] = {
        f"p{i}": {"action": "ALLOW", "rules": [{"to": [{"operation": {"methods": ["GET"], "paths": [f"/p{i}/*"]}}]}]}
        for i in range(1000)}
    policies["zz-allow-ok"] = {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": ["/ok"]}}]}]}
    policies["zz-deny-json"] = {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["*.json"]}}]}]}
    asks = [Probe(m, path, None, IPS[0]) for m in ("GET", "POST")
            for path in ("/ok", "/p7/x", "/p999/", "/p1000/x", "/p7", "/p7/x.json", "/denied")]
    assert not _disagreements(policies, asks)


def test_path_index_lookup() -> None:
    idx = PathIndex([("exact", ("/a",)), ("any", None), ("prefix", ("/a/*", "/b*")), ("suffix", ("*.json",)),
                     ("template", ("/t/{*}/x",)), ("star", ("/q", "*")), ("none", ())])
    assert list(idx.lookup("/a")) == ["exact", "any", "star"]
    assert list(idx.lookup("/a/x.json")) == ["any", "prefix", "suffix", "star"]
    assert list(idx.lookup("/t/1/x")) == ["any", "template", "star"]
    assert list(idx.lookup("/zz")) == ["any", "star"]
    assert list(idx.lookup("/a;p", "/a")) == ["exact", "any", "star"]  # either path
    # Merged buckets come back in the original order, whatever order a set keeps (8 before 5 here).
    many = PathIndex([(i, ("/a",) if i == 5 else ("/b",) if i == 8 else ("/z",)) for i in range(10)])
    assert list(many.lookup("/a", "/b")) == [5, 8]
    assert list(PathIndex([("only", ("/a",))]).lookup("/b")) == []
    assert list(PathIndex([]).lookup("/a")) == []
