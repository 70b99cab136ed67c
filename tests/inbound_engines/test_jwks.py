"""The JWKS cache: prefetch, stale-if-error with a bound, no fallback key, single flight, rate limit."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from pymesh.inbound.jwks import MAX_JWKS_BYTES, JwksCache, parse_jwks

from .helpers import SigningKey, jwks, jwks_server, shared_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Fetcher:
    """A scripted JWKS endpoint: each fetch pops the next answer (bytes, or an exception to raise)."""

    def __init__(self, *answers: bytes | Exception, delay: float = 0.0) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.delay = delay

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_never_fetched_means_no_keys_and_no_fallback() -> None:
    cache = JwksCache("https://idp/jwks", fetch=Fetcher(OSError("down")), background=False)
    assert cache.keys() is None
    assert not cache.refresh()
    assert cache.keys() is None
    assert cache.last_error == "down"
    assert cache.ready


def test_stale_keys_kept_for_a_bounded_time() -> None:
    clock = Clock()
    good = jwks(shared_key("rsa")).encode()
    fetch = Fetcher(good, OSError("down"), b"<html>", OSError("down"))
    cache = JwksCache("https://idp/jwks", fetch=fetch, clock=clock, stale_for=3600, background=False)
    assert cache.refresh()
    keys = cache.keys()
    assert keys is not None
    clock.now += 1800
    assert not cache.refresh()
    assert not cache.refresh()  # not a JWKS: a failure, the good set stays
    assert cache.keys() is keys
    clock.now += 1801
    assert cache.keys() is None  # past the stale window every token fails


def test_prefetch_on_construction() -> None:
    key = shared_key("rsa")
    with jwks_server(jwks(key)) as server:
        cache = JwksCache(server.url)
        try:
            assert cache.wait(0, 5.0)
            keys = cache.keys()
            assert keys is not None
            assert keys.has_kid(key.kid)
        finally:
            cache.close()


def test_single_flight() -> None:
    fetch = Fetcher(jwks(shared_key("rsa")).encode(), delay=0.2)
    cache = JwksCache("https://idp/jwks", fetch=fetch, background=False)
    threads = [threading.Thread(target=cache.refresh) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fetch.calls == 1
    assert cache.keys() is not None


def test_refresh_requests_are_rate_limited() -> None:
    clock = Clock()
    cache = JwksCache("https://idp/jwks", fetch=Fetcher(b"{}"), clock=clock, cooldown=30, background=False)
    assert cache.request_refresh()
    assert not cache.request_refresh()
    clock.now += 31
    assert cache.request_refresh()


def test_background_refresh_on_request() -> None:
    old, new = SigningKey.rsa("old"), SigningKey.rsa("new")
    with jwks_server(jwks(old)) as server:
        cache = JwksCache(server.url, cooldown=0.0)
        try:
            assert cache.wait(0, 5.0)
            server.body = jwks(old, new).encode()
            generation = cache.generation
            assert cache.request_refresh()
            assert cache.wait(generation, 5.0)
            keys = cache.keys()
            assert keys is not None
            assert keys.has_kid("new")
        finally:
            cache.close()


def test_wait_async() -> None:
    key = shared_key("ec")

    async def main() -> bool:
        with jwks_server(jwks(key)) as server:
            cache = JwksCache(server.url)
            try:
                async with asyncio.timeout(5):
                    await cache.wait_async(0)
                return cache.keys() is not None
            finally:
                cache.close()

    assert asyncio.run(main())


def test_oversized_and_failing_endpoints() -> None:
    with jwks_server() as server:
        server.body = b" " * (MAX_JWKS_BYTES + 10)
        cache = JwksCache(server.url, background=False)
        assert not cache.refresh()
        assert "more than" in cache.last_error
        server.status = 500
        server.body = jwks(shared_key("rsa")).encode()
        assert not cache.refresh()
        assert "500" in cache.last_error


def test_key_types_and_algorithms() -> None:
    rsa, ec = shared_key("rsa"), shared_key("ec")
    doc = {"keys": [
        rsa.jwk(),
        {**ec.jwk(), "alg": "ES256"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {**SigningKey.rsa("enc").jwk(), "use": "enc"},
        {**SigningKey.rsa("wrong-alg").jwk(), "alg": "HS256"},
        {"kty": "RSA", "kid": "broken", "n": "AQ", "e": ""},
    ]}
    keys = parse_jwks(json.dumps(doc))
    assert [k.kid for k in keys.keys] == [rsa.kid, ec.kid]
    assert keys.candidates(rsa.kid, "RS256")
    assert keys.candidates(rsa.kid, "PS256")
    assert not keys.candidates(rsa.kid, "HS256")
    assert not keys.candidates(ec.kid, "ES384")
    inline = parse_jwks(json.dumps(doc), allow_oct=True)
    assert inline.candidates("hmac", "HS256")
    assert not inline.candidates("hmac", "RS256")


@pytest.mark.parametrize("text", ["", "[]", '{"keys": {}}', '{"keys": []}', '{"nokeys": 1}', "[" * 5000])
def test_unusable_documents(text: str) -> None:
    with pytest.raises(ValueError, match=r"Jwks|keys"):
        parse_jwks(text)


def test_private_members_only_public_half_used(conformance: object) -> None:
    key = shared_key("rsa")
    import jwt as pyjwt

    private = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key.private))
    private["kid"] = "priv"
    keys = parse_jwks(json.dumps({"keys": [private]}))
    assert not hasattr(keys.keys[0].key, "private_numbers")


def test_weak_rsa_keys_are_skipped() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = SigningKey("weak", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ValueError, match="valid public key"):
        parse_jwks(jwks(weak))
