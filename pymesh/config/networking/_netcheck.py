"""Name, address and protocol rules shared by the DestinationRule, ServiceEntry and Gateway models.

Each follows Istio's ``pkg/config/validation`` (``agent.ValidateWildcardDomain``,
``ValidateFQDN``, ``labels.IsDNS1123Label``, ``protocol.Parse``, ``validateExportTo``).
Note that Istio's DNS-1123 label check accepts upper-case letters.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated

from pymesh.config.decode import Checker, Invalid

__all__ = [
    "PROTOCOLS",
    "UNIX_PREFIX",
    "GatewayProtocol",
    "ServiceProtocol",
    "check_export_to",
    "check_fqdn",
    "check_unix_address",
    "check_wildcard_domain",
    "is_dns_label",
    "is_http",
    "is_ip",
    "is_tls",
]

# protocol.Parse in istio/istio pkg/config/protocol, spelled in upper case.
PROTOCOLS: tuple[str, ...] = (
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP",
)
UNIX_PREFIX = "unix://"
_HTTP = frozenset({"HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"})
_TLS = frozenset({"HTTPS", "TLS"})

_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?"
_LABEL_RE = re.compile(_LABEL)
_WILDCARD_LABEL_RE = re.compile(r"\*|(?:\*|\*-)?" + _LABEL)


def _protocol(value: str) -> str:
    if not value:
        return ""
    upper = value.upper()
    if upper not in PROTOCOLS:
        raise Invalid(f"unsupported protocol {value!r}; supported protocols are {', '.join(PROTOCOLS)}")
    return upper


def _required_protocol(value: str) -> str:
    if not value:
        raise Invalid(f"protocol must be set; supported protocols are {', '.join(PROTOCOLS)}")
    return _protocol(value)


# Case-insensitive on input (Istio 1.0 samples write `http`, `tcp`); stored in upper case.
# Empty means "sniff the protocol" on a ServiceEntry; a Gateway port must name one.
ServiceProtocol = Annotated[str, _protocol]
GatewayProtocol = Annotated[str, _required_protocol]


def is_http(protocol: str) -> bool:
    return protocol in _HTTP


def is_tls(protocol: str) -> bool:
    return protocol in _TLS


def is_dns_label(value: str) -> bool:
    """``labels.IsDNS1123Label``: at most 63 letters, digits and inner '-'."""
    return len(value) <= 63 and _LABEL_RE.fullmatch(value) is not None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _preconditions(name: str) -> str | None:
    if len(name) > 255:
        return f"domain name {name!r} too long (max 255)"
    if not name:
        return "empty domain name not allowed"
    return None


def _dns_labels(domain: str, whole: str) -> str | None:
    parts = domain.split(".")
    tld = parts[-1]
    if re.fullmatch(r"[-+]?[0-9]+", tld):
        return f"domain name {whole!r} invalid (top level domain {tld!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None  # a trailing dot, as in `istio.io.`
        if not is_dns_label(label):
            return f"domain name {whole!r} invalid (label {label!r} invalid)"
    return None


def check_fqdn(name: str) -> str | None:
    """A fully qualified domain name (no wildcard), or the reason it is not one."""
    return _preconditions(name) or _dns_labels(name, name)


def check_wildcard_domain(domain: str) -> str | None:
    """A domain name whose first label may be ``*``, ``*foo`` or ``*-foo``; or the reason it is not."""
    problem = _preconditions(domain)
    if problem:
        return problem
    first, dot, rest = domain.partition(".")
    if len(first) > 63 or not _WILDCARD_LABEL_RE.fullmatch(first):
        return f"domain name {domain!r} invalid (label {first!r} invalid)"
    return _dns_labels(rest, domain) if dot else None


def check_unix_address(path: str) -> str | None:
    """The part after ``unix://``: an absolute file path or an abstract socket ``@name``."""
    if not path:
        return "unix address must not be empty"
    if path.startswith("@"):
        return None
    if not path.startswith("/"):
        return "UDS must be an absolute path or abstract socket"
    if path.endswith("/"):
        return "UDS may not be a dir"
    return None


def check_export_to(
    v: Checker, export_to: Sequence[str], *, service_entry: bool = False, with_selector: bool = False
) -> None:
    """``exportTo``: ``.``, ``*``, namespace names, and ``~`` (nobody) for a ServiceEntry only."""
    seen: set[str] = set()
    for i, entry in enumerate(export_to):
        key = v.namespace if entry == "." else entry
        if key in seen:
            if key != entry:
                v.error(f"duplicate entries in exportTo: . and current namespace {v.namespace}", "exportTo", i)
            else:
                v.error(f"duplicate entries in exportTo for entry {entry}", "exportTo", i)
            continue
        if entry == "~" and not service_entry:
            v.error("exportTo ~ (none) is not allowed for Istio configuration objects", "exportTo", i)
        elif entry not in (".", "*", "~") and not is_dns_label(entry):
            v.error(f"exportTo entry {entry!r} is invalid: only ., *, or a namespace name is allowed", "exportTo", i)
        seen.add(key)
    if with_selector and seen:
        if v.namespace not in seen:
            v.error("destination rule with workload selector cannot have exportTo beyond current namespace",
                    "exportTo")
        elif len(seen) > 1:
            v.error("destination rule with workload selector cannot have multiple entries in exportTo", "exportTo")
    if "*" in seen and len(export_to) > 1:
        v.error("cannot have both public (*) and non-public exportTo values for a resource", "exportTo")
    if "~" in seen and len(export_to) > 1:
        v.error("cannot export service entry to no one (~) and someone", "exportTo")
