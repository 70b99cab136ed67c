"""Request and response shaping: header operations, rewrites, redirects. Pure functions.

Header operations follow Envoy as Istio configures it: removals before additions,
``set`` replaces, ``add`` appends a value; route-level operations first, then the chosen
destination's (so a destination ``set`` wins). ``:authority``/``host`` in a request
``set``/``add`` rewrites the authority; other pseudo-headers are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymesh.config.types import compile_re2

__all__ = ["HeaderOps", "RegexRewrite", "apply_headers", "compile_headers", "redirect_location", "rewrite_path"]

Header = tuple[str, str]


@dataclass(frozen=True, slots=True)
class HeaderOps:
    remove: frozenset[str] = frozenset()
    set: tuple[Header, ...] = ()
    add: tuple[Header, ...] = ()
    authority: str | None = None  # from a request set/add of :authority or host

    def __bool__(self) -> bool:
        return bool(self.remove or self.set or self.add or self.authority)


NO_OPS = HeaderOps()


def _ops(raw: Any, *, request: bool) -> HeaderOps:
    if raw is None:
        return NO_OPS
    authority = None
    sets: list[Header] = []
    adds: list[Header] = []
    for table, out, is_set in ((raw.add, adds, False), (raw.set, sets, True)):
        for name, value in table.items():
            low = name.lower()
            if low in (":authority", "host"):
                if request and (is_set or authority is None):
                    authority = value  # set beats add
                continue
            if low.startswith(":"):
                continue
            out.append((low, value))
    return HeaderOps(frozenset(n.lower() for n in raw.remove), tuple(sets), tuple(adds), authority)


def compile_headers(*headers: Any) -> tuple[HeaderOps, HeaderOps]:
    """(request ops, response ops) from ``Headers`` values applied in order (None skipped)."""
    req: list[HeaderOps] = []
    resp: list[HeaderOps] = []
    for h in headers:
        if h is None:
            continue
        req.append(_ops(h.request, request=True))
        resp.append(_ops(h.response, request=False))
    return _fold(req), _fold(resp)


def _fold(ops: Sequence[HeaderOps]) -> HeaderOps:
    live = [o for o in ops if o]
    if not live:
        return NO_OPS
    if len(live) == 1:
        return live[0]
    remove: set[str] = set()
    sets: dict[str, str] = {}
    adds: list[Header] = []
    authority = None
    for o in live:
        remove |= o.remove
        for name, value in o.set:
            sets[name] = value
            adds = [a for a in adds if a[0] != name]
        adds.extend(o.add)
        authority = o.authority or authority
    return HeaderOps(frozenset(remove), tuple(sets.items()), tuple(adds), authority)


def apply_headers(headers: Iterable[Header], ops: HeaderOps) -> list[Header]:
    """A new header list (lower-case names) with ``ops`` applied."""
    if not ops:
        return list(headers)
    drop = ops.remove | {n for n, _ in ops.set}
    out = [(n, v) for n, v in headers if n.lower() not in drop]
    out.extend(ops.set)
    out.extend(ops.add)
    return out


@dataclass(frozen=True, slots=True)
class RegexRewrite:
    pattern: re.Pattern[str]
    replacement: str

    @classmethod
    def compile(cls, raw: Any) -> RegexRewrite:
        # RE2 writes captures as \1; Python's re.sub wants \g<1> to be unambiguous.
        return cls(compile_re2(raw.match), re.sub(r"\\(\d)", r"\\g<\1>", raw.rewrite))


def _split(path: str) -> tuple[str, str]:
    q = path.find("?")
    return (path, "") if q < 0 else (path[:q], path[q:])


def rewrite_path(path: str, *, uri: str, uri_kind: str | None, matched: str, regex: RegexRewrite | None) -> str:
    """``rewrite.uri`` replaces the matched prefix (the whole path for exact and regex matches,
    ``/`` when the rule has no uri match); ``uriRegexRewrite`` replaces every match in the path.
    The query string is kept."""
    if regex is not None:
        only, query = _split(path)
        return regex.pattern.sub(regex.replacement, only) + query
    if not uri:
        return path
    only, query = _split(path)
    if uri_kind == "prefix" or uri_kind is None:
        prefix = matched if uri_kind == "prefix" else "/"
        if path.lower().startswith(prefix.lower()):
            return uri + path[len(prefix):]
        return path
    return uri + query


def redirect_location(
    redirect: Any, *, scheme: str, host: str, port: int | None, path: str, uri_kind: str | None, matched: str
) -> str:
    """The ``Location`` of an HTTPRedirect for a request."""
    new_scheme = redirect.scheme or scheme
    authority = redirect.authority or host
    new_host, _, explicit = authority.partition(":")
    out_port: int | None
    if redirect.port:
        out_port = redirect.port
    elif redirect.derive_port == "FROM_REQUEST_PORT":
        out_port = port
    elif redirect.derive_port == "FROM_PROTOCOL_DEFAULT" or redirect.scheme:
        out_port = None
    elif redirect.authority:
        out_port = int(explicit) if explicit.isdigit() else None  # Envoy swaps host:port wholesale
    else:
        out_port = port
    if out_port == {"http": 80, "https": 443}.get(new_scheme):
        out_port = None
    if redirect.uri:
        query = _split(path)[1]
        new_path = redirect.uri if "?" in redirect.uri else redirect.uri + query
    elif redirect.prefix_rewrite:
        new_path = rewrite_path(path, uri=redirect.prefix_rewrite, uri_kind=uri_kind, matched=matched, regex=None)
    else:
        new_path = path
    hostport = new_host if out_port is None else f"{new_host}:{out_port}"
    return f"{new_scheme}://{hostport}{new_path}"
