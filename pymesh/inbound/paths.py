"""Path and host normalization before policy matching (MeshConfig ``pathNormalization``).

Servers hand an app an already-decoded path, so normalization starts from the raw request
target (ASGI ``raw_path``, WSGI ``RAW_URI``/``REQUEST_URI``) and the result is what both the
policies and the app see. The levels are Istio's, applied in Envoy's order:

- ``NONE``: the path as received (the fragment is still cut off).
- ``BASE`` (Istio's ``DEFAULT``): percent-escapes of unreserved characters
  (``A-Z a-z 0-9 - . _ ~``) decoded, ``\\`` turned into ``/``, ``.`` and ``..`` segments
  removed (RFC 3986 section 5.2.4). ``%2F``, ``%5C``, ``;`` parameters and case are kept.
- ``MERGE_SLASHES``: ``BASE``, then runs of ``/`` merged.
- ``DECODE_AND_MERGE_SLASHES``: ``%2F``/``%5C`` (either case) decoded first, then
  ``MERGE_SLASHES``.

At every level a ``#fragment`` is removed (ISTIO-SECURITY-2021-008), a NUL (raw or ``%00``)
or another control character is refused with 400, and the query is kept verbatim.
:func:`strip_params` gives the form with ``;params`` cut from every segment, which DENY
``paths`` and ALLOW ``notPaths`` also match (pymesh's contract, section 3).
:func:`normalize_host` gives the ``:authority`` as ``hosts`` compare it: lower case, without a
trailing dot, the port apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pymesh.inbound.request import Denial

__all__ = ["Mode", "Normalized", "mode_of", "normalize", "normalize_host", "strip_params"]

Mode = Literal["NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]

_BAD_REQUEST = Denial(400, b"Bad Request", (("content-type", "text/plain"),))

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASH_ESCAPE = re.compile(r"%(2[Ff]|5[Cc])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # refused raw: one C-speed scan, not a Python loop per character
# What a canonical path never carries raw (Chromium's path canonicalizer escapes these).
_MUST_ESCAPE = frozenset(' "<>`{}')
_MERGE = re.compile(r"/{2,}")
_PARAMS = re.compile(r";[^/]*")


@dataclass(frozen=True, slots=True)
class Normalized:
    """The path policies judge (percent-encoded, no query) and the query as received."""

    path: str
    query: str = ""

    @property
    def target(self) -> str:
        """The request target to write back to ``raw_path`` / ``RAW_URI``."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def escaped_slashes(self) -> bool:
        """True when ``%2F``/``%5C`` survive: a decoding app would see more segments than policies did."""
        return _SLASH_ESCAPE.search(self.path) is not None


def mode_of(setting: str) -> Mode:
    """MeshConfig ``pathNormalization.normalization`` as a level (``DEFAULT`` is ``BASE``)."""
    if setting in ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"):
        return setting  # type: ignore[return-value]
    return "BASE"


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


def _escape_odd(path: str) -> str:
    """Percent-encode characters a canonical path never holds raw (non-ASCII as UTF-8 / latin-1 bytes)."""
    if path.isascii() and not _MUST_ESCAPE.intersection(path):
        return path
    out: list[str] = []
    for ch in path:
        code = ord(ch)
        if ch in _MUST_ESCAPE or code > 0x7E:
            data = bytes([code]) if code < 256 else ch.encode("utf-8")
            out.append("".join(f"%{b:02X}" for b in data))
        else:
            out.append(ch)
    return "".join(out)


def _remove_dots(path: str) -> str:
    """RFC 3986 section 5.2.4 over ``/``-separated segments of an absolute path."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def normalize(raw_path: str, mode: Mode) -> Normalized | Denial:
    """The path policies match (and the app receives) for ``raw_path`` under ``mode``; 400 if unusable."""
    target = raw_path.split("#", 1)[0]
    path, _, query = target.partition("?")
    if _CONTROL.search(target) is not None or "%00" in path:
        return _BAD_REQUEST
    if not path.startswith("/"):
        return _BAD_REQUEST  # "*" and absolute-form targets are not paths a policy can judge
    if mode == "NONE":
        return Normalized(path, query)
    if mode == "DECODE_AND_MERGE_SLASHES":
        path = _SLASH_ESCAPE.sub(lambda m: "/" if m.group(1) in ("2F", "2f") else "\\", path)
    if "%" in path:
        path = _ESCAPE.sub(_decode_unreserved, path)
    path = _escape_odd(path.replace("\\", "/"))
    if "." in path:
        path = _remove_dots(path)
    if mode != "BASE" and "//" in path:
        path = _MERGE.sub("/", path)
    return Normalized(path, query)


def strip_params(path: str) -> str:
    """``path`` with ``;params`` removed from every segment (``/admin;x=y/a;b`` -> ``/admin/a``).

    Dot segments a parameter hid (``/public/..;/admin``) are then removed too: this form only
    ever widens a DENY, so it resolves them as a server that drops parameters would.
    """
    if ";" not in path:
        return path
    stripped = _PARAMS.sub("", path)
    return _remove_dots(stripped) if "." in stripped else stripped


def normalize_host(authority: str) -> tuple[str, str | None]:
    """``:authority`` as (host, port): lower case, one trailing dot dropped, IPv6 brackets kept."""
    value = authority.strip().lower()
    port: str | None = None
    if value.startswith("["):
        end = value.find("]")
        if end != -1:
            rest = value[end + 1:]
            if rest.startswith(":"):
                port = rest[1:]
            value = value[:end + 1]
    elif value.count(":") == 1:
        value, port = value.split(":")
    if value.endswith(".") and value != ".":
        value = value[:-1]
    return value, port
