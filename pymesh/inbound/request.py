"""The framework-neutral values every inbound step reads and returns.

The ASGI and WSGI adapters build one :class:`InboundRequest` per request; the steps in
:mod:`pymesh.inbound.core` answer ``None`` (go on) or a :class:`Denial` (a local reply);
the app receives a frozen :class:`Caller`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pymesh.security.identity import PeerIdentity

__all__ = ["ANONYMOUS", "NO_CLAIMS", "Caller", "Denial", "InboundRequest"]

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


@dataclass(slots=True)
class InboundRequest:
    """One request as it arrived, before any step changed it."""

    method: str
    raw_path: str  # as on the wire, percent-encoded, with "?query"
    host: str  # Host / :authority as received
    headers: tuple[tuple[str, str], ...]  # lower-case names; repeated headers kept as separate pairs
    scheme: str
    source_ip: str
    source_port: int
    destination_ip: str
    destination_port: int
    peer: PeerIdentity | None  # verified by TLS (or vouched for by a trusted proxy); None for plaintext
    sni: str | None = None
    port_known: bool = True  # False: destination_port came from the request (a Host header), not a socket

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in arrival order."""
        key = name.lower()
        return [v for k, v in self.headers if k == key]


@dataclass(frozen=True, slots=True)
class Denial:
    """A local reply: the request goes no further and the app never sees it."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
