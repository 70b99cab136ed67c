"""The ASGI verdict memo (``Compiled.verdicts``) answers exactly as the full pipeline does, first
call and repeat alike; it is per snapshot, skips what it cannot key, and never replays a stale token."""

from __future__ import annotations

import time
from typing import Any

from pymesh import asgi
from pymesh.inbound.core import STEP_FACTORIES, Shared, Step, StepFactory, Verdict
from pymesh.inbound.jwks import parse_jwks
from pymesh.inbound.request import InboundRequest
from pymesh.snapshot.snapshot import Snapshot
from tests.inbound.helpers import asgi_call as call
from tests.inbound_engines.helpers import claims, jwks, shared_key

SELECT = "selector: {matchLabels: {app: web}}"
POLICIES = f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin, namespace: shop}}
spec:
  {SELECT}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/admin/*"]}}}}]
  - to: [{{operation: {{hosts: ["evil.example"]}}}}]
  - when: [{{key: "request.headers[x-role]", values: [intruder]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-some, namespace: shop}}
spec:
  {SELECT}
  action: ALLOW
  rules:
  - to: [{{operation: {{methods: [GET], paths: ["/ok", "/pub/*"]}}}}]
  - to: [{{operation: {{ports: ["9090"]}}}}]
  - from: [{{source: {{ipBlocks: [10.1.0.0/16]}}}}]
  - from: [{{source: {{principals: ["cluster.local/ns/shop/sa/friend"]}}}}]
"""
ISSUER = "https://idp.example"
KEY = shared_key("ec")
JWT = f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: shop}}
spec:
  {SELECT}
  jwtRules:
  - issuer: {ISSUER}
    jwks: '{jwks(KEY)}'
    outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: alice-only, namespace: shop}}
spec:
  {SELECT}
  action: ALLOW
  rules: [{{when: [{{key: "request.auth.claims[sub]", values: [alice]}}]}}]
"""


def _unmemoized(factory: StepFactory) -> StepFactory:
    """The same step, undeclared: the pipeline without a memo, to compare with."""
    def make(snapshot: Snapshot, shared: Shared) -> Step | None:
        step = factory(snapshot, shared)
        if step is None:
            return None
        inner = step
        return lambda request, ctx: inner(request, ctx)
    return make


def reference(mesh: Any) -> asgi.MeshMiddleware:
    mw = asgi.MeshMiddleware(None, mesh=mesh)  # type: ignore[arg-type]
    mw.inbound.factories = tuple((name, _unmemoized(f)) for name, f in STEP_FACTORIES)
    return mw


REQUESTS: list[dict[str, Any]] = [
    {}, {"raw_path": b"/pub/a"}, {"raw_path": b"/pub/../admin/x"}, {"raw_path": b"/admin/x"},
    {"raw_path": b"/ok", "method": "POST"}, {"raw_path": b"/other"}, {"raw_path": b"/other", "port": 9090},
    {"raw_path": b"/other", "client": "10.1.2.3"}, {"raw_path": b"/a%2Fb"}, {"raw_path": b"/ok", "query": b"a=1"},
    {"headers": [(b"host", b"evil.example")]}, {"headers": [(b"host", b"web"), (b"host", b"web")]},
    {"headers": [(b"host", b"web"), (b"X-Role", b"intruder")]}, {"headers": [(b"host", b"web"), (b"x-role", b"ok")]},
    {"headers": [(b"Host", b"web"), (b"x-forwarded-client-cert", b"URI=spiffe://cluster.local/ns/shop/sa/friend")]},
]


def _observed(status: int, seen: dict[str, Any]) -> tuple[Any, ...]:
    return (status, seen.get("pymesh"), seen.get("headers"), seen.get("raw_path"), seen.get("path"),
            seen.get("query_string"), seen.get("response_headers"))


def test_memoized_answers_are_the_full_pipelines(make_mesh: Any) -> None:
    mesh = make_mesh(POLICIES)
    mw, ref = asgi.MeshMiddleware(None, mesh=mesh), reference(mesh)  # type: ignore[arg-type]
    assert mw.inbound.compiled().verdicts is not None
    assert ref.inbound.compiled().verdicts is None
    for _ in range(2):  # computed, then replayed
        for req in REQUESTS:
            assert _observed(*call(mw, **req)) == _observed(*call(ref, **req)), req
    assert mw.inbound.compiled().verdicts  # something was remembered


def test_the_key_holds_what_policies_read(make_mesh: Any) -> None:
    mw = asgi.MeshMiddleware(None, mesh=make_mesh(POLICIES))  # type: ignore[arg-type]
    reads = mw.inbound.compiled().reads
    assert reads.addresses
    assert reads.headers == {"x-role"}
    assert call(mw, b"/other", client="10.1.2.3")[0] == 200
    assert call(mw, b"/other", client="10.2.2.3")[0] == 403  # another source address: another answer
    plain = [(b"host", b"web")]
    assert call(mw, headers=plain)[0] == 200
    assert call(mw, headers=[*plain, (b"x-role", b"intruder")])[0] == 403
    assert call(mw, headers=plain)[0] == 200


def test_a_reload_takes_effect_on_the_next_request(make_mesh: Any, tmp_path: Any) -> None:
    import pymesh

    config = tmp_path / "mesh.yaml"
    config.write_text(POLICIES)
    with pymesh.Mesh.from_path(config, workload=make_mesh().workload) as mesh:
        mw = asgi.MeshMiddleware(None, mesh=mesh)  # type: ignore[arg-type]
        assert [call(mw, b"/other")[0] for _ in range(2)] == [403, 403]
        config.write_text("")
        mesh.reload()
        assert call(mw, b"/other")[0] == 200


def test_audit_custom_and_mixer_configurations_are_not_memoized(make_mesh: Any) -> None:
    audit = f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: audit, namespace: shop}}
spec:
  {SELECT}
  action: AUDIT
  rules: [{{to: [{{operation: {{paths: ["/ok"]}}}}]}}]
"""
    mw = asgi.MeshMiddleware(None, mesh=make_mesh(audit))  # type: ignore[arg-type]
    assert mw.inbound.compiled().verdicts is None
    unknown = POLICIES.replace("request.headers[x-role]", "experimental.envoy.filters.a.b[c]")
    mw = asgi.MeshMiddleware(None, mesh=make_mesh(unknown))  # type: ignore[arg-type]
    assert mw.inbound.compiled().verdicts is None


def test_trusted_proxies_take_the_full_pipeline(make_mesh: Any) -> None:
    mesh = make_mesh(POLICIES)
    mw = asgi.MeshMiddleware(None, mesh=mesh, trusted_proxies=["10.0.0.9"])  # type: ignore[arg-type]
    xfcc = [(b"host", b"web"), (b"x-forwarded-client-cert", b"URI=spiffe://cluster.local/ns/shop/sa/friend")]
    for _ in range(2):
        status, seen = call(mw, b"/other", headers=xfcc)
        assert status == 200
        assert seen["pymesh"].peer_principal == "cluster.local/ns/shop/sa/friend"
    assert not mw.inbound.compiled().verdicts


def _bearer(token: str, *more: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"Host", b"web"), (b"Authorization", f"Bearer {token}".encode()), (b"x-jwt-payload", b"forged"), *more]


def test_a_cached_token_is_replayed_with_the_same_headers_and_caller(make_mesh: Any) -> None:
    mesh = make_mesh(JWT)
    mw, ref = asgi.MeshMiddleware(None, mesh=mesh), reference(mesh)  # type: ignore[arg-type]
    alice, bob = KEY.sign(claims(ISSUER, "alice")), KEY.sign(claims(ISSUER, "bob"))
    forged = alice[:-4] + "AAAA"
    cases = [_bearer(alice), _bearer(bob), _bearer(forged), [(b"host", b"web")],
             _bearer(alice, (b"X-\xc0", b"v")), [(b"host", b"web"), (b"authorization", b"Bearer " + alice.encode()),
                                                  (b"authorization", b"Bearer " + bob.encode())]]
    for _ in range(2):
        for headers in cases:
            assert _observed(*call(mw, headers=headers)) == _observed(*call(ref, headers=headers))
    status, seen = call(mw, headers=_bearer(alice))
    assert status == 200
    assert seen["pymesh"].request_principal == f"{ISSUER}/alice"
    names = [k for k, _ in seen["headers"]]
    assert b"authorization" not in names
    assert names.count(b"x-jwt-payload") == 1
    payload = dict(seen["headers"])[b"x-jwt-payload"]
    assert payload != b"forged"
    assert call(mw, headers=_bearer(bob))[0] == 403
    assert call(mw, headers=_bearer(forged))[0] == 401


def test_a_stale_verdict_is_recomputed(make_mesh: Any) -> None:
    mw = asgi.MeshMiddleware(None, mesh=make_mesh(JWT))  # type: ignore[arg-type]
    token = KEY.sign(claims(ISSUER, "alice"))
    assert [call(mw, headers=_bearer(token))[0] for _ in range(2)] == [200, 200]
    verdicts = mw.inbound.compiled().verdicts
    assert verdicts is not None
    (key,) = [k for k, v in verdicts.items() if v.recheck is not None]
    assert verdicts[key].recheck()  # type: ignore[misc]
    # As if the token had expired: the verdict says so, and the full pipeline answers instead.
    old = verdicts[key]
    verdicts[key] = Verdict(None, None, old.path, old.drop, old.add, recheck=lambda: False)
    status, seen = call(mw, headers=_bearer(token))
    assert status == 200
    assert seen["pymesh"].request_principal == f"{ISSUER}/alice"
    assert verdicts[key].caller is not None  # and its answer remembered again


def test_a_verdict_rechecks_its_tokens_key_set() -> None:
    from pymesh.inbound.authn import AuthnOutcome
    from tests.inbound_engines.helpers import authenticate, authenticator, request

    clock = [time.time()]
    auth = authenticator(f"""apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: foo}}
spec:
  jwtRules: [{{issuer: "{ISSUER}", jwks: '{jwks(KEY)}'}}]
""", clock=lambda: clock[0])
    token = KEY.sign({"iss": ISSUER, "sub": "alice", "exp": int(clock[0]) + 10})
    req: InboundRequest = request(headers=(("authorization", f"Bearer {token}"),))
    out = authenticate(auth, req)
    assert isinstance(out, AuthnOutcome)
    assert out.recheck is not None
    assert out.recheck()
    clock[0] += 71
    assert not out.recheck()  # expired: the full pipeline must answer (401)
    clock[0] -= 71
    assert out.recheck()
    auth.caches[0]._keys = parse_jwks(jwks(KEY))  # the same keys, fetched again: a new key set
    assert not out.recheck()


def test_long_targets_are_answered_but_not_remembered(make_mesh: Any) -> None:
    mw, ref = asgi.MeshMiddleware(None, mesh=make_mesh(POLICIES)), reference(make_mesh(POLICIES))  # type: ignore[arg-type]
    long_query = b"q=" + b"x" * 5000  # beyond the memo's key bound: the memo stays small
    for _ in range(2):
        assert _observed(*call(mw, query=long_query)) == _observed(*call(ref, query=long_query))
    assert not mw.inbound.compiled().verdicts
    call(mw, query=b"q=short")
    assert len(mw.inbound.compiled().verdicts or {}) == 1


def test_the_memo_rests_when_traffic_does_not_repeat() -> None:
    from pymesh.inbound.core import _REST, _VERDICTS_SIZE, VerdictMemo

    answer = Verdict(None, None)
    unique = VerdictMemo()
    for i in range(_VERDICTS_SIZE):  # a whole fill, and not one hit
        assert unique.active()
        assert unique.get(i) is None
        unique[i] = answer
    unique[_VERDICTS_SIZE] = answer  # full: it starts over, and rests
    assert len(unique) == 1
    assert [unique.active() for _ in range(_REST)] == [False] * _REST
    assert unique.active()  # then tries again

    repeating = VerdictMemo()
    for i in range(_VERDICTS_SIZE):
        repeating[i] = answer
        assert repeating.get(i) is answer  # every answer used again
    repeating[_VERDICTS_SIZE] = answer
    assert repeating.active()  # a memo that pays for itself keeps working


def test_unique_targets_put_the_memo_to_rest_and_answers_stay_right(make_mesh: Any) -> None:
    mw, ref = asgi.MeshMiddleware(None, mesh=make_mesh(POLICIES)), reference(make_mesh(POLICIES))  # type: ignore[arg-type]
    memo = mw.inbound.compiled().verdicts
    assert memo is not None
    for i in range(1100):
        query = b"i=%d" % i
        assert _observed(*call(mw, query=query)) == _observed(*call(ref, query=query))
    assert not memo.active()  # resting: no key is built for the next requests


def test_keys_that_would_hold_much_are_not_kept(make_mesh: Any) -> None:
    # The bound counts every part of the key a client controls: many small keyed headers and a long
    # Host would otherwise make each remembered 403 hold far more than the request line's size.
    mw, ref = asgi.MeshMiddleware(None, mesh=make_mesh(POLICIES)), reference(make_mesh(POLICIES))  # type: ignore[arg-type]
    many = [(b"host", b"web"), *[(b"x-role", b"ok")] * 200]
    long_host = [(b"host", b"w" * 5000)]
    for headers in (many, long_host):
        for _ in range(2):
            assert _observed(*call(mw, headers=headers)) == _observed(*call(ref, headers=headers))
    assert not mw.inbound.compiled().verdicts


def test_headers_given_as_a_one_shot_iterable_are_read_once_and_still_judged(make_mesh: Any) -> None:
    mw = asgi.MeshMiddleware(None, mesh=make_mesh(POLICIES))  # type: ignore[arg-type]
    status, seen = call(mw, headers=iter([(b"host", b"web"), (b"x-role", b"intruder")]))  # type: ignore[arg-type]
    assert status == 403  # the DENY on x-role still saw the header
    status, seen = call(mw, headers=iter([(b"host", b"web"), (b"x-role", b"ok")]))  # type: ignore[arg-type]
    assert status == 200
    assert (b"x-role", b"ok") in seen["headers"]  # and the app still gets them
