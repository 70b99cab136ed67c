"""The framework-neutral values every inbound step reads and returns.

The ASGI and WSGI adapters build one :class:`InboundRequest` per request; the steps in
:mod:`pymesh.inbound.core` answer ``None`` (go on) or a :class:`Denial` (a local reply);
the app receives a frozen :class:`Caller`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymesh.security.identity import PeerIdentity

__all__ = ["ANONYMOUS", "NO_CLAIMS", "Caller", "Denial", "InboundRequest", "MemoReads"]

NO_CLAIMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Caller:
    """Who called: the verified peer (mTLS) and, once a token was checked, the request principal.

    ``request.scope["pymesh"]`` (ASGI) and ``environ["pymesh"]`` (WSGI) hold one. Every
    field is None (and ``claims`` empty) for an anonymous plaintext request.
    """

    peer_principal: str | None  # "cluster.local/ns/tutorial/sa/customer"
    spiffe_id: str | None  # "spiffe://cluster.local/ns/tutorial/sa/customer"
    peer_namespace: str | None
    request_principal: str | None = None  # "iss/sub" of a verified JWT
    claims: Mapping[str, Any] = field(default_factory=lambda: NO_CLAIMS, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.claims, MappingProxyType):
            object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # A mappingproxy cannot be pickled; rebuild from a plain dict.
        fields = (self.peer_principal, self.spiffe_id, self.peer_namespace, self.request_principal, dict(self.claims))
        return (Caller, fields)


ANONYMOUS = Caller(None, None, None)


RawHeaders = Sequence[tuple[bytes, bytes]]
_first = itemgetter(0)


@functools.cache
def _encoded(names: frozenset[str]) -> frozenset[bytes]:
    return frozenset(n.encode("latin-1") for n in names)


class InboundRequest:
    """One request as it arrived, before any step changed it.

    ``headers`` (lower-case names; repeated headers kept as separate pairs) may instead be
    given as ``raw_headers``, the ASGI byte pairs: they are decoded on first read, so a
    pipeline where no step reads a header never pays for decoding them.
    """

    __slots__ = ("_decoded", "_headers", "_raw", "destination_ip", "destination_port", "host", "method", "peer",
                 "port_known", "raw_path", "scheme", "sni", "source_ip", "source_port")

    def __init__(
        self,
        method: str,
        raw_path: str,  # as on the wire, percent-encoded, with "?query"
        host: str,  # Host / :authority as received
        headers: tuple[tuple[str, str], ...] | None,
        scheme: str,
        source_ip: str,
        source_port: int,
        destination_ip: str,
        destination_port: int,
        peer: PeerIdentity | None,  # verified by TLS (or vouched for by a trusted proxy); None for plaintext
        sni: str | None = None,
        port_known: bool = True,  # False: destination_port came from the request (a Host header), not a socket
        raw_headers: RawHeaders = (),
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.host = host
        self._raw = raw_headers
        self._decoded = self._headers = headers  # None until ``raw_headers`` are decoded
        self.scheme = scheme
        self.source_ip = source_ip
        self.source_port = source_port
        self.destination_ip = destination_ip
        self.destination_port = destination_port
        self.peer = peer
        self.sni = sni
        self.port_known = port_known

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        headers = self._headers
        return self._decode() if headers is None else headers

    @headers.setter
    def headers(self, value: tuple[tuple[str, str], ...]) -> None:
        if self._headers is None:
            self._decode()  # first, so that headers_changed compares with what arrived
        self._headers = value

    def _decode(self) -> tuple[tuple[str, str], ...]:
        headers = self._decoded = self._headers = tuple(
            [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in self._raw])
        return headers

    @property
    def headers_changed(self) -> bool:
        """True when a step replaced the headers: the adapter then hands the app the new ones."""
        return self._headers is not self._decoded

    def has_any(self, names: frozenset[str]) -> bool:
        """True when a header named one of ``names`` (lower case) is present; decodes nothing."""
        if self._headers is not None:
            return not names.isdisjoint(map(_first, self._headers))
        return not _encoded(names).isdisjoint(map(bytes.lower, map(_first, self._raw)))  # iterates in C

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in arrival order."""
        key = name.lower()
        return [v for k, v in self.headers if k == key]

    def __repr__(self) -> str:
        return (f"InboundRequest({self.method} {self.raw_path!r}, host={self.host!r}, "
                f"source={self.source_ip}:{self.source_port}, destination={self.destination_ip}:"
                f"{self.destination_port}, peer={self.peer!r})")


@dataclass(frozen=True, slots=True)
class Denial:
    """A local reply: the request goes no further and the app never sees it."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    _encoded: tuple[tuple[bytes, bytes], ...] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def encoded_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """``headers`` as latin-1 byte pairs, with the ``content-length``; built once per Denial
        (most are module constants, or remembered with a verdict)."""
        encoded = self._encoded
        if encoded is None:
            encoded = (*[(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers],
                       (b"content-length", str(len(self.body)).encode("ascii")))
            object.__setattr__(self, "_encoded", encoded)
        return encoded


@dataclass(frozen=True, slots=True)
class MemoReads:
    """What a step declared memoizable (``pymesh.inbound.core.memoizable``) reads beyond the method,
    target, Host, destination port and verified peer."""

    addresses: bool = False  # the source and destination IPs
    headers: frozenset[str] = frozenset()  # lower-case names, every value of which the key must hold
