"""HTTPMatchRequest compiled into predicates over a ``RequestInfo``.

Semantics are Envoy's as Istio configures it:
- uri ``prefix`` is a plain string prefix of ``:path`` *with* its query string (not
  segment-aware); ``exact`` and ``regex`` see the path without the query.
  ``ignoreUriCase`` affects exact and prefix only.
- regexes are RE2, matched against the whole value (Envoy ``safe_regex``).
- a header match needs the header present; ``{}`` is a presence test. Repeated headers
  were joined with ``,`` when the request was read.
- ``withoutHeaders`` inverts, treating a missing header as the empty string for value
  matchers (Envoy ``treat_missing_header_as_empty``).
- query parameters use the first occurrence of a name.
- ``sourceLabels``, ``sourceNamespace`` and ``gateways`` are decided once, at compile
  time, against the calling workload: a block that can never hold is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymesh.config.types import compile_re2
from pymesh.outbound.request import RequestInfo
from pymesh.workload import Workload

__all__ = ["CATCH_ALL", "CompiledMatch", "applies_to", "compile_match", "string_matcher"]

ValueTest = Callable[[str], bool]
Check = Callable[[RequestInfo], bool]


def _always(_: str) -> bool:
    return True


def _every(_: RequestInfo) -> bool:
    return True


def _all_of(checks: tuple[Check, ...]) -> Check:
    """One predicate for a block's checks; a block of one check is that check (no extra call)."""
    if not checks:
        return _every
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda info: first(info) and second(info)

    return lambda info: all(check(info) for check in checks)


def string_matcher(sm: Any, *, ignore_case: bool = False) -> ValueTest:
    """A StringMatch as a test on one string; None kind (``{}``) is a presence test."""
    kind = sm.kind
    if kind is None:
        return _always
    value: str = sm.value
    if kind == "regex":
        pattern = compile_re2(value)
        return lambda v: pattern.fullmatch(v) is not None
    if ignore_case:
        folded = value.lower()
        if kind == "exact":
            return lambda v: v.lower() == folded
        return lambda v: v.lower().startswith(folded)
    if kind == "exact":
        return value.__eq__
    return lambda v: v.startswith(value)


@dataclass(frozen=True, slots=True)
class CompiledMatch:
    """One match block: every check must hold. ``uri_prefix`` is what ``rewrite.uri`` replaces."""

    name: str
    checks: tuple[Check, ...]
    uri_kind: str | None  # "exact" | "prefix" | "regex" | None (no uri condition: implicit prefix "/")
    uri_value: str
    test: Check = field(init=False, repr=False, compare=False)  # the checks as one call, for the router

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", _all_of(self.checks))

    def __call__(self, info: RequestInfo) -> bool:
        return self.test(info)

    def merged(self, inner: CompiledMatch) -> CompiledMatch:
        """A delegate's block within its root's block: both must hold; the inner uri is the one rewritten."""
        use_inner = inner.uri_kind is not None
        return CompiledMatch(
            name=inner.name or self.name,
            checks=self.checks + inner.checks,
            uri_kind=inner.uri_kind if use_inner else self.uri_kind,
            uri_value=inner.uri_value if use_inner else self.uri_value,
        )


CATCH_ALL = CompiledMatch(name="", checks=(), uri_kind=None, uri_value="/")


# The common exact and prefix matches are tested inline: one call per check instead of two.


def _uri_check(m: Any) -> Check:
    kind, value = m.uri.kind, m.uri.value
    if kind == "prefix" and not m.ignore_uri_case:
        return lambda info: info.path.startswith(value)
    if kind == "exact" and not m.ignore_uri_case:
        return lambda info: info.path_only == value
    test = string_matcher(m.uri, ignore_case=m.ignore_uri_case)
    if kind == "prefix":
        return lambda info: test(info.path)
    return lambda info: test(info.path_only)


def _header_check(name: str, sm: Any) -> Check:
    kind = sm.kind
    if kind is None:
        return lambda info: name in info.headers
    if kind == "exact":
        exact: str = sm.value
        return lambda info: info.headers.get(name) == exact  # an absent header (None) never equals
    if kind == "prefix":
        prefix: str = sm.value

        def starts(info: RequestInfo) -> bool:
            value = info.headers.get(name)
            return value is not None and value.startswith(prefix)

        return starts
    test = string_matcher(sm)

    def check(info: RequestInfo) -> bool:
        value = info.headers.get(name)
        return value is not None and test(value)

    return check


def _without_header_check(name: str, sm: Any) -> Check:
    test = string_matcher(sm)
    presence = sm.kind is None

    def check(info: RequestInfo) -> bool:
        value = info.headers.get(name)
        if value is None:
            return presence or not test("")  # absent: a presence test holds inverted; others see ""
        return not test(value)

    return check


def _query_check(name: str, sm: Any) -> Check:
    test = string_matcher(sm)

    def check(info: RequestInfo) -> bool:
        value = info.query.get(name)
        return value is not None and test(value)

    return check


def _pseudo(attr: str, sm: Any) -> Check:
    test = string_matcher(sm)
    if attr == "authority":
        # :authority is the Host header as the caller sent it.
        return lambda info: test(info.headers.get("host") or info.authority)
    return lambda info: test(getattr(info, attr))


def applies_to(m: Any, vs_gateways: tuple[str, ...], workload: Workload) -> bool:
    """The compile-time part of a match block, decided for the calling workload on a sidecar."""
    gateways = m.gateways or vs_gateways
    if gateways and "mesh" not in gateways:
        return False
    if m.gateways:
        return True  # a block naming gateways ignores sourceLabels/sourceNamespace (Istio sourceMatchHTTP)
    if m.source_namespace and m.source_namespace != workload.namespace:
        return False
    return all(workload.labels.get(k) == v for k, v in m.source_labels.items())


def compile_match(m: Any) -> CompiledMatch:
    checks: list[Check] = []
    if m.uri is not None:
        checks.append(_uri_check(m))
    for attr in ("scheme", "method", "authority"):
        sm = getattr(m, attr)
        if sm is not None:
            checks.append(_pseudo(attr, sm))
    checks.extend(_header_check(name.lower(), sm) for name, sm in m.headers.items())
    checks.extend(_without_header_check(name.lower(), sm) for name, sm in m.without_headers.items())
    checks.extend(_query_check(name, sm) for name, sm in m.query_params.items())
    if m.port:
        port = m.port
        checks.append(lambda info: info.effective_port == port)
    uri_kind = m.uri.kind if m.uri is not None else None
    return CompiledMatch(
        name=m.name,
        checks=tuple(checks),
        uri_kind=uri_kind,
        uri_value=m.uri.value if m.uri is not None else "/",
    )
