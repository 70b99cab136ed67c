"""RequestAuthentication: JWT verification with Envoy ``jwt_authn``'s semantics, as Istio configures it.

One :class:`Authenticator` per (snapshot, workload), built from every RequestAuthentication
that selects the workload. Per request, :meth:`Authenticator.authenticate` answers:

- :class:`AuthnOutcome` with ``identity`` None: no token anywhere (authorization decides;
  a rule with ``presence: REQUIRED`` makes that a 401 ``Jwt is missing``), or a CORS
  preflight (which Istio lets through);
- :class:`AuthnOutcome` with an :class:`Identity`: exactly one token, valid for one rule;
- a :class:`~pymesh.inbound.request.Denial` 401 (body: Envoy's status text, e.g.
  ``Jwt is expired``; ``www-authenticate: Bearer realm=..., error="invalid_token"``) for any
  token present but not valid, including a token from an issuer no rule names, two
  different tokens in one request, a token over :data:`MAX_TOKEN_BYTES`; 403
  ``Audiences in Jwt are not allowed`` for an audience mismatch;
- :class:`KeysPending` when the token's keys are being fetched (first start, or an unknown
  ``kid`` that triggered a refresh): the driver waits (``pending.wait(t)`` or
  ``await pending.wait_async()`` under ``asyncio.timeout``) and calls again with ``retry=False``.

A token that verified is remembered (up to 100, as Envoy's ``jwt_cache_size``) with the key
set that verified it, so repeat requests skip the signature but not the time checks; a key
rotation forgets it.

Verification: pyjwt checks the signature with a key from the rule's JWKS, the algorithm
taken from the key's type (never ``none``, never HMAC with a public key); pymesh checks
``exp``/``nbf``/``iat`` with Envoy's 60 s leeway against an injected clock, ``iss``
exactly, ``aud`` only when the rule lists audiences.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from types import MappingProxyType
from typing import Any

import jwt

from pymesh.config.security import JWTRule, RequestAuthentication
from pymesh.inbound.jwks import JwksCache, JwksRegistry, KeySet
from pymesh.inbound.request import ANONYMOUS, Caller, Denial, InboundRequest

__all__ = [
    "LEEWAY_SECONDS",
    "MAX_TOKEN_BYTES",
    "NO_TOKEN",
    "Authenticator",
    "AuthnOutcome",
    "Identity",
    "KeysPending",
]

LEEWAY_SECONDS = 60  # Envoy's default clock_skew_seconds
MAX_TOKEN_BYTES = 16 * 1024
_VERIFIED_CACHE_SIZE = 100  # as Envoy's jwt_cache_size: only valid tokens, re-checked for time on every use
_OUTCOMES_PER_TOKEN = 8  # answers remembered per cached token (one per set of headers that carried it)
_SPACE_DELIMITED = frozenset({"scope", "permission"})
_DEFAULT_HEADER = ("authorization", "Bearer ")
_DEFAULT_PARAM = "access_token"


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified token: what authorization's ``request.auth.*`` and the app's Caller read."""

    issuer: str
    subject: str
    claims: Mapping[str, Any]
    audiences: tuple[str, ...] = ()
    presenter: str = ""  # azp
    space_delimited: frozenset[str] = _SPACE_DELIMITED

    @property
    def principal(self) -> str:
        return f"{self.issuer}/{self.subject}"


@dataclass(frozen=True, slots=True)
class AuthnOutcome:
    """Authentication passed: the identity (or None) and what to change before the app sees the request."""

    identity: Identity | None
    remove_headers: tuple[str, ...] = ()  # lower-case names: spoofable output headers, a consumed token
    set_headers: tuple[tuple[str, str], ...] = ()
    # With an identity: True while the token is in date and its key set unchanged, so this answer
    # may be given again without verifying (the inbound verdict memo); None: it may not.
    recheck: Callable[[], bool] | None = field(default=None, repr=False, compare=False)
    drop: frozenset[str] = field(init=False, repr=False, compare=False)  # every name the request loses
    caller: Caller = field(init=False, repr=False, compare=False)  # the app's Caller when there is no peer

    def __post_init__(self) -> None:
        # Outcomes are reused across requests (see _Verified), so these are built once, not per request.
        object.__setattr__(self, "drop", frozenset(self.remove_headers).union(n for n, _ in self.set_headers))
        ident = self.identity
        object.__setattr__(self, "caller", ANONYMOUS if ident is None else Caller(None, None, None, ident.principal,
                                                                                  ident.claims))


