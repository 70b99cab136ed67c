"""JWKS key sets for request authentication: fetched in the background, never on the request path.

pyjwt's ``PyJWKClient`` fetches synchronously on the caller's thread while holding a lock,
and forgets every key when its cache lifespan ends while the endpoint is down. pymesh's
cache instead:

- prefetches on construction and refreshes on a daemon thread (httpx, ``timeout``
  seconds, no redirects, at most :data:`MAX_JWKS_BYTES`), every ``refresh_interval`` after
  a success and with a doubling back-off (1 s to 60 s) after a failure;
- lets a request with an unknown ``kid`` ask for an early refresh, at most once per
  ``cooldown``; the request itself never performs I/O. A driver may wait for the answer
  (:meth:`JwksCache.wait`, or :meth:`JwksCache.wait_async` on an event loop) and try again;
- keeps the last good key set while refreshes fail, for at most ``stale_for`` seconds
  after its fetch; a response that is not a usable JWKS counts as a failure and leaves the
  good set untouched;
- answers "no keys" when none were ever fetched (or they went stale): every token then
  fails with 401 and there is no fallback key of any kind (Istio's CVE-2026-31837 was a
  fallback to a key whose private half was public).

Keys are parsed once into :class:`Key` values carrying the algorithms their type allows
(RSA: RS*/PS*; EC: the ES* of its curve; OKP Ed25519/Ed448: EdDSA). Symmetric ``oct`` keys are
used only from inline ``jwks`` (an operator-written secret), never from a remote set; a
key marked ``use: enc`` and an RSA key under 2048 bits are skipped. Time is injected (``clock``) so tests never sleep.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from pymesh.forking import after_fork_in_child
from pymesh.inbound.fetch import bounded_get

__all__ = ["MAX_JWKS_BYTES", "Fetcher", "JwksCache", "JwksRegistry", "Key", "KeySet", "parse_jwks"]

logger = logging.getLogger("pymesh.inbound.jwks")

MAX_JWKS_BYTES = 1 << 20
_MAX_KEYS = 256
_MIN_RSA_BITS = 2048

Fetcher = Callable[[str, float], bytes]
"""``fetch(url, timeout) -> body``; raises on any failure (status other than 200 included)."""

_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"P-256": frozenset({"ES256"}), "P-384": frozenset({"ES384"}), "P-521": frozenset({"ES512"}),
            "secp256k1": frozenset({"ES256K"})}
_OKP_ALGS = {"Ed25519": frozenset({"EdDSA"}), "Ed448": frozenset({"EdDSA"})}
_HMAC_ALGS = frozenset({"HS256", "HS384", "HS512"})


@dataclass(frozen=True, slots=True)
class Key:
    """One verification key: its ``kid`` (or None) and the algorithms its type permits."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any  # a cryptography public key, or bytes for an inline oct key


@dataclass(frozen=True, slots=True)
class KeySet:
    """A parsed JWKS; :meth:`candidates` are the keys a token with ``kid`` and ``alg`` may be checked with."""

    keys: tuple[Key, ...]

    def candidates(self, kid: str | None, alg: str) -> tuple[Key, ...]:
        # As Envoy: a token kid selects keys with that kid or without one; no kid tries every key.
        return tuple(k for k in self.keys if alg in k.algorithms and (kid is None or k.kid in (None, kid)))

    def has_kid(self, kid: str) -> bool:
        return any(k.kid == kid for k in self.keys)


def _algorithms(jwk: Mapping[str, Any], allow_oct: bool) -> frozenset[str]:
    kty = jwk.get("kty")
    if kty == "RSA":
        allowed = _RSA_ALGS
    elif kty == "EC":
        allowed = _EC_ALGS.get(str(jwk.get("crv")), frozenset())
    elif kty == "OKP":
        allowed = _OKP_ALGS.get(str(jwk.get("crv")), frozenset())
    elif kty == "oct" and allow_oct:
        allowed = _HMAC_ALGS
    else:
        return frozenset()
    alg = jwk.get("alg")
    if alg is None:
        return allowed
    return frozenset({alg}) & allowed if isinstance(alg, str) else frozenset()


