"""Scalar types and constraints shared by every API group.

Each is an ``Annotated`` alias usable as a model field type, or a plain function the
models' ``_check`` methods call. Rules follow Istio's ``pkg/config/validation``.
"""

from __future__ import annotations

import functools
import importlib
import ipaddress
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, cast

from pymesh.config.decode import Invalid, Parse

__all__ = [
    "Duration",
    "DurationOrZero",
    "Labels",
    "NonEmptyStr",
    "NonNegInt",
    "Percent",
    "Port",
    "RE2Regex",
    "check_cidr_or_ip",
    "check_dns_label",
    "check_host",
    "compile_re2",
    "fetch_target_warning",
    "parse_duration",
    "ranged",
]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go/protobuf duration: ``1s``, ``4.000s``, ``50ms``, ``1h30m``."""
    s = text.strip()
    if not s:
        raise Invalid("empty duration")
    if s == "0":
        return 0.0
    if s[0] in "+-":
        if s[0] == "-":
            raise Invalid(f"negative duration {text!r}")
        s = s[1:]
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise Invalid(f"invalid duration {text!r} (write e.g. 1s, 500ms, 1.5s, 2m, 1h)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def _whole_ms(seconds: float, text: str) -> None:
    ms = seconds * 1000.0
    if abs(ms - round(ms)) > 1e-6:
        raise Invalid(f"duration {text!r}: only millisecond precision is supported")


def parse_duration(text: str) -> float:
    """A duration Istio accepts for timeouts and intervals: at least 1ms, whole ms."""
    seconds = parse_go_duration(text)
    if seconds < 1e-3 - 1e-12:
        raise Invalid(f"duration {text!r} must be at least 1ms")
    _whole_ms(seconds, text)
    return seconds


def parse_duration_or_zero(text: str) -> float:
    seconds = parse_go_duration(text)
    if seconds != 0.0:
        return parse_duration(text)
    return 0.0


# Seconds, read from a duration string.
Duration = Annotated[float, Parse(str, parse_duration)]
DurationOrZero = Annotated[float, Parse(str, parse_duration_or_zero)]


def ranged(lo: float | None = None, hi: float | None = None, what: str = "value") -> Callable[[Any], Any]:
    """A constraint: ``lo <= value <= hi``."""

    def check_range(value: Any) -> Any:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                raise Invalid(f"{what} {value} is out of range {lo:g}..{hi:g}")
            raise Invalid(f"{what} {value} must be {'>=' if lo is not None else '<='} {lo if lo is not None else hi}")
        return value

    return check_range


def _non_empty(value: str) -> str:
    if not value:
        raise Invalid("must not be empty")
    return value


Port = Annotated[int, ranged(1, 65535, "port")]
NonNegInt = Annotated[int, ranged(0, None)]
NonEmptyStr = Annotated[str, _non_empty]


@dataclass(frozen=True, slots=True, kw_only=True)
class Percent:
    """Istio's ``Percent`` message: ``{value: 0..100}`` as a double."""

    value: Annotated[float, ranged(0.0, 100.0, "percentage")] = 0.0


# -- URLs the workload fetches (jwksUri, providerUrl) -----------------------------------

_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})


