"""Identity headers a client may not set: stripped on arrival unless a trusted proxy sent them.

Envoy sanitizes ``x-forwarded-client-cert`` (XFCC) from untrusted clients and keeps its
peer-metadata headers internal; a header that names a caller is only as good as the hop
that wrote it. pymesh removes these headers before any step reads them, so neither a
policy nor the app ever sees a client's own claim about who it is.

A *trusted proxy* (``trusted_proxies=``: IP addresses, CIDR ranges, or SPIFFE IDs of
verified peers) is a hop that already authenticated the caller, for instance the Envoy
sidecar or gateway in front of the process. Its requests keep their headers, and when the
connection itself carries no verified peer, the SPIFFE ``URI`` of the last XFCC element
(the one the proxy added about its own client) becomes the request's peer identity.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from pymesh.security.identity import PeerIdentity, SpiffeId

__all__ = ["IDENTITY_HEADERS", "TrustedProxies", "strip_identity_headers", "xfcc_peer"]

IDENTITY_HEADERS: Final = frozenset({
    "x-forwarded-client-cert",  # Envoy: the client certificate a proxy saw
    "x-envoy-peer-metadata",  # Istio metadata exchange: the caller's workload labels
    "x-envoy-peer-metadata-id",
    # Set by a proxy for the app behind it, never by a client: Istio bulletins 2020-002 and
    # 2023-001 were apps trusting client-sent copies (the path before a rewrite, Istio's attributes).
    "x-istio-attributes",
    "x-envoy-original-path",
})

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Which direct peers may pass identity headers on."""

    __slots__ = ("_networks", "_spiffe")

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[_Network] = []
        spiffe: set[str] = set()
        for entry in entries:
            entry = entry.strip()
            if entry.startswith("spiffe://"):
                spiffe.add(SpiffeId.parse(entry).uri)
            else:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError as exc:
                    raise ValueError(f"trusted proxy {entry!r} is not an IP address, CIDR or SPIFFE ID") from exc
        self._networks = tuple(networks)
        self._spiffe = frozenset(spiffe)

    def __bool__(self) -> bool:
        return bool(self._networks or self._spiffe)

    def trusts(self, source_ip: str, peer: PeerIdentity | None) -> bool:
        if peer is not None and peer.spiffe_id.uri in self._spiffe:
            return True
        if not self._networks or not source_ip:
            return False
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return False
        return any(address in net for net in self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._networks] + sorted(self._spiffe)})"


def strip_identity_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """``headers`` without the identity headers; the same tuple when there were none."""
    for name, _ in headers:
        if name in IDENTITY_HEADERS:
            return tuple(h for h in headers if h[0] not in IDENTITY_HEADERS)
    return headers


def xfcc_peer(values: list[str]) -> PeerIdentity | None:
    """The peer a proxy described in the last XFCC element's ``URI``; None if there is none usable."""
    if not values:
        return None
    elements = _split(",".join(values), ",")
    if not elements:
        return None
    for pair in _split(elements[-1], ";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip().lower() == "uri":
            try:
                return PeerIdentity(SpiffeId.parse(_unquote(value.strip())), ())
            except ValueError:
                return None
    return None


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (XFCC quotes values holding ``,``, ``;`` or ``=``)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"')
    return value
