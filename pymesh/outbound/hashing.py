"""Consistent hashing: the request's hash key (Envoy's hash policies) and the two tables it is looked up in.

``HashPolicy`` is the compiled ``consistentHash`` key of a DestinationRule: a header, a cookie
(generated and set on the response when absent and a ``ttl`` is given), the source IP, or a
query parameter. ``RingHashTable`` is Envoy's ketama-style ring; ``MaglevTable`` is Envoy's
Maglev lookup table (Eisenbud et al., NSDI 2016, pseudocode listing 1). Both are built once
from the endpoints and their weights and never change; a pick is a bisect or an index.

Hash function: Envoy uses xxHash64, which the standard library lacks. pymesh uses BLAKE2b with
an 8-byte digest read as a little-endian 64-bit integer: stable across processes and
platforms (unlike ``hash()``), well mixed, and about half a microsecond for short keys. The
tables therefore place hosts where Envoy's would not; what carries over is the algorithm:
the same weights give the same shares and the same, small, key movement on membership change.
"""

from __future__ import annotations

import bisect
import math
import random
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Literal

from pymesh.config.networking.loadbalancer import ConsistentHashLB
from pymesh.outbound.request import RequestInfo

__all__ = [
    "DEFAULT_MAGLEV_TABLE_SIZE",
    "DEFAULT_MAX_RING_SIZE",
    "DEFAULT_MIN_RING_SIZE",
    "HashPolicy",
    "MaglevTable",
    "RingHashTable",
    "SetCookie",
    "hash64",
]

DEFAULT_MIN_RING_SIZE = 1024  # Envoy RingHashLbConfig.minimum_ring_size
DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024  # Envoy RingHashLbConfig.maximum_ring_size
DEFAULT_MAGLEV_TABLE_SIZE = 65537  # Envoy MaglevLbConfig.table_size

_MASK64 = (1 << 64) - 1
_U64 = struct.Struct("<Q").unpack
_DEFAULT_RNG = random.Random()  # noqa: S311 -- cookie values pin a session; they are not secrets


def hash64(data: bytes) -> int:
    """A stable 64-bit hash (BLAKE2b, 8-byte digest); stands in for Envoy's xxHash64."""
    value: int = _U64(blake2b(data, digest_size=8).digest())[0]
    return value


# -- hash policies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetCookie:
    """A cookie the response must set because the balancer generated its value (Envoy's ``httpCookie`` ttl)."""

    name: str
    value: str
    path: str = ""
    ttl_seconds: int = 0  # 0: a session cookie (no Max-Age)
    attributes: tuple[tuple[str, str], ...] = ()

    def header_value(self) -> str:
        """The ``Set-Cookie`` value, rendered as Envoy's ``makeSetCookieValue`` does."""
        out = [f'{self.name}="{self.value}"']
        if self.ttl_seconds:
            out.append(f"Max-Age={self.ttl_seconds}")
        if self.path:
            out.append(f"Path={self.path}")
        for name, value in self.attributes:
            out.append(f"{name}={value}" if value else name)
        out.append("HttpOnly")
        return "; ".join(out)


HashSource = Literal["header", "cookie", "source_ip", "query", "none"]


@dataclass(frozen=True, slots=True)
class HashPolicy:
    """What a consistent-hash cluster hashes on, compiled from ``consistentHash``."""

    source: HashSource
    name: str = ""  # header (lower-case), cookie or query parameter name
    cookie_path: str = ""
    cookie_ttl: int | None = None  # whole seconds; None: never generate the cookie
    cookie_attributes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def compile(cls, consistent_hash: ConsistentHashLB) -> HashPolicy:
        ch = consistent_hash
        if ch.http_header_name:
            return cls("header", ch.http_header_name.lower())
        cookie = ch.http_cookie
        if cookie is not None:
            ttl = None if cookie.ttl is None else int(cookie.ttl)  # Envoy keeps whole seconds
            attrs = tuple((a.name, a.value) for a in cookie.attributes)
            return cls("cookie", cookie.name, cookie.path, ttl, attrs)
        if ch.http_query_parameter_name:
            return cls("query", ch.http_query_parameter_name)
        if ch.use_source_ip:
            return cls("source_ip")
        return cls("none")  # no key: Istio writes no hash policy, so every request hashes at random

    def key(self, info: RequestInfo, *, rng: random.Random | None = None) -> tuple[bytes | None, SetCookie | None]:
        """The bytes to hash for this request (None: no key, so Envoy picks at random) and a cookie to set.

        ``rng`` draws a generated cookie's value (default: a module-level ``random.Random``).
        Envoy hashes the downstream connection's address into the value; an in-process client
        has no downstream connection, so the value is 64 random bits in the same 16-hex form.
        """
        source = self.source
        if source == "header":
            value = info.headers.get(self.name)
            return (None if value is None else value.encode()), None
        if source == "cookie":
            raw = info.cookie(self.name)
            if raw is not None and len(raw) >= 2 and raw[0] == raw[-1] == '"':
                raw = raw[1:-1]  # RFC 6265 quoted value, as Envoy's parseCookieValue strips it
            if raw:
                return raw.encode(), None
            if self.cookie_ttl is None:
                return None, None
            value = f"{(rng or _DEFAULT_RNG).getrandbits(64):016x}"
            return value.encode(), SetCookie(self.name, value, self.cookie_path, self.cookie_ttl,
                                             self.cookie_attributes)
        if source == "query":
            param = info.query.get(self.name)
            return (None if param is None else param.encode()), None
        if source == "source_ip" and info.source_ip:
            return info.source_ip.encode(), None
        return None, None


