"""The matchers AuthorizationPolicy fields compile to, and the request attributes they read.

Every field compiles once to a predicate over :class:`Attributes` (computed once per request).
Value syntax is Istio's: exact ``abc``, prefix ``abc*``, suffix ``*abc``, presence ``*``
(a non-empty value); literal throughout (a ``.`` is a dot: CVE-2026-39350). Path values may
also be templates with ``{*}`` (one segment) and ``{**}`` (the rest).

Which way a field leans when several values are in play (repeated headers) or none (a
plaintext caller) depends on the action, so that nothing pymesh cannot judge widens access:

- positive field, ALLOW: the attribute is present and *every* value matches;
- positive field, DENY/AUDIT: *any* value matches;
- ``not`` field, ALLOW: no value matches; for identity fields (``notPrincipals``,
  ``notNamespaces``, ...) the caller must also have a verified identity;
- ``not`` field, DENY/AUDIT: the attribute is absent or some value does not match.

For single-valued attributes these are Istio's semantics; lists inside a token
(``request.auth.audiences``, list claims) match when any element does, as in Istio.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from pymesh.inbound.authn import Identity
from pymesh.inbound.paths import normalize_host, strip_params
from pymesh.inbound.request import InboundRequest

__all__ = [
    "Attributes",
    "PathIndex",
    "Predicate",
    "StringMatch",
    "claim_values",
    "compile_hosts",
    "compile_ips",
    "compile_paths",
    "multi",
    "negate",
    "string_match",
]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> _Address | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class Attributes:
    """What policies read from one request, computed once (addresses parsed on first use)."""

    __slots__ = (
        "_dest_ip", "_host", "_remote", "_remote_ip", "_source_ip", "_stripped", "identity", "method", "namespace",
        "path", "port", "principal", "request", "service_account", "trust_domain",
    )

    def __init__(self, request: InboundRequest, path: str, identity: Identity | None,
                 remote_ip: str | None = None) -> None:
        self.request = request
        self._remote = remote_ip
        self.method = request.method
        self.path = path
        self._stripped: str | None = None
        self._host: tuple[str, str] | None = None
        self.port = str(request.destination_port)
        peer = request.peer
        if peer is not None:
            sid = peer.spiffe_id
            self.principal: str | None = sid.principal
            self.namespace: str | None = sid.namespace
            self.service_account: str | None = sid.service_account
            self.trust_domain: str | None = sid.trust_domain
        else:
            self.principal = self.namespace = self.service_account = self.trust_domain = None
        self.identity = identity
        self._source_ip: _Address | bool | None = False
        self._remote_ip: _Address | bool | None = False
        self._dest_ip: _Address | bool | None = False

    @property
    def stripped_path(self) -> str:
        """The path with ``;params`` removed (see :func:`pymesh.inbound.paths.strip_params`)."""
        if self._stripped is None:
            self._stripped = strip_params(self.path)
        return self._stripped

    def _authority(self) -> tuple[str, str]:
        if self._host is None:
            host, port = normalize_host(self.request.host)
            self._host = (host, f"{host}:{port}" if port else host)
        return self._host

    @property
    def host(self) -> str:
        """``:authority`` lower case, without a trailing dot or the port."""
        return self._authority()[0]

    @property
    def host_port(self) -> str:
        return self._authority()[1]

    @property
    def sni(self) -> str:
        return self.request.sni or ""

    @property
    def source_ip(self) -> _Address | None:
        if self._source_ip is False:
            self._source_ip = _ip(self.request.source_ip)
        return self._source_ip  # type: ignore[return-value]

    @property
    def remote_ip(self) -> _Address | None:
        """The original client: what the middleware derived from a *trusted* proxy's headers, else the peer.

        The engine never reads ``X-Forwarded-For`` itself (Istio's ``numTrustedProxies`` 0).
        """
        if self._remote is None:
            return self.source_ip
        if self._remote_ip is False:
            self._remote_ip = _ip(self._remote)
        return self._remote_ip  # type: ignore[return-value]

    @property
    def destination_ip(self) -> _Address | None:
        if self._dest_ip is False:
            self._dest_ip = _ip(self.request.destination_ip)
        return self._dest_ip  # type: ignore[return-value]


Predicate = Callable[[Attributes], bool]


def string_match(values: Sequence[str], *, lower: bool = False) -> Callable[[str], bool]:
    """The fastest callable for ``values``: a set lookup, one ``startswith`` ... or a :class:`StringMatch`."""
    m = StringMatch(values, lower=lower)
    exact, prefixes, suffixes = m.exact, m.prefixes, m.suffixes
    if m.presence:
        return m
    if not prefixes and not suffixes:
        return exact.__contains__
    if not exact and not suffixes:
        return lambda v: v.startswith(prefixes)
    if not exact and not prefixes:
        return lambda v: v.endswith(suffixes)
    return m


class StringMatch:
    """Istio string values compiled to a set lookup and ``startswith``/``endswith`` tuples."""

    __slots__ = ("exact", "prefixes", "presence", "suffixes")

    def __init__(self, values: Sequence[str], *, lower: bool = False) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        suffixes: list[str] = []
        self.presence = False
        for raw in values:
            value = raw.lower() if lower else raw
            if value == "*":
                self.presence = True
            elif value.endswith("*"):
                prefixes.append(value[:-1])
            elif value.startswith("*"):
                suffixes.append(value[1:])
            else:
                exact.add(value)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self.suffixes = tuple(suffixes)

    def __call__(self, value: str) -> bool:
        if value in self.exact:
            return True
        if not value:
            return False
        return self.presence or bool(
            (self.prefixes and value.startswith(self.prefixes)) or (self.suffixes and value.endswith(self.suffixes)))


def multi(get: Callable[[Attributes], Sequence[str]], match: Callable[[str], bool], *, deny: bool,
          every: bool = True) -> Predicate:
    """A positive field over a multi-valued attribute (see the module docstring)."""
    if deny or not every:
        return lambda a: any(match(v) for v in get(a))

    def allow(a: Attributes) -> bool:
        values = get(a)
        return bool(values) and all(match(v) for v in values)

    return allow


def negate(get: Callable[[Attributes], Sequence[str]], match: Callable[[str], bool], *, deny: bool,
           every: bool = True, require: bool = False) -> Predicate:
    """A ``not`` field over a multi-valued attribute; ``require``: ALLOW needs the attribute present."""
    if deny:
        if not every:
            return lambda a: not any(match(v) for v in get(a))
        return lambda a: not all(match(v) for v in get(a)) or not get(a)
    if require:
        def allow_present(a: Attributes) -> bool:
            values = get(a)
            return bool(values) and not any(match(v) for v in values)

        return allow_present
    return lambda a: not any(match(v) for v in get(a))


def compile_ips(values: Sequence[str]) -> Callable[[_Address | None], bool]:
    networks: list[_Network] = []
    for value in values:
        net = ipaddress.ip_network(value, strict=False)
        if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
            mapped = net.network_address.ipv4_mapped
            if mapped is not None:
                net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
        networks.append(net)
    nets = tuple(networks)
    if all(n.num_addresses == 1 for n in nets):
        exact = frozenset(n.network_address for n in nets)
        return lambda addr: addr is not None and addr in exact
    return lambda addr: addr is not None and any(addr.version == n.version and addr in n for n in nets)


_ONE = "{*}"
_ANY = "{**}"


def _template(value: str) -> re.Pattern[str]:
    parts: list[str] = []
    for segment in value.split("/"):
        if segment == _ONE:
            parts.append("[^/]+")
        elif segment == _ANY:
            parts.append(".*")
        else:
            parts.append(re.escape(segment))
    return re.compile("/".join(parts))


def compile_paths(values: Sequence[str]) -> Callable[[str], bool]:
    """``paths`` values: globs as :class:`StringMatch`, templates as anchored regexes."""
    templates = [_template(v) for v in values if _ONE in v or _ANY in v]
    plain = string_match([v for v in values if _ONE not in v and _ANY not in v])
    if not templates:
        return plain
    compiled = tuple(templates)
    return lambda p: plain(p) or any(t.fullmatch(p) for t in compiled)


def _path_keys(values: Sequence[str]) -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """What ``paths`` values require of a path: (exact, prefixes, suffixes); None: any path may match.

    Globs are classified by :class:`StringMatch`, as :func:`compile_paths` does. A template
    needs its literal head (up to the first ``{*}``/``{**}`` segment) as a prefix, and one
    without such a segment is a literal (see :func:`_template`).
    """
    plain: list[str] = []
    exact: set[str] = set()
    prefixes: set[str] = set()
    for value in values:
        if _ONE not in value and _ANY not in value:
            plain.append(value)
            continue
        segments = value.split("/")
        first = next((i for i, s in enumerate(segments) if s in (_ONE, _ANY)), None)
        if first is None:
            exact.add(value)
        elif first == 0:
            return None
        else:
            prefixes.add("/".join(segments[:first]) + "/")
    globs = StringMatch(plain)
    if globs.presence:
        return None
    return frozenset(exact | globs.exact), frozenset(prefixes.union(globs.prefixes)), frozenset(globs.suffixes)


T = TypeVar("T")


class PathIndex(Generic[T]):
    """Which of an ordered list of items (policies) could match a request path, in their order.

    Each item comes with the ``paths`` values that bound the paths it can match (see
    :func:`_path_keys`), or None when it can match any path. A lookup costs one dict probe for
    exact paths and one per distinct prefix (suffix) length, instead of one call per item.
    The answer may include items that then fail to match; it never leaves out one that could.
    """

    __slots__ = ("_always", "_empty", "_exact", "_items", "_prefixes", "_suffixes")

    def __init__(self, entries: Sequence[tuple[T, Sequence[str] | None]]) -> None:
        self._items: tuple[T, ...] = tuple(item for item, _ in entries)
        always: list[int] = []
        exact: dict[str, list[int]] = {}
        prefixes: dict[int, dict[str, list[int]]] = {}
        suffixes: dict[int, dict[str, list[int]]] = {}
        for i, (_, values) in enumerate(entries):
            keys = _path_keys(values) if values is not None else None
            if keys is None:
                always.append(i)
                continue
            exacts, heads, tails = keys
            for e in exacts:
                exact.setdefault(e, []).append(i)
            for p in heads:
                prefixes.setdefault(len(p), {}).setdefault(p, []).append(i)
            for x in tails:
                suffixes.setdefault(len(x), {}).setdefault(x, []).append(i)
        self._always = self._bucket(always)
        self._exact = {k: self._bucket(v) for k, v in exact.items()}
        # Shortest first, so a lookup stops at the first length longer than the path.
        self._prefixes = tuple((n, {k: self._bucket(v) for k, v in t.items()}) for n, t in sorted(prefixes.items()))
        self._suffixes = tuple((n, {k: self._bucket(v) for k, v in t.items()}) for n, t in sorted(suffixes.items()))
        self._empty = not self._items

    def _bucket(self, positions: list[int]) -> tuple[tuple[int, ...], tuple[T, ...]]:
        ordered = tuple(sorted(set(positions)))
        return ordered, tuple(self._items[i] for i in ordered)

    def lookup(self, path: str, other: str | None = None) -> tuple[T, ...] | list[T]:
        """The items that could match ``path`` (or ``other``, when given), in their original order."""
        if self._empty:
            return ()
        hits = self._hits(path)
        if other is not None and other != path:
            hits += self._hits(other)
        if not hits:
            return self._always[1]
        always = self._always[0]
        if not always and len(hits) == 1:
            return hits[0][1]  # the common case: no merge, a tuple built at load
        positions = set(always).union(*(h[0] for h in hits))
        items = self._items
        return [items[i] for i in sorted(positions)]

    def _hits(self, path: str) -> list[tuple[tuple[int, ...], tuple[T, ...]]]:
        found = self._exact.get(path)
        hits = [] if found is None else [found]
        size = len(path)
        for n, table in self._prefixes:
            if n > size:
                break
            found = table.get(path[:n])
            if found is not None:
                hits.append(found)
        for n, table in self._suffixes:
            if n > size:
                break
            found = table.get(path[-n:])
            if found is not None:
                hits.append(found)
        return hits


def compile_hosts(values: Sequence[str]) -> Callable[[Attributes], bool]:
    """``hosts`` values: case-insensitive; a value without a port matches the host on any port."""
    bare: list[str] = []
    with_port: list[str] = []
    for raw in values:
        value = raw.lower()
        name, port = normalize_host(value) if not value.startswith("*") else (value, None)
        if port is not None:
            with_port.append(f"{name}:{port}")
        else:
            bare.append(name.rstrip(".") if name != "*" else name)
    by_name = string_match(bare)
    by_full = string_match(with_port)
    if not with_port:
        return lambda a: by_name(a.host)
    return lambda a: by_name(a.host) or by_full(a.host_port)


def claim_values(identity: Identity | None, path: Sequence[str]) -> list[str]:
    """``request.auth.claims[a][b]`` as strings: a list claim gives each element; booleans as true/false."""
    if identity is None:
        return []
    value: Any = identity.claims
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return []
        value = value[part]
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, int | float | str):
            out.append(str(item))
    if len(path) == 1 and path[0] in identity.space_delimited and isinstance(value, str) and " " in value:
        out += [p for p in value.split(" ") if p]
    return out