def parse_jwks(text: str | bytes, *, allow_oct: bool = False) -> KeySet:
    """Parse a JWKS document; raises ValueError when it holds no usable public key."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError("Jwks is an invalid JSON") from exc
    if not isinstance(data, dict) or "keys" not in data:
        raise ValueError("Jwks does not have [keys] field")
    if not isinstance(data["keys"], list):
        raise ValueError("[keys] in Jwks is not an array")
    keys: list[Key] = []
    for item in data["keys"][:_MAX_KEYS]:
        if not isinstance(item, dict) or item.get("use", "sig") != "sig":
            continue
        algorithms = _algorithms(item, allow_oct)
        kid = item.get("kid")
        if not algorithms or (kid is not None and not isinstance(kid, str)):
            continue
        try:
            parsed = jwt.PyJWK(item, algorithm=sorted(algorithms)[0])
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue
        key = parsed.key
        if hasattr(key, "private_numbers") or hasattr(key, "private_bytes"):
            key = key.public_key()  # a JWK with private members: only its public half verifies
        if item["kty"] == "RSA" and getattr(key, "key_size", 0) < _MIN_RSA_BITS:
            continue
        keys.append(Key(kid, algorithms, key))
    if not keys:
        raise ValueError("Jwks doesn't have any valid public key")
    return KeySet(tuple(keys))


def _httpx_fetcher(verify: Any) -> Fetcher:
    return functools.partial(bounded_get, limit=MAX_JWKS_BYTES, verify=verify, accept="application/json")


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class JwksCache:
    """The key set of one issuer, from inline ``jwks`` or a ``jwksUri`` refreshed in the background.

    ``uri`` None with ``issuer`` set uses OIDC discovery (``<issuer>/.well-known/openid-configuration``).
    """

    def __init__(
        self,
        uri: str | None = None,
        *,
        issuer: str = "",
        inline: str | None = None,
        timeout: float = 5.0,
        refresh_interval: float = 300.0,
        cooldown: float = 30.0,
        stale_for: float = 86400.0,
        fetch: Fetcher | None = None,
        verify: Any = True,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self.uri = uri
        self.issuer = issuer
        self.timeout = timeout
        self.refresh_interval = refresh_interval
        self.cooldown = cooldown
        self.stale_for = stale_for
        self._fetch = fetch or _httpx_fetcher(verify)
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._closed = False
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._failures = 0
        self._in_flight = False
        self.generation = 0  # bumps after every finished fetch, good or bad
        self.fetches = 0
        self.last_error = ""
        self._thread: threading.Thread | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        if inline is not None:
            self._keys = parse_jwks(inline, allow_oct=True)
            self._fetched_at = float("inf")
            self.generation = 1
        elif background:
            self._start()
            after_fork_in_child(self._after_fork)

    def _start(self) -> None:
        name = f"pymesh-jwks {self.uri or self.issuer}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # The refresh thread did not come along: without it the keys would go stale in the child.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._waiters = []  # futures of the parent's event loops
        self._in_flight = False
        if not self._closed:
            self._start()

    # -- the request path: no I/O, short critical sections ----------------------------------------

    def keys(self) -> KeySet | None:
        """The usable key set, or None (never fetched, or stale past ``stale_for``): every token fails."""
        keys = self._keys
        if keys is None or self._clock() - self._fetched_at > self.stale_for:
            return None
        return keys

    @property
    def ready(self) -> bool:
        """True once a first fetch finished (with keys or without)."""
        return self.generation > 0

    def request_refresh(self) -> bool:
        """Ask for an early refresh (an unknown ``kid``); False when the cooldown forbids one."""
        if self._fetched_at == float("inf"):
            return False
        now = self._clock()
        with self._lock:
            if self._in_flight:
                return True
            if self._last_attempt is not None and now - self._last_attempt < self.cooldown:
                return False
            self._last_attempt = now
        self._wake.set()
        return True

    def wait(self, generation: int, timeout: float) -> bool:
        """Block until a fetch after ``generation`` has finished; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.generation <= generation and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0 or not self._changed.wait(left):
                    return self.generation > generation
        return True

    async def wait_async(self, generation: int) -> None:
        """:meth:`wait` for an event loop, bounded by the caller (``async with asyncio.timeout(t): ...``).

        The fetch itself runs on the cache's own thread, never on the loop.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self.generation > generation or self._closed:
                return
            self._waiters.append((loop, waiter))
        try:
            await waiter
        finally:
            with self._lock:
                if (loop, waiter) in self._waiters:
                    self._waiters.remove((loop, waiter))

    # -- the refresher -------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Fetch now on the calling thread (single-flight); True when a usable set was stored."""
        with self._lock:
            if self._in_flight:
                start = self.generation
                while self.generation == start and not self._closed:
                    self._changed.wait(self.timeout + 1.0)
                return self.last_error == ""
            self._in_flight = True
            if self._last_attempt is None:
                self._last_attempt = self._clock()
        keys: KeySet | None = None
        error = ""
        try:
            keys = parse_jwks(self._download())
        except Exception as exc:  # any failure keeps the last good set
            error = str(exc) or type(exc).__name__
        with self._changed:
            self._in_flight = False
            self.fetches += 1
            if keys is not None:
                self._keys = keys
                self._fetched_at = self._clock()
                self._failures = 0
                self.last_error = ""
            else:
                self._failures += 1
                self.last_error = error
            self.generation += 1
            self._changed.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_release, waiter)
        if error:
            logger.warning("JWKS fetch for %s failed: %s", self.uri or self.issuer, error)
        return keys is not None

    def _download(self) -> bytes:
        uri = self.uri
        if uri is None:
            discovery = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = json.loads(self._fetch(discovery, self.timeout))
            uri = document.get("jwks_uri") if isinstance(document, dict) else None
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise ValueError(f"{discovery} has no usable jwks_uri")
        return self._fetch(uri, self.timeout)

    def _next_delay(self) -> float:
        if self._failures:
            return float(min(60.0, 2.0 ** (self._failures - 1)))
        return self.refresh_interval

    def _run(self) -> None:
        while not self._closed:
            with self._lock:
                self._last_attempt = self._clock()
            self.refresh()
            self._wake.wait(self._next_delay())
            self._wake.clear()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        with self._changed:
            self._changed.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_release, waiter)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout + 1.0)


class JwksRegistry:
    """The JWKS caches of a mesh runtime, keyed by where the keys come from, kept across reloads."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._caches: dict[tuple[str, str, str], JwksCache] = {}
        self._lock = threading.Lock()

    def get(self, *, issuer: str, uri: str = "", inline: str = "", timeout: float = 5.0) -> JwksCache:
        key = ("inline", inline, "") if inline else ("uri", uri, issuer if not uri else "")
        with self._lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = JwksCache(uri or None, issuer=issuer, inline=inline or None, timeout=timeout,
                                  **self._options)
                self._caches[key] = cache
            return cache

    def retain(self, used: Iterable[JwksCache]) -> None:
        """Close caches a new snapshot no longer uses."""
        keep = {id(c) for c in used}
        with self._lock:
            for key, cache in list(self._caches.items()):
                if id(cache) not in keep:
                    cache.close()
                    del self._caches[key]

    def close(self) -> None:
        with self._lock:
            caches, self._caches = list(self._caches.values()), {}
        for cache in caches:
            cache.close()