NO_TOKEN = AuthnOutcome(None)  # no RequestAuthentication applies: no identity, nothing to strip


@dataclass(frozen=True, slots=True)
class KeysPending:
    """The token's keys are on their way; wait, then authenticate again with ``retry=False``."""

    cache: JwksCache
    generation: int

    def wait(self, timeout: float) -> bool:
        return self.cache.wait(self.generation, timeout)

    async def wait_async(self) -> None:
        """Bounded by the caller: ``async with asyncio.timeout(t): await pending.wait_async()``."""
        await self.cache.wait_async(self.generation)


@dataclass(frozen=True, slots=True)
class _Location:
    kind: str  # "header", "param", "cookie"
    name: str
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class _Rule:
    issuer: str
    audiences: frozenset[str]
    cache: JwksCache
    locations: tuple[_Location, ...]
    forward: bool
    payload_header: str
    claim_headers: tuple[tuple[str, str], ...]
    space_delimited: frozenset[str]
    required: bool = False  # presence: REQUIRED


class _Found:
    """One token in the request, the rules whose locations it was found in, and its header names."""

    __slots__ = ("headers", "rules", "token")

    def __init__(self, token: str) -> None:
        self.token = token
        self.rules: list[_Rule] = []
        self.headers: set[str] = set()


@dataclass(frozen=True, slots=True)
class _Verified:
    """A token whose signature checked out, against this exact key set (None: not cacheable).

    ``expires``/``not_before`` are its time claims, type-checked at verification, so a repeat use
    only compares them with the clock; ``outcomes`` remembers the answer per set of headers that
    carried the token, so a repeat use builds nothing."""

    rule: _Rule
    identity: Identity
    payload: str
    keys: KeySet | None
    expires: float | None  # exp + leeway
    not_before: float | None  # the later of nbf and iat
    outcomes: dict[tuple[str, ...], AuthnOutcome] = field(default_factory=dict, compare=False)

    def current(self, clock: Callable[[], float]) -> bool:
        """True when :meth:`Authenticator.authenticate` would still accept this token as cached."""
        if self.keys is None or self.rule.cache.keys() is not self.keys:
            return False
        return self._time_problem(clock()) is None

    def check_times(self, now: float) -> None:
        """The same verdicts as ``Authenticator._check_times`` on this token's (already valid) claims."""
        problem = self._time_problem(now)
        if problem is not None:
            raise _Invalid(problem)

    def _time_problem(self, now: float) -> str | None:
        if self.expires is not None and now > self.expires:
            return "Jwt is expired"
        if self.not_before is not None and now + LEEWAY_SECONDS < self.not_before:
            return "Jwt not yet valid"
        return None


class _Invalid(Exception):
    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