# -- tables ---------------------------------------------------------------------------------------


def _normalized(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


class RingHashTable:
    """Envoy's ring: each host hashed ``scale * normalized weight`` times onto a 64-bit circle.

    ``scale`` is the smallest ring on which the lightest host gets a whole number of points and
    the ring has at least ``min_size`` points, capped at ``max_size`` (Envoy's formula). Points
    are ``hash64(f"{key}_{i}")``; a request hash maps to the first point at or after it, wrapping.
    """

    __slots__ = ("_hashes", "_hosts")

    def __init__(self, hosts: Sequence[int], keys: Sequence[str], weights: Sequence[float], *,
                 min_size: int = DEFAULT_MIN_RING_SIZE, max_size: int = DEFAULT_MAX_RING_SIZE) -> None:
        if min_size > max_size:
            raise ValueError(f"ring hash: minimum_ring_size ({min_size}) > maximum_ring_size ({max_size})")
        points: list[tuple[int, int]] = []
        live = [(h, k, w) for h, k, w in zip(hosts, keys, weights, strict=True) if w > 0]
        if live:
            norm = _normalized([w for _, _, w in live])
            least = min(norm)
            scale = min(math.ceil(least * min_size) / least, float(max_size))
            current = 0.0
            target = 0.0
            for (host, key, _), share in zip(live, norm, strict=True):
                target += scale * share
                i = 0
                while current < target:
                    points.append((hash64(f"{key}_{i}".encode()), host))
                    i += 1
                    current += 1
            points.sort()
        self._hashes = [p[0] for p in points]
        self._hosts = [p[1] for p in points]

    def __len__(self) -> int:
        return len(self._hashes)

    def share(self, host: int) -> int:
        """How many points ``host`` has (for tests and ``explain``)."""
        return self._hosts.count(host)

    def owner(self, h: int) -> int:
        """The host owning the first point at or after ``h`` (wrapping); -1 for an empty ring."""
        hosts = self._hosts
        if not hosts:
            return -1
        i = bisect.bisect_left(self._hashes, h & _MASK64)
        return hosts[i if i < len(hosts) else 0]

    def walk(self, h: int) -> Iterator[int]:
        """Hosts clockwise from ``h``: the owner first, then the next points' owners (each point once)."""
        hosts = self._hosts
        n = len(hosts)
        if not n:
            return
        start = bisect.bisect_left(self._hashes, h & _MASK64)
        for step in range(n):
            yield hosts[(start + step) % n]


class MaglevTable:
    """Envoy's Maglev table: ``size`` slots (a prime) filled by each host's permutation, by weight.

    Hosts are taken in order of their key (Envoy sorts them so the table does not depend on the
    order endpoints arrive in); each has ``offset = h0 % size`` and ``skip = h1 % (size - 1) + 1``
    from one 16-byte BLAKE2b digest of its key, and in each round claims its next free slot when
    its weight allows (a host of the largest weight every round, one of a third of it every third).
    """

    __slots__ = ("_size", "_table")

    def __init__(self, hosts: Sequence[int], keys: Sequence[str], weights: Sequence[float], *,
                 size: int = DEFAULT_MAGLEV_TABLE_SIZE) -> None:
        self._size = size
        entries = sorted(
            (key, host, w) for host, key, w in zip(hosts, keys, weights, strict=True) if w > 0
        )
        if not entries:
            self._table: list[int] = []
            return
        norm = _normalized([w for _, _, w in entries])
        heaviest = max(norm)
        offsets: list[int] = []
        skips: list[int] = []
        for key, _, _ in entries:
            d = blake2b(key.encode(), digest_size=16).digest()
            offsets.append(int.from_bytes(d[:8], "little") % size)
            skips.append(int.from_bytes(d[8:], "little") % (size - 1) + 1)
        owners = [e[1] for e in entries]
        table = [-1] * size
        positions = offsets  # each host's next slot in its permutation: offset + skip * next (mod size)
        targets = [0.0] * len(entries)
        filled = 0
        iteration = 0
        while filled < size:
            iteration += 1
            for i in range(len(entries)):
                if iteration * norm[i] < targets[i]:
                    continue
                targets[i] += heaviest
                skip = skips[i]
                c = positions[i]
                while table[c] >= 0:
                    c += skip
                    if c >= size:
                        c -= size
                table[c] = owners[i]
                c += skip
                positions[i] = c - size if c >= size else c
                filled += 1
                if filled == size:
                    break
        self._table = table

    def __len__(self) -> int:
        return len(self._table)

    def share(self, host: int) -> int:
        return self._table.count(host)

    def owner(self, h: int) -> int:
        """The host in slot ``h % size``; -1 for an empty table."""
        table = self._table
        return table[(h & _MASK64) % len(table)] if table else -1

    def walk(self, h: int) -> Iterator[int]:
        """The slot's owner, then the owners of the following slots (a stand-in for Envoy's rehash on retry)."""
        table = self._table
        n = len(table)
        if not n:
            return
        start = (h & _MASK64) % n
        for step in range(n):
            yield table[(start + step) % n]
