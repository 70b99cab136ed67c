"""The workload's current certificate, renewed before it expires, and the TLS contexts that present it.

Istio's node agent rotates a workload certificate when the remaining life falls below
``SECRET_GRACE_PERIOD_RATIO`` (0.5) of its lifetime, the ratio jittered by ±0.01 so a
fleet does not renew in lockstep; ``CertificateSource`` does the same. Renewal re-issues
from a ``MeshCA`` or re-reads a folder another agent keeps fresh. A failed renewal keeps
the current certificate and retries with exponential backoff (never a tight loop), until
one succeeds; past expiry the old certificate is still presented and peers refuse it, so
the failure is closed, never plaintext.

Connections already established keep the context they were made with. New handshakes
get the new certificate: ``server_context`` hands out one stable context per mode, whose
SNI callback (run on every ClientHello) switches the connection to the current
certificate's context, so a running server (uvicorn, asyncio) never needs a restart.
Client contexts are per certificate version; pools made after a rotation use the new one.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pymesh.forking import after_fork_in_child
from pymesh.security.identity import WorkloadCertificate
from pymesh.security.tls import client_context, server_context

if TYPE_CHECKING:
    from pymesh.security.ca import KeyType, MeshCA
    from pymesh.workload import Workload

__all__ = ["DEFAULT_GRACE_RATIO", "DEFAULT_JITTER", "CertificateSource", "SourceOptions", "merge_roots"]

log = logging.getLogger("pymesh.security")

DEFAULT_GRACE_RATIO = 0.5  # Istio SECRET_GRACE_PERIOD_RATIO
DEFAULT_JITTER = 0.01  # Istio SECRET_GRACE_PERIOD_RATIO_JITTER
_RETRY_FIRST, _RETRY_MAX = 1.0, 60.0
_MIN_GAP = 0.5  # seconds between two renewals, whatever the certificates say


class SourceOptions(TypedDict, total=False):
    """The keyword options of ``CertificateSource``, as the factory methods pass them on."""

    grace_ratio: float
    jitter: float
    extra_roots_pem: bytes
    allow_legacy_chain: bool
    clock: Callable[[], float]
    rng: random.Random


@dataclass(frozen=True, slots=True)
class _State:
    cert: WorkloadCertificate
    roots_pem: bytes  # the certificate's roots plus any extra (old or new) roots during a CA rotation
    version: int
    rotate_at: float  # epoch seconds


class CertificateSource:
    """Thread-safe holder of the workload certificate; rotates it and hands out TLS contexts."""

    def __init__(self, initial: WorkloadCertificate, renew: Callable[[], WorkloadCertificate] | None = None, *,
                 grace_ratio: float = DEFAULT_GRACE_RATIO, jitter: float = DEFAULT_JITTER,
                 extra_roots_pem: bytes = b"", allow_legacy_chain: bool = False,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        if not 0.0 < grace_ratio < 1.0:
            raise ValueError("grace_ratio must be between 0 and 1 (exclusive)")
        if not 0.0 <= jitter < min(grace_ratio, 1.0 - grace_ratio):
            raise ValueError("jitter must be non-negative and smaller than the grace ratio's distance to 0 and 1")
        self._renew = renew
        self._grace = grace_ratio
        self._jitter = jitter
        self._legacy = allow_legacy_chain
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311  (jitter spreads renewals; it guards no secret)
        self._extra_roots = bytes(extra_roots_pem)
        self._lock = threading.Lock()
        self._renewing = threading.Lock()
        self._state = self._make_state(initial, 1)
        self._contexts: dict[tuple[int, str], ssl.SSLContext] = {}
        self._fronts: dict[bool, ssl.SSLContext] = {}
        self._listeners: list[Callable[[WorkloadCertificate], None]] = []
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # Renewal must go on in a forked worker, or its certificate simply expires there.
        self._lock, self._renewing = threading.Lock(), threading.Lock()
        running, self._thread = self._thread is not None and not self._stop.is_set(), None
        if running:
            self.start()

    @classmethod
    def from_ca(cls, ca: MeshCA, namespace: str, service_account: str, *, ttl: timedelta = timedelta(hours=24),
                key: KeyType = "ec", dns_names: Sequence[str] = (), trust_domain: str | None = None,
                **options: Unpack[SourceOptions]) -> CertificateSource:
        """Issue from ``ca`` now and re-issue at each rotation (development and tests)."""
        clock = options.get("clock", time.time)

        def renew() -> WorkloadCertificate:
            now = datetime.fromtimestamp(clock(), UTC)  # the source's clock, so injected time is used end to end
            return ca.issue(namespace, service_account, ttl=ttl, key=key, dns_names=dns_names,
                            trust_domain=trust_domain, now=now)
        return cls(renew(), renew, **options)

    @classmethod
    def for_workload(cls, workload: Workload, *, ca: MeshCA | None = None, trust_domain: str = "cluster.local",
                     **options: Unpack[SourceOptions]) -> CertificateSource | None:
        """The workload's identity: from its ``cert_dir`` if it has one, else issued by ``ca``, else None.

        None means the workload has no identity, so mTLS is off for it (CONTRACT §3). With a
        ``cert_dir`` the certificate decides who the workload is.
        """
        if workload.cert_dir:
            return cls.from_dir(workload.cert_dir, **options)
        if ca is None:
            return None
        return cls.from_ca(ca, workload.namespace, workload.service_account,
                           trust_domain=workload.trust_domain or trust_domain, **options)

    @classmethod
    def from_dir(cls, path: str | Path, **options: Unpack[SourceOptions]) -> CertificateSource:
        """Read Istio's three files from ``path`` now, and again whenever rotation is due."""
        folder = Path(path)
        return cls(WorkloadCertificate.from_dir(folder), lambda: WorkloadCertificate.from_dir(folder), **options)

    # -- what is current -------------------------------------------------------------------------

    @property
    def current(self) -> WorkloadCertificate:
        return self._state.cert

    @property
    def allow_legacy_chain(self) -> bool:
        """The compatibility switch for pre-RFC 5280 CA chains (Istio's 2018 sample plug-in CA)."""
        return self._legacy

    @property
    def roots_pem(self) -> bytes:
        return self._state.roots_pem

    @property
    def version(self) -> int:
        """Goes up by one at every rotation or trust-bundle change; pools can key on it."""
        return self._state.version

    @property
    def rotate_at(self) -> float:
        """When (epoch seconds) the current certificate is due for renewal."""
        return self._state.rotate_at

    def server_context(self, *, require_client_cert: bool) -> ssl.SSLContext:
        """A context to serve with for as long as the server runs; every handshake gets the current cert."""
        with self._lock:
            front = self._fronts.get(require_client_cert)
        if front is not None:
            return front
        front = server_context(self._state.cert, require_client_cert=require_client_cert,
                               roots_pem=self._state.roots_pem, allow_legacy_chain=self._legacy)
        kind = "strict" if require_client_cert else "permissive"

        def switch(conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            # Runs on every ClientHello, with or without SNI: hand this connection the current context,
            # and keep the name the client asked for (policies read it as ``connection.sni``).
            conn.context = self._context(self._state, kind)
            with contextlib.suppress(AttributeError):
                conn.pymesh_sni = server_name  # type: ignore[union-attr]

        front.sni_callback = switch
        with self._lock:
            return self._fronts.setdefault(require_client_cert, front)

    def client_context(self) -> ssl.SSLContext:
        """An ISTIO_MUTUAL client context with the current certificate and trust bundle."""
        return self._context(self._state, "client")

    def subscribe(self, listener: Callable[[WorkloadCertificate], None]) -> Callable[[], None]:
        """Call ``listener(new_cert)`` after every rotation; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    # -- rotating --------------------------------------------------------------------------------

    def due(self, now: float | None = None) -> bool:
        moment = self._clock() if now is None else now
        return moment >= self._state.rotate_at and moment >= self._retry_at

    def maybe_rotate(self, now: float | None = None) -> bool:
        """Rotate if due; True when a new certificate was installed."""
        if self._renew is None or not self.due(now):
            return False
        # Cheap enough to call per request; when due, one caller renews and the others go on
        # with the current certificate instead of all renewing at once.
        if not self._renewing.acquire(blocking=False):
            return False
        try:
            if not self.due(now):  # another caller renewed while this one was deciding
                return False
            self.rotate()
        except Exception as exc:  # the CA may be down: keep serving the current certificate
            self._failures += 1
            delay = min(_RETRY_MAX, _RETRY_FIRST * 2 ** (self._failures - 1))
            self._retry_at = (self._clock() if now is None else now) + delay
            self.last_error = exc
            log.warning("certificate renewal failed (attempt %d, next in %.0fs): %s", self._failures, delay, exc)
            return False
        finally:
            self._renewing.release()
        return True

    def rotate(self, cert: WorkloadCertificate | None = None) -> WorkloadCertificate:
        """Install ``cert``, or renew now; raises if renewal fails (the current certificate stays)."""
        if cert is None:
            if self._renew is None:
                raise RuntimeError("this CertificateSource has no way to renew; pass the new certificate")
            cert = self._renew()  # never under the lock: issuing or reading files is slow
        with self._lock:
            old = self._state
            if cert.cert_chain_pem == old.cert.cert_chain_pem and cert.root_pem == old.cert.root_pem:
                raise RuntimeError("renewal returned the certificate already in use")
            self._state = self._make_state(cert, old.version + 1, earliest=self._clock() + _MIN_GAP)
            self._failures = 0
            self._retry_at = 0.0
            self.last_error = None
            self._drop_contexts_before(self._state.version)
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(cert)
            except Exception:
                log.exception("certificate rotation listener failed")
        return cert

    def set_extra_roots(self, extra_roots_pem: bytes) -> None:
        """Trust these roots too (CA rotation: old and new side by side); b"" trusts only the cert's own."""
        with self._lock:
            self._extra_roots = bytes(extra_roots_pem)
            old = self._state
            self._state = _State(old.cert, merge_roots(old.cert.root_pem, self._extra_roots), old.version + 1,
                                 old.rotate_at)
            self._drop_contexts_before(self._state.version)

    def start(self) -> CertificateSource:
        """Renew in a daemon thread until ``stop()``."""
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="pymesh-cert-rotation", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> CertificateSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"CertificateSource({self._state.cert!r}, version={self._state.version})"

    # -- inside ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            wait = max(self._state.rotate_at, self._retry_at) - self._clock()
            if wait > 0 and self._stop.wait(min(wait, 3600.0)):
                return
            if not self.maybe_rotate() and self.due() and self._stop.wait(_MIN_GAP):
                return  # another caller is renewing (or it failed and backs off): do not spin

    def _make_state(self, cert: WorkloadCertificate, version: int, earliest: float = 0.0) -> _State:
        start, end = cert.not_before.timestamp(), cert.not_after.timestamp()
        ratio = self._grace + self._rng.uniform(-self._jitter, self._jitter)
        # A renewal that is itself already due (a CA near its own expiry clamps the leaf) must not
        # renew again at once: ``earliest`` keeps consecutive renewals apart.
        rotate_at = max(end - (end - start) * ratio, earliest)
        return _State(cert, merge_roots(cert.root_pem, self._extra_roots), version, rotate_at)

    def _context(self, state: _State, kind: str) -> ssl.SSLContext:
        key = (state.version, kind)
        ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        if kind == "client":
            ctx = client_context(state.cert, roots_pem=state.roots_pem, allow_legacy_chain=self._legacy)
        else:
            ctx = server_context(state.cert, require_client_cert=kind == "strict", roots_pem=state.roots_pem,
                                 allow_legacy_chain=self._legacy)
        with self._lock:
            return self._contexts.setdefault(key, ctx)

    def _drop_contexts_before(self, version: int) -> None:
        # Called under the lock. Connections that use an old context keep a reference of their own.
        for key in [k for k in self._contexts if k[0] < version]:
            del self._contexts[key]


def merge_roots(*bundles: bytes) -> bytes:
    """One PEM bundle holding every distinct certificate of ``bundles``, in order."""
    seen: set[bytes] = set()
    out: list[bytes] = []
    for bundle in bundles:
        if not bundle.strip():
            continue
        for cert in x509.load_pem_x509_certificates(bundle):
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(cert.public_bytes(serialization.Encoding.PEM))
    return b"".join(out)
