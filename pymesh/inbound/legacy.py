"""Enforcing what :mod:`pymesh.snapshot.legacy` translated from the Istio 1.0/1.1 objects.

RBAC needs nothing here: ``ServiceRole``/``ServiceRoleBinding`` became AuthorizationPolicies
that :class:`~pymesh.inbound.authz.Authorizer` evaluates with the rest. What the current API
cannot say is enforced by :class:`LegacyEnforcer`, one per (snapshot, workload):

- :meth:`LegacyEnforcer.origin` — the winning ``Policy``/``MeshPolicy`` origin requirement:
  a JWT is *required* on the paths its trigger rules select (401 ``Origin authentication
  failed.``), unless ``originIsOptional``; ``USE_ORIGIN`` without origins always fails; a
  token the translated RequestAuthentication refused gets the same 1.x answer. CORS
  preflights pass. The token checks themselves are :class:`~pymesh.inbound.authn.Authenticator`'s.
- :meth:`LegacyEnforcer.mixer` — Mixer ``rule`` checks with ``denier`` and ``listchecker``
  handlers, evaluated over Mixer's attribute vocabulary, denying with Mixer's status
  (``PERMISSION_DENIED:<handler>:<message>`` as 403, and so on).

``source.labels`` come only from the registry entry of the caller's *verified* principal
(a ServiceEntry/WorkloadEntry endpoint with that namespace and service account, preferring
the one at the caller's address); a plaintext caller has none. An instance value that cannot
be evaluated (a missing attribute without a ``|`` default) fails the check with
PERMISSION_DENIED: pymesh cannot tell whether the caller is listed, so it refuses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pymesh.config.legacy.expr import EvaluationError, evaluate, evaluate_match
from pymesh.inbound.authn import AuthnOutcome, Identity, KeysPending
from pymesh.inbound.lists import ListRegistry, ProviderList
from pymesh.inbound.request import Denial, InboundRequest
from pymesh.snapshot.legacy import (
    PERMISSION_DENIED,
    DenyAction,
    LegacyPolicies,
    ListAction,
    MixerCheck,
    OriginRequirement,
    denial,
)
from pymesh.snapshot.registry import Endpoint, Registry
from pymesh.workload import Workload

__all__ = ["ORIGIN_FAILED", "LegacyEnforcer"]

ORIGIN_FAILED = Denial(401, b"Origin authentication failed.", (("content-type", "text/plain"),))


class LegacyEnforcer:
    """The legacy origin requirement and Mixer checks that apply to one workload."""

    def __init__(self, legacy: LegacyPolicies, workload: Workload, registry: Registry, *,
                 trust_domain: str = "cluster.local", port_names: Mapping[int, str] | None = None,
                 lists: ListRegistry | None = None) -> None:
        self.workload = workload
        self.trust_domain = trust_domain
        # The registry's endpoints by (namespace, service account): the source labels of a verified
        # peer, looked up per request, so indexed once here rather than scanned each time.
        self._by_identity: dict[tuple[str, str], list[Endpoint]] = {}
        for svc in registry:
            for ep in svc.endpoints:
                if ep.service_account:
                    self._by_identity.setdefault((svc.namespace, ep.service_account), []).append(ep)
        self._legacy = legacy
        self._port_names = dict(port_names or {})
        self._requirements: dict[int, OriginRequirement | None] = {}
        self._any_origins = bool(legacy.origins)
        self._checks = legacy.mixer_checks_for(workload.namespace)
        # providerUrl lists, fetched in the background (without a registry: never fetched, fail closed)
        self.lists: dict[str, ProviderList] = {}
        for check in self._checks:
            action = check.action
            if isinstance(action, ListAction) and action.provider_url and lists is not None:
                self.lists[check.instance + check.rule] = lists.get(
                    action.provider_url, refresh_interval=action.refresh_interval, ttl=action.ttl)
        self.warnings: tuple[str, ...] = legacy.warnings
        service = workload.labels.get("app") or workload.name
        self._destination: dict[str, object] = {
            "destination.labels": MappingProxyType(dict(workload.labels)),
            "destination.namespace": workload.namespace,
            "destination.name": workload.name,
            "destination.service.name": service,
            "destination.service.namespace": workload.namespace,
            "destination.service.host": f"{service}.{workload.namespace}.svc.cluster.local",
            "destination.service": f"{service}.{workload.namespace}.svc.cluster.local",
            "destination.principal": f"{trust_domain}/ns/{workload.namespace}/sa/{workload.service_account}",
            "destination.serviceAccount": workload.service_account,
        }

    @property
    def enabled(self) -> bool:
        return self._any_origins or bool(self._checks)

    def requirement(self, port: int) -> OriginRequirement | None:
        """The legacy authentication policy that wins for this workload on ``port`` (cached)."""
        if port not in self._requirements:
            w = self.workload
            self._requirements[port] = self._legacy.origin_requirement(
                w.namespace, w.name, w.labels, port, self._port_names.get(port))
        return self._requirements[port]

    # -- origins (authentication.istio.io/v1alpha1) -------------------------------------------------

    def origin(self, request: InboundRequest, path: str,
               outcome: AuthnOutcome | Denial | KeysPending) -> Denial | None:
        """None when the request may go on; the 1.x 401 otherwise. ``outcome``: the Authenticator's answer."""
        req = self.requirement(request.destination_port) if self._any_origins else None
        if req is None or isinstance(outcome, KeysPending):
            return None
        if request.method == "OPTIONS" and request.header_values("origin") and request.header_values(
                "access-control-request-method"):
            return None
        if req.always_fails:
            return ORIGIN_FAILED
        triggered = req.triggered(path)
        if not triggered:
            return None
        if isinstance(outcome, Denial):
            return ORIGIN_FAILED  # a present but invalid token
        ident = outcome.identity
        if ident is not None and ident.issuer in {o.issuer for o in triggered}:
            return None
        return None if req.optional else ORIGIN_FAILED

    def use_origin(self, port: int) -> bool:
        """``principalBinding: USE_ORIGIN`` on ``port``: the token's principal is the request principal (1.x)."""
        req = self.requirement(port) if self._any_origins else None
        return req is not None and req.principal_binding == "USE_ORIGIN"

    def binds_peer(self, port: int) -> bool:
        """``principalBinding: USE_PEER`` (1.x's default) on ``port``: the peer is the request principal."""
        req = self.requirement(port) if self._any_origins else None
        return req is not None and req.principal_binding == "USE_PEER"

    # -- Mixer checks ------------------------------------------------------------------------------

    def mixer(self, request: InboundRequest, path: str, identity: Identity | None = None) -> Denial | None:
        """Run the Mixer checks in scope; None when all pass, Mixer's denial otherwise."""
        if not self._checks:
            return None
        attrs = self.attributes(request, path, identity)
        failures: list[tuple[str, int, str]] = []
        for check in self._checks:
            if not evaluate_match(check.match, attrs):
                continue
            code, message = self._run(check, attrs, self.lists.get(check.instance + check.rule))
            if code != 0:
                failures.append((check.handler, code, message))
        if not failures:
            return None
        status, body = denial(failures)
        return Denial(status, body.encode(), (("content-type", "text/plain"),))

    def unready(self) -> list[ProviderList]:
        """Provider lists whose first fetch has not finished: a request should wait for them."""
        return [item for item in self.lists.values() if not item.ready]

    @staticmethod
    def _run(check: MixerCheck, attrs: Mapping[str, object], fetched: ProviderList | None) -> tuple[int, str]:
        action = check.action
        if isinstance(action, DenyAction):
            return action.code, action.message
        try:
            value = evaluate(action.value, attrs)
        except EvaluationError:
            return PERMISSION_DENIED, f"{action.value} is not available"
        return action.verdict(value, fetched.matcher(action.entry_type) if fetched is not None else None)

    def source_labels(self, request: InboundRequest) -> Mapping[str, str] | None:
        """The caller's workload labels from the registry, found by its verified identity (None: unknown)."""
        peer = request.peer
        if peer is None:
            return None
        sid = peer.spiffe_id
        found = self._by_identity.get((sid.namespace, sid.service_account), [])
        if not found:
            return None
        exact = [ep for ep in found if ep.address == request.source_ip]
        if exact:
            return exact[0].labels
        common = dict(found[0].labels)
        for ep in found[1:]:
            common = {k: v for k, v in common.items() if ep.labels.get(k) == v}
        return MappingProxyType(common)

    def attributes(self, request: InboundRequest, path: str, identity: Identity | None) -> dict[str, object]:
        """Mixer's attribute bag for ``request`` (absent attributes are left out)."""
        headers: dict[str, str] = {}
        for name, value in request.headers:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        attrs: dict[str, object] = dict(self._destination)
        target = request.raw_path.split("#", 1)[0]
        query = target.partition("?")[2]
        attrs.update({
            "source.ip": request.source_ip,
            "destination.ip": request.destination_ip,
            "destination.port": request.destination_port,
            "request.method": request.method,
            "request.path": f"{path}?{query}" if query else path,
            "request.url_path": path,
            "request.host": request.host,
            "request.scheme": request.scheme,
            "request.headers": MappingProxyType(headers),
            "request.time": dt.datetime.now(dt.UTC),
            "context.protocol": "http",
            "connection.mtls": request.peer is not None,
        })
        for name, header in (("request.useragent", "user-agent"), ("request.referer", "referer")):
            if header in headers:
                attrs[name] = headers[header]
        if request.sni:
            attrs["connection.requested_server_name"] = request.sni
        if request.peer is not None:
            sid = request.peer.spiffe_id
            attrs["source.principal"] = attrs["source.user"] = sid.principal
            attrs["source.namespace"] = sid.namespace
            attrs["source.serviceAccount"] = sid.service_account
        labels = self.source_labels(request)
        if labels is not None:
            attrs["source.labels"] = labels
        if identity is not None:
            attrs["request.auth.principal"] = identity.principal
            if identity.audiences:
                attrs["request.auth.audiences"] = ",".join(identity.audiences)
            if identity.presenter:
                attrs["request.auth.presenter"] = identity.presenter
            attrs["request.auth.claims"] = MappingProxyType(_string_claims(identity.claims))
        return attrs


def _string_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in claims.items():
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            out[key] = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = ",".join(value)
    return out