def _b64(segment: str) -> bytes:
    if not segment or any(c in segment for c in "=+/ "):
        raise binascii.Error("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _locations(rule: JWTRule) -> tuple[_Location, ...]:
    found = [_Location("header", h.name.lower(), h.prefix) for h in rule.from_headers]
    found += [_Location("param", p) for p in rule.from_params]
    found += [_Location("cookie", c) for c in rule.from_cookies]
    if not found:
        found = [_Location("header", *_DEFAULT_HEADER), _Location("param", _DEFAULT_PARAM)]
    return tuple(found)


def _claim(claims: Mapping[str, Any], path: str) -> str | None:
    """A claim for ``outputClaimToHeaders`` (nested with ``.``): strings, integers and booleans only."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    return None


class Authenticator:
    """The JWT rules of one workload, compiled; :meth:`authenticate` is sans-I/O."""

    def __init__(
        self,
        policies: Iterable[RequestAuthentication],
        registry: JwksRegistry,
        *,
        clock: Callable[[], float] = time.time,
        max_token_bytes: int = MAX_TOKEN_BYTES,
    ) -> None:
        rules: list[_Rule] = []
        for policy in policies:
            for r in policy.jwt_rules:
                cache = registry.get(issuer=r.issuer, uri=r.jwks_uri, inline=r.jwks, timeout=r.timeout_seconds)
                rules.append(_Rule(
                    issuer=r.issuer, audiences=frozenset(r.audiences), cache=cache, locations=_locations(r),
                    forward=r.forward_original_token, payload_header=r.output_payload_to_header.lower(),
                    claim_headers=tuple((c.header.lower(), c.claim) for c in r.output_claim_to_headers),
                    space_delimited=_SPACE_DELIMITED | frozenset(r.space_delimited_claims),
                    required=r.presence == "REQUIRED",
                ))
        rules.sort(key=lambda r: r.issuer)  # as Istio orders them
        self._rules = tuple(rules)
        self._clock = clock
        self._max = max_token_bytes
        spoofable = {r.payload_header for r in rules if r.payload_header}
        spoofable |= {h for r in rules for h, _ in r.claim_headers}
        self._spoofable = tuple(sorted(spoofable))
        self._anonymous = AuthnOutcome(None, self._spoofable)  # no token: the same answer every time
        where = [loc for r in rules for loc in r.locations]
        self._header_names = frozenset(loc.name for loc in where if loc.kind == "header")
        self._params = any(loc.kind == "param" for loc in where)
        self._cookies_used = any(loc.kind == "cookie" for loc in where)
        self._required = any(r.required for r in rules)
        self._verified: dict[str, _Verified] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._rules)

    @property
    def memo_headers(self) -> frozenset[str]:
        """Every header :meth:`authenticate` reads: the token's, cookies, and a CORS preflight's."""
        cookies = {"cookie"} if self._cookies_used else set()
        return self._header_names | cookies | {"origin", "access-control-request-method"}

    @property
    def caches(self) -> tuple[JwksCache, ...]:
        return tuple(dict.fromkeys(r.cache for r in self._rules))

    def authenticate(
        self, request: InboundRequest, path: str, query: str, *, retry: bool = True,
    ) -> AuthnOutcome | Denial | KeysPending:
        """Verify the request's token, if any. ``path``/``query``: the normalized target (for the realm)."""
        if not self._rules:
            return NO_TOKEN
        if request.method == "OPTIONS" and request.header_values("origin") and request.header_values(
                "access-control-request-method"):
            return self._anonymous  # CORS preflight: Istio skips JWT checks
        try:
            found = self._extract(request, query)
        except _Invalid as exc:
            return self._deny(request, path, exc)
        if not found:
            if self._required:
                return self._deny(request, path, _Invalid("Jwt is missing"))
            return self._anonymous
        tokens = list(found.values())
        if len(tokens) > 1:
            return self._deny(request, path, _Invalid("Found multiple Jwt tokens"))
        one = tokens[0]
        try:
            verified = self._verify(one, retry)
        except _Invalid as exc:
            return self._deny(request, path, exc)
        if isinstance(verified, KeysPending):
            return verified
        key = () if verified.rule.forward else tuple(sorted(one.headers))
        outcome = verified.outcomes.get(key)
        if outcome is None:
            outcome = self._outcome(verified, key)
            if len(verified.outcomes) < _OUTCOMES_PER_TOKEN:
                verified.outcomes[key] = outcome
        return outcome

    def _outcome(self, verified: _Verified, carriers: tuple[str, ...]) -> AuthnOutcome:
        """Authentication passed with ``verified``, found in headers ``carriers`` (sorted; () when forwarded)."""
        rule, identity = verified.rule, verified.identity
        sets: list[tuple[str, str]] = []
        if rule.payload_header:
            sets.append((rule.payload_header, verified.payload))
        for header, claim in rule.claim_headers:
            value = _claim(identity.claims, claim)
            if value is not None:
                sets.append((header, value))
        clock = self._clock
        recheck = (lambda: verified.current(clock)) if verified.keys is not None else None
        return AuthnOutcome(identity, tuple(dict.fromkeys((*self._spoofable, *carriers))), tuple(sets), recheck)

    # -- extraction --------------------------------------------------------------------------------

    def _extract(self, request: InboundRequest, query: str) -> dict[str, _Found]:
        found: dict[str, _Found] = {}
        # One pass over the headers for every header location, rather than one per location.
        headers: dict[str, list[str]] = {}
        wanted = self._header_names
        for name, value in request.headers:
            if name in wanted:
                headers.setdefault(name, []).append(value)
        if not headers and not (query and self._params) and not self._cookies_used:
            return found  # most requests without a token: nothing else could carry one
        params: dict[str, str] | None = None
        cookies: dict[str, str] | None = None
        for rule in self._rules:
            for loc in rule.locations:
                tokens: list[str] = []
                if loc.kind == "header":
                    for value in headers.get(loc.name, ()):
                        if value.startswith(loc.prefix):
                            token = value[len(loc.prefix):].strip()
                            if token:
                                tokens.append(token)
                elif loc.kind == "param":
                    if not query:
                        continue  # most requests: no query string, nothing to parse
                    if params is None:
                        params = {}
                        for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
                            params.setdefault(k, v)  # Envoy reads a parameter's first value
                    if params.get(loc.name):
                        tokens.append(params[loc.name])
                else:
                    if cookies is None:
                        cookies = self._cookies(request)
                    if cookies.get(loc.name):
                        tokens.append(cookies[loc.name])
                for token in tokens:
                    if len(token) > self._max:
                        raise _Invalid("Jwt verification fails")
                    entry = found.setdefault(token, _Found(token))
                    if rule not in entry.rules:
                        entry.rules.append(rule)
                    if loc.kind == "header":
                        entry.headers.add(loc.name)
        return found

    @staticmethod
    def _cookies(request: InboundRequest) -> dict[str, str]:
        jar: dict[str, str] = {}
        for header in request.header_values("cookie"):
            parsed: SimpleCookie = SimpleCookie()
            try:
                parsed.load(header)
            except CookieError:
                continue
            for name, morsel in parsed.items():
                jar.setdefault(name, morsel.value)
        return jar

    # -- verification ------------------------------------------------------------------------------

    def _verify(self, found: _Found, retry: bool) -> _Verified | KeysPending:
        hit = self._verified.get(found.token)
        if hit is not None and hit.rule in found.rules and hit.rule.cache.keys() is hit.keys:
            hit.check_times(self._clock())  # a cached signature, but the clock moves on
            return hit
        verified = self._verify_fully(found, retry)
        if isinstance(verified, KeysPending):
            return verified
        rule, identity, payload = verified
        claims = identity.claims
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        starts = [t for t in (nbf, iat) if t is not None]
        entry = _Verified(rule, identity, payload, rule.cache.keys(), None if exp is None else exp + LEEWAY_SECONDS,
                          max(starts) if starts else None)
        if entry.keys is not None:
            with self._lock:
                if len(self._verified) >= _VERIFIED_CACHE_SIZE:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[found.token] = entry
        return entry

    def _verify_fully(self, found: _Found, retry: bool) -> tuple[_Rule, Identity, str] | KeysPending:
        parts = found.token.split(".")
        if len(parts) != 3:
            raise _Invalid("Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections")
        try:
            header = json.loads(_b64(parts[0]))
        except (binascii.Error, ValueError):
            raise _Invalid("Jwt header is an invalid Base64url encoded") from None
        except RecursionError:
            raise _Invalid("Jwt header is an invalid JSON") from None
        if not isinstance(header, dict):
            raise _Invalid("Jwt header is an invalid JSON")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str):
            raise _Invalid("Jwt header [alg] field is required and must be a string")
        if alg == "none" or alg not in jwt.algorithms.get_default_algorithms():
            raise _Invalid("Jwt header [alg] is not supported")
        if kid is not None and not isinstance(kid, str):
            raise _Invalid("Jwt header [kid] field is not a string")
        try:
            payload = json.loads(_b64(parts[1]))
        except (binascii.Error, ValueError, RecursionError):
            raise _Invalid("Jwt payload is an invalid Base64url encoded") from None
        if not isinstance(payload, dict):
            raise _Invalid("Jwt payload is an invalid JSON")
        iss, sub = payload.get("iss", ""), payload.get("sub", "")
        if not isinstance(iss, str):
            raise _Invalid("Jwt payload [iss] field is not a string")
        if not isinstance(sub, str):
            raise _Invalid("Jwt payload [sub] field is not a string")
        rules = [r for r in found.rules if not r.issuer or r.issuer == iss]
        if not rules:
            raise _Invalid("Jwt issuer is not configured")
        self._check_times(payload)
        audiences = self._audiences(payload)
        failure = _Invalid("Jwks doesn't have key to match kid or alg from Jwt")
        for rule in rules:
            if rule.audiences and not rule.audiences.intersection(audiences):
                failure = _Invalid("Audiences in Jwt are not allowed", 403)
                continue
            keys = rule.cache.keys()
            if keys is None:
                if retry and not rule.cache.ready:
                    return KeysPending(rule.cache, rule.cache.generation)
                failure = _Invalid("Jwks remote fetch is failed")
                continue
            candidates = keys.candidates(kid, alg)
            if not candidates:
                if retry and kid is not None and not keys.has_kid(kid) and rule.cache.request_refresh():
                    return KeysPending(rule.cache, rule.cache.generation)
                continue
            for key in candidates:
                try:
                    jwt.decode(found.token, key.key, algorithms=[alg], options=_SIGNATURE_ONLY)
                except Exception:  # any pyjwt or key error is a failed verification, never a 500
                    failure = _Invalid("Jwt verification fails")
                    continue
                azp = payload.get("azp", "")
                identity = Identity(
                    issuer=iss, subject=sub, claims=MappingProxyType(payload), audiences=audiences,
                    presenter=azp if isinstance(azp, str) else "", space_delimited=rule.space_delimited,
                )
                return rule, identity, parts[1]
        raise failure

    def _check_times(self, payload: Mapping[str, Any]) -> None:
        now = self._clock()
        for name in ("exp", "nbf", "iat"):
            value = payload.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _Invalid(f"Jwt payload [{name}] field is not an integer")
            if value < 0:
                raise _Invalid(f"Jwt payload [{name}] field is not a positive 64 bit integer")
        exp, nbf, iat = payload.get("exp"), payload.get("nbf"), payload.get("iat")
        if exp is not None and now > exp + LEEWAY_SECONDS:
            raise _Invalid("Jwt is expired")
        if (nbf is not None and now + LEEWAY_SECONDS < nbf) or (iat is not None and now + LEEWAY_SECONDS < iat):
            raise _Invalid("Jwt not yet valid")

    @staticmethod
    def _audiences(payload: Mapping[str, Any]) -> tuple[str, ...]:
        aud = payload.get("aud")
        if aud is None:
            return ()
        if isinstance(aud, str):
            return (aud,)
        if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
            return tuple(aud)
        raise _Invalid("Jwt payload [aud] field is not a string or string list")

    def _deny(self, request: InboundRequest, path: str, exc: _Invalid) -> Denial:
        realm = f"{request.scheme}://{request.host}{path}"[:256].replace('"', "%22")
        headers: Sequence[tuple[str, str]] = (
            ("content-type", "text/plain"),
            ("www-authenticate", f'Bearer realm="{realm}", error="invalid_token"'),
        )
        return Denial(exc.status, str(exc).encode(), tuple(headers))


# Signature (and crit header) only: pymesh checks time, issuer and audience itself.
_SIGNATURE_ONLY: jwt.types.Options = {
    "verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
    "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False,
}
