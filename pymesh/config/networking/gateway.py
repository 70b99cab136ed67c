"""Gateway (networking.istio.io): the ports, hosts and TLS an ingress or egress gateway serves.

Fields follow istio/api ``networking/v1alpha3/gateway.proto``; rules follow Istio's
``ValidateGateway``, ``validateServer`` and ``validateTLSOptions``. The gateway's own name
must be a DNS label too; the loader checks ``metadata.name``, which a spec cannot see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pymesh.config.decode import Checker, field
from pymesh.config.networking._netcheck import (
    UNIX_PREFIX,
    GatewayProtocol,
    check_unix_address,
    check_wildcard_domain,
    is_dns_label,
    is_http,
    is_ip,
    is_tls,
)
from pymesh.config.resource import KindSpec
from pymesh.config.types import NonNegInt

__all__ = [
    "KINDS",
    "Gateway",
    "Port",
    "Server",
    "ServerTLSSettings",
    "TLSCertificate",
]

ServerTLSMode = Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]
TLSProtocol = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]

# pkg/config/security ValidCipherSuites (BoringSSL names); others are ignored with a warning.
_CIPHERS = frozenset({
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA",
})


def _cipher_ok(name: str) -> bool:
    # "", "ALL" and expressions such as "-AES128-SHA" or "+..." pass, as in Istio.
    return not name or name == "ALL" or not name[0].isalnum() or name in _CIPHERS


@dataclass(frozen=True, slots=True, kw_only=True)
class Port:
    number: NonNegInt  # 0 only with a unix:// bind
    protocol: GatewayProtocol  # upper case
    name: str
    target_port: NonNegInt = 0  # deprecated in the API, and an error on a Gateway

    def _check(self, v: Checker) -> None:
        if self.target_port:
            v.error("targetPort has no impact on Gateways", "targetPort")
        if not self.name:
            v.error("port name must be set", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSCertificate:
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerTLSSettings:
    https_redirect: bool = False
    mode: ServerTLSMode = "PASSTHROUGH"
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: tuple[str, ...] = ()
    ca_cert_credential_name: str = ""
    tls_certificates: tuple[TLSCertificate, ...] = ()
    subject_alt_names: tuple[str, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    min_protocol_version: TLSProtocol = "TLS_AUTO"
    max_protocol_version: TLSProtocol = "TLS_AUTO"
    cipher_suites: tuple[str, ...] = ()
    insecure_skip_verify: bool | None = None

    @property
    def is_passthrough(self) -> bool:
        return self.mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH")

    def _check(self, v: Checker) -> None:
        for wire, items in (("credentialNames", self.credential_names), ("tlsCertificates", self.tls_certificates)):
            if len(items) > 2:
                v.error(f"{wire} may list at most 2 entries (one RSA and one ECDSA certificate)", wire)
        if self.min_protocol_version in ("TLSV1_0", "TLSV1_1") and not self.cipher_suites:
            v.warn("TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer "
                   "include compatible ciphers", "minProtocolVersion")
        self._check_ciphers(v)
        if self.mode == "ISTIO_MUTUAL":
            for wire, given in (
                ("serverCertificate", self.server_certificate), ("privateKey", self.private_key),
                ("caCertificates", self.ca_certificates), ("tlsCertificates", self.tls_certificates),
                ("credentialName", self.credential_name), ("credentialNames", self.credential_names),
            ):
                if given:
                    v.error(f"ISTIO_MUTUAL TLS cannot have associated {wire}", wire)
            return
        if self.is_passthrough and (
            self.ca_crl or self.server_certificate or self.private_key or self.ca_certificates
            or self.tls_certificates or self.credential_name or self.credential_names
        ):
            v.warn(f"{self.mode} mode does not use certificates, they will be ignored", "mode")
        sources = sum((
            bool(self.server_certificate and self.private_key), bool(self.credential_name),
            bool(self.credential_names), bool(self.tls_certificates),
        ))
        if sources > 1:
            v.error("only one of credential_name, credential_names, server_certificate/private_key, "
                    "tls_certificates should be specified")
        self._check_files(v)
        if self.ca_crl:
            if self.credential_name:
                v.error("CRL is not supported with credentialName. CRL has to be specified in the credential",
                        "caCrl")
            if self.mode == "SIMPLE":
                v.error("CRL is not supported with SIMPLE TLS", "caCrl")

    def _check_files(self, v: Checker) -> None:
        if self.mode not in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
            return
        if self.credential_name or self.credential_names:
            return  # the certificates come from the named secret(s)
        what = "SIMPLE TLS" if self.mode == "SIMPLE" else "MUTUAL TLS"
        if what == "MUTUAL TLS" and not self.ca_certificates:
            v.error(f"{what} requires a client CA bundle", "caCertificates")
        if self.tls_certificates:
            for i, cert in enumerate(self.tls_certificates):
                if not cert.server_certificate:
                    v.error(f"{what} requires a server certificate", "tlsCertificates", i, "serverCertificate")
                if not cert.private_key:
                    v.error(f"{what} requires a private key", "tlsCertificates", i, "privateKey")
            return
        if not self.server_certificate:
            v.error(f"{what} requires a server certificate (serverCertificate or credentialName)",
                    "serverCertificate")
        if not self.private_key:
            v.error(f"{what} requires a private key", "privateKey")

    def _check_ciphers(self, v: Checker) -> None:
        seen: set[str] = set()
        invalid: list[str] = []
        duplicate: list[str] = []
        for cs in self.cipher_suites:
            if not _cipher_ok(cs):
                invalid.append(cs)
            elif cs in seen:
                duplicate.append(cs)
            seen.add(cs)
        if invalid:
            v.warn(f"ignoring invalid cipher suites: {sorted(set(invalid))}", "cipherSuites")
        if duplicate:
            v.warn(f"ignoring duplicate cipher suites: {sorted(set(duplicate))}", "cipherSuites")


def _check_host(host: str) -> str | None:
    """``[namespace/]dnsName`` of a Gateway server (``agent.ValidateNamespaceSlashWildcardHostname``)."""
    ns, slash, name = host.partition("/")
    if not slash:
        ns, name = "", host
    elif not ns or not name:
        return "config namespace and dnsName in host entry cannot be empty"
    elif ns not in ("*", ".") and not is_dns_label(ns):
        return f"invalid namespace value {ns!r} in gateway"
    if name != "*" and "." not in name:
        return f"short names (non FQDN) are not allowed: {name!r}"
    problem = check_wildcard_domain(name)
    if problem and not is_ip(name):
        return problem
    if "*" in name and name != "*" and not name.startswith("*."):
        return f"partial wildcard {name!r} not allowed"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    port: Port
    bind: str = ""  # an IP, or unix:///path with port number 0
    hosts: tuple[str, ...]
    tls: ServerTLSSettings | None = None
    default_endpoint: str = ""
    name: str = ""

    def _check(self, v: Checker) -> None:
        if not self.hosts:
            v.error("server config must contain at least one host", "hosts")
        for i, host in enumerate(self.hosts):
            problem = _check_host(host)
            if problem:
                v.error(problem, "hosts", i)
        unix = self.bind.startswith(UNIX_PREFIX)
        if unix:
            problem = check_unix_address(self.bind.removeprefix(UNIX_PREFIX))
            if problem:
                v.error(f"{problem}: {self.bind!r}", "bind")
            if self.port.number != 0:
                v.error("port number must be 0 for unix domain socket", "port", "number")
        else:
            if self.bind and not is_ip(self.bind):
                v.error(f"{self.bind} is not a valid IP", "bind")
            if not 1 <= self.port.number <= 65535:
                v.error(f"port number {self.port.number} must be in the range 1..65535", "port", "number")
        protocol = self.port.protocol
        if is_tls(protocol) and self.tls is None:
            v.error("server must have TLS settings for HTTPS/TLS protocols", "tls")
        elif not is_tls(protocol) and self.tls is not None:
            tls = self.tls
            if is_http(protocol):
                # A plain HTTP server may carry only `httpsRedirect`.
                if not tls.is_passthrough or tls.ca_certificates or tls.private_key or tls.server_certificate:
                    v.error("server cannot have TLS settings for plain text HTTP ports", "tls")
            else:
                v.error("server cannot have TLS settings for non HTTPS/TLS ports", "tls")


@dataclass(frozen=True, slots=True, kw_only=True)
class Gateway:
    servers: tuple[Server, ...] = ()
    selector: Mapping[str, str] = field(default_factory=dict)  # gateway workload labels

    def _check(self, v: Checker) -> None:
        if not self.servers:
            v.error("gateway must have at least one server", "servers")
        names: set[str] = set()
        for i, server in enumerate(self.servers):
            if server.port.name in names:
                v.error(f"port names in servers must be unique: duplicate name {server.port.name}",
                        "servers", i, "port", "name")
            names.add(server.port.name)
            if server.tls is not None and server.tls.https_redirect and not is_http(server.port.protocol):
                v.warn("tls.httpsRedirect should only be used with http servers", "servers", i, "tls", "httpsRedirect")


KINDS: tuple[KindSpec, ...] = (
    KindSpec("networking.istio.io", "Gateway", ("v1", "v1beta1", "v1alpha3"), Gateway),
)
