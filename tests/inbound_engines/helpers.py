"""Building blocks for the inbound engine tests: requests, policies, keys, tokens, a JWKS server."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pymesh.config.load import Text, load
from pymesh.config.security import RequestAuthentication
from pymesh.inbound import paths
from pymesh.inbound.authn import Authenticator, AuthnOutcome, Identity, KeysPending
from pymesh.inbound.authz import Authorizer, Decision
from pymesh.inbound.jwks import JwksRegistry
from pymesh.inbound.request import Denial, InboundRequest
from pymesh.security.identity import PeerIdentity, SpiffeId
from pymesh.snapshot.policies import PolicyIndex

MODES: tuple[paths.Mode, ...] = ("NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")


def peer(principal: str) -> PeerIdentity:
    """A verified peer from ``td/ns/x/sa/y``."""
    return PeerIdentity(SpiffeId.parse(f"spiffe://{principal}"), ())


def request(
    path: str = "/",
    *,
    method: str = "GET",
    host: str = "svc.foo.svc.cluster.local",
    headers: Sequence[tuple[str, str]] = (),
    principal: str | None = None,
    source_ip: str = "10.0.0.1",
    destination_ip: str = "10.0.0.2",
    port: int = 8080,
    sni: str | None = None,
    scheme: str = "http",
) -> InboundRequest:
    return InboundRequest(
        method=method, raw_path=path, host=host, headers=tuple((k.lower(), v) for k, v in headers),
        scheme=scheme, source_ip=source_ip, source_port=40000, destination_ip=destination_ip,
        destination_port=port, peer=peer(principal) if principal else None, sni=sni,
    )


def policies(text: str, *, namespace: str = "foo", labels: Mapping[str, str] | None = None) -> Any:
    """(AuthorizationPolicy resources selecting workload ``svc``, RequestAuthentication specs, mesh config)."""
    config = load([Text(text)], namespace=namespace)
    index = PolicyIndex([r for r in config.resources if r.kind in ("AuthorizationPolicy", "RequestAuthentication")],
                        config.mesh_config.root_namespace)
    chosen = index.for_workload(namespace, "svc", labels or {"app": "svc"})
    return chosen.authorization, [r.spec for r in chosen.request_authentication], config.mesh_config


def authorizer(text: str, *, namespace: str = "foo", labels: Mapping[str, str] | None = None) -> Authorizer:
    authz, _, mesh = policies(text, namespace=namespace, labels=labels)
    return Authorizer(authz, providers=mesh.extension_providers, trust_domain=mesh.trust_domain,
                      trust_domain_aliases=mesh.trust_domain_aliases)


def decide(az: Authorizer, req: InboundRequest, mode: paths.Mode = "BASE", identity: Identity | None = None) -> str:
    """'A' allowed, 'D' denied (403), 'X' refused by normalization (400)."""
    norm = paths.normalize(req.raw_path, mode)
    if isinstance(norm, Denial):
        return "X"
    decision: Decision = az.check(req, norm.path, identity)
    if not decision.allowed:
        assert decision.denial is not None
        assert decision.denial.status == 403
        assert decision.denial.body == b"RBAC: access denied"
        return "D"
    return "A"


# -- keys and tokens ----------------------------------------------------------------------------


@dataclass
class SigningKey:
    """A key pair the test makes, with its public JWK."""

    kid: str
    alg: str
    private: Any
    public_pem: bytes = b""

    @classmethod
    def rsa(cls, kid: str = "rsa-1") -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid, "RS256", key, _pem(key))

    @classmethod
    def ec(cls, kid: str = "ec-1") -> SigningKey:
        key = ec.generate_private_key(ec.SECP256R1())
        return cls(kid, "ES256", key, _pem(key))

    def jwk(self) -> dict[str, Any]:
        algo: Any = jwt.algorithms.RSAAlgorithm if self.alg.startswith("RS") else jwt.algorithms.ECAlgorithm
        data: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        data["kid"] = self.kid
        return data

    def sign(self, claims: Mapping[str, Any], **header: Any) -> str:
        return jwt.encode(dict(claims), self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


_CACHED: dict[str, SigningKey] = {}


def shared_key(kind: str) -> SigningKey:
    """One RSA / EC key per test session (RSA generation costs ~50 ms)."""
    if kind not in _CACHED:
        _CACHED[kind] = SigningKey.rsa() if kind == "rsa" else SigningKey.ec()
    return _CACHED[kind]


def _pem(key: Any) -> bytes:
    pem: bytes = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem


def jwks(*keys: SigningKey) -> str:
    return json.dumps({"keys": [k.jwk() for k in keys]})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(iss: str = "https://idp.example", sub: str = "alice", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": iss, "sub": sub, "iat": now, "exp": now + 600, **extra}


def authenticator(rules_yaml: str, registry: JwksRegistry | None = None, **kw: Any) -> Authenticator:
    _, specs, _ = policies(rules_yaml)
    specs_typed: list[RequestAuthentication] = specs
    return Authenticator(specs_typed, registry or JwksRegistry(background=False), **kw)


def authenticate(auth: Authenticator, req: InboundRequest) -> AuthnOutcome | Denial | KeysPending:
    norm = paths.normalize(req.raw_path, "BASE")
    assert not isinstance(norm, Denial)
    return auth.authenticate(req, norm.path, norm.query)


# -- a JWKS server --------------------------------------------------------------------------------


@dataclass
class JwksServer:
    """A threaded HTTP(S) server on 127.0.0.1 answering ``body`` (or ``status``) on every path."""

    body: bytes = b'{"keys": []}'
    status: int = 200
    delay: float = 0.0
    hits: int = 0
    tls: bool = False
    ca_file: str = ""
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits += 1
                if owner.delay:
                    time.sleep(owner.delay)
                self.send_response(owner.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if self.tls:
            context, self.ca_file = _server_tls()
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def jwks_server(body: str = '{"keys": []}', *, tls: bool = False) -> Iterator[JwksServer]:
    server = JwksServer(body.encode(), tls=tls).start()
    try:
        yield server
    finally:
        server.stop()


def _server_tls() -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for 127.0.0.1; returns the server context and the CA file to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    folder = Path(tempfile.mkdtemp(prefix="pymesh-jwks-"))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, str(cert_file)
