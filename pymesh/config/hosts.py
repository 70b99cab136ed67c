"""Host names the way Istio reads them (``pkg/config/host/name.go``, ``ResolveShortnameToFQDN``)."""

from __future__ import annotations

import ipaddress

__all__ = ["DOMAIN", "candidates", "fqdn", "is_ip", "is_wildcard", "matches", "more_specific_first", "split_authority"]

DOMAIN = "cluster.local"  # Kubernetes' DNS domain; distinct from the SPIFFE trust domain


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def fqdn(host: str, namespace: str, domain: str = DOMAIN) -> str:
    """A name without a dot is short for ``name.<namespace>.svc.<domain>``; anything else is literal.

    The namespace is the one of the config object that names the host, not of the
    service, as in Istio. ``reviews.prod`` is NOT expanded (Istio takes it literally).
    """
    host = host.lower().rstrip(".")
    if host == "*" or "." in host or is_ip(host) or not host:
        return host
    return f"{host}.{namespace}.svc.{domain}"


def matches(pattern: str, host: str) -> bool:
    """Does ``pattern`` (exact, ``*.suffix`` or ``*``) cover ``host``?

    ``*.foo.com`` covers any name ending in ``.foo.com``, several labels deep, but not
    ``foo.com`` itself.
    """
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix) and len(host) > len(suffix)
    return False


def more_specific_first(host: str) -> tuple[int, int]:
    """Sort key: exact names before wildcards, longer wildcards before shorter."""
    return (1 if is_wildcard(host) else 0, -len(host))


def split_authority(authority: str) -> tuple[str, int | None]:
    """``"reviews:9080"`` -> ``("reviews", 9080)``; IPv6 in brackets is kept whole."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    if port.isdigit():
        return host.rstrip("."), int(port)
    return host.rstrip("."), None


def candidates(host: str, namespace: str, domain: str = DOMAIN) -> tuple[str, ...]:
    """The FQDNs a request's host may mean, most literal first, as Kubernetes DNS search does.

    From namespace ``ns``: ``reviews`` -> ``reviews.ns.svc.<domain>``; ``reviews.prod`` ->
    itself, then ``reviews.prod.svc.<domain>``; ``reviews.prod.svc`` -> itself, then
    ``reviews.prod.svc.<domain>``. A name already ending in the domain is only itself.
    """
    host = host.lower().rstrip(".")
    if not host or is_ip(host):
        return (host,)
    if "." not in host:
        return (f"{host}.{namespace}.svc.{domain}",)
    if host.endswith("." + domain):
        return (host,)
    dots = host.count(".")
    if dots == 1:
        return (host, f"{host}.svc.{domain}")
    if dots == 2 and host.endswith(".svc"):
        return (host, f"{host}.{domain}")
    return (host,)