def fetch_target_warning(url: str, field_name: str) -> str | None:
    """Why fetching ``url`` from the workload deserves a second look, or None.

    Istio's bulletin ISTIO-SECURITY-2026-003 was a jwksUri aimed at internal endpoints. Here the
    workload itself fetches, so a link-local address (cloud instance metadata: 169.254.169.254,
    fd00:ec2::254) is flagged; loopback is left alone, since development setups use it.
    """
    try:
        host = (urllib.parse.urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host in _METADATA_HOSTS:
            return f"{field_name} {url!r} names a cloud metadata host; the workload will fetch from it"
        return None
    if address.is_link_local or address == ipaddress.ip_address("fd00:ec2::254"):
        return (f"{field_name} {url!r} is a link-local address (cloud instance metadata); "
                "the workload will fetch from it")
    return None


# -- regular expressions (RE2, as Envoy's safe_regex) --------------------------------


@functools.lru_cache(maxsize=4096)
def _re2_error(pattern: str) -> str | None:
    import re2  # google-re2; imported on first use

    options = re2.Options()
    options.log_errors = False
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0]
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        return str(detail)
    return None


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Check ``pattern`` is valid RE2 and return it compiled for matching.

    Matching uses Python's ``re`` after RE2 has accepted the pattern: the RE2 subset means
    the same in both, and Python's engine is ~20x faster on the short strings routed. A
    pattern that could backtrack catastrophically (a repeat inside a repeat, or an alternation
    under one: ``(a+)+``, ``(a|aa)*``: exponential) or polynomially (two or more long repeats in
    sequence, ``.*a.*a.*b``: O(n^k)) is matched by RE2 itself, in linear time, as Envoy does for
    every pattern: the strings matched may come from end users.
    """
    if len(pattern) > 1024:
        raise Invalid("regex is longer than 1024 characters")
    problem = _re2_error(pattern)
    if problem is not None:
        raise Invalid(f"invalid RE2 regex {pattern!r}: {problem}")
    if _may_backtrack(pattern):
        import re2

        return cast("re.Pattern[str]", re2.compile(pattern))  # the same match API as re.Pattern
    try:
        return re.compile(pattern)
    except re.error as exc:  # RE2 syntax Python lacks, e.g. \pN classes
        raise Invalid(f"regex {pattern!r} is valid RE2 but not supported by pymesh: {exc}") from exc


_LONG_REPEAT = 16  # a repeat allowed more times than this counts as long


def _may_backtrack(pattern: str) -> bool:
    """A repeat (or an alternation) nested under another repeat (exponential for ``re``), or two
    long repeats anywhere in the pattern (each can give back what the other takes: polynomial)."""
    # The stdlib's own regex parser (re._parser) gives the tree; it has no stubs, hence Any.
    c: Any = importlib.import_module("re._constants")
    parser: Any = importlib.import_module("re._parser")

    try:
        tree = parser.parse(pattern)
    except re.error:
        return True

    long_repeats = 0

    def walk(items: Any, under_repeat: bool) -> bool:
        nonlocal long_repeats
        for op, av in items:
            if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
                _, high, sub = av
                if under_repeat:
                    return True
                if high > _LONG_REPEAT:
                    long_repeats += 1
                    if long_repeats > 1:
                        return True
                if walk(sub, high > 1):
                    return True
            elif op is c.BRANCH:
                if under_repeat or any(walk(branch, under_repeat) for branch in av[1]):
                    return True
            elif op in (c.SUBPATTERN, c.ATOMIC_GROUP):
                if walk(av[-1], under_repeat):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT) and walk(av[1], under_repeat):
                return True
        return False

    return walk(tree, False)


def _re2(pattern: str) -> str:
    if not pattern:
        raise Invalid("regex must not be empty")
    compile_re2(pattern)
    return pattern


RE2Regex = Annotated[str, _re2]


# -- names ------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_LABEL_LOOSE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def check_dns_label(value: str, what: str = "name") -> str | None:
    """A DNS-1123 label (lowercase), or the reason it is not."""
    if not value:
        return f"{what} must not be empty"
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        return f"{what} {value!r} is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
    return None


def check_host(host: str, *, allow_wildcard: bool = True, allow_star: bool = False) -> str | None:
    """Istio's wildcard-domain rule: DNS labels, a ``*`` only as the whole first label."""
    if host == "*":
        return None if allow_star else "host '*' is not allowed here"
    if not host:
        return "host must not be empty"
    if len(host) > 255:
        return f"host {host!r} is longer than 255 characters"
    name = host
    if name.startswith("*"):
        if not allow_wildcard:
            return f"wildcard host {host!r} is not allowed here"
        name = name[1:].lstrip(".")
        if not name:
            return None
    labels = name.rstrip(".").split(".")
    for label in labels:
        if not label or len(label) > 63 or not _DNS_LABEL_LOOSE.fullmatch(label):
            return f"host {host!r} is not a valid domain name (bad label {label!r})"
    return None


def check_cidr_or_ip(value: str) -> str | None:
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address or CIDR range"
    return None


def _labels(value: Mapping[str, str]) -> Mapping[str, str]:
    for key, val in value.items():
        prefix, _, name = key.rpartition("/")
        if prefix and check_host(prefix, allow_wildcard=False) is not None:
            raise Invalid(f"label key {key!r} has an invalid prefix")
        if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
            raise Invalid(f"invalid label key {key!r}")
        if len(val) > 63 or not _LABEL_VALUE.fullmatch(val):
            raise Invalid(f"invalid value {val!r} for label {key!r}")
    return value


Labels = Annotated[Mapping[str, str], _labels]
