"""Security policies indexed by the workloads they select.

Scope rules, shared by PeerAuthentication, RequestAuthentication and
AuthorizationPolicy: a policy in the root namespace without a selector applies to the
whole mesh; one in another namespace without a selector applies to that namespace; a
selector narrows it to the matching workloads of its own namespace, or, in the root
namespace, of every namespace (except PeerAuthentication, whose root-namespace
selector istiod ignores). ``targetRef(s)``
name Kubernetes objects pymesh cannot see: a ``Service`` target selects workloads whose
name or ``app`` label is the service's name (see docs, "Differences from Istio").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymesh.config.resource import Resource

__all__ = ["PolicyIndex", "WorkloadPolicies", "selects"]


def _refs(spec: Any) -> tuple[Any, ...]:
    refs = tuple(getattr(spec, "target_refs", ()) or ())
    one = getattr(spec, "target_ref", None)
    return (*refs, one) if one is not None else refs


def selects(res: Resource[Any], namespace: str, name: str, labels: Mapping[str, str], root: str) -> bool:
    """Does policy ``res`` apply to the workload (namespace, name, labels)?"""
    spec = res.spec
    selector = getattr(spec, "selector", None)
    match_labels = dict(selector.match_labels) if selector is not None else {}
    refs = _refs(spec)
    if res.namespace == root and not refs:
        if not match_labels:
            return True  # mesh-wide
        if res.kind == "PeerAuthentication":
            return False  # istiod ignores a root-namespace PeerAuthentication with a selector
        # A root-namespace selector matches workloads in every namespace (AuthorizationPolicy and
        # RequestAuthentication API docs; authorization.go / authentication.go lookups).
        return all(labels.get(k) == v for k, v in match_labels.items())
    if res.namespace != namespace:
        return False
    if refs:
        return any(r.kind == "Service" and r.name in (name, labels.get("app")) for r in refs)
    return all(labels.get(k) == v for k, v in match_labels.items())


@dataclass(frozen=True, slots=True)
class WorkloadPolicies:
    """What applies to one workload, most specific first where order matters."""

    peer_authentication: tuple[Resource[Any], ...]  # workload-level, namespace-level, mesh-level
    request_authentication: tuple[Resource[Any], ...]
    authorization: tuple[Resource[Any], ...]


def _specificity(res: Resource[Any], root: str) -> int:
    selector = getattr(res.spec, "selector", None)
    if (selector is not None and selector.match_labels) or _refs(res.spec):
        return 0
    return 2 if res.namespace == root else 1


class PolicyIndex:
    """All security policies of a snapshot; ``for_workload`` picks those that apply."""

    __slots__ = ("_authn", "_authz", "_peer", "root_namespace")

    def __init__(self, resources: Iterable[Resource[Any]], root_namespace: str) -> None:
        self.root_namespace = root_namespace
        peer: list[Resource[Any]] = []
        authn: list[Resource[Any]] = []
        authz: list[Resource[Any]] = []
        for res in resources:
            bucket = {"PeerAuthentication": peer, "RequestAuthentication": authn, "AuthorizationPolicy": authz}
            bucket[res.kind].append(res)
        key = lambda r: (r.metadata.creation_timestamp or "", r.name)  # noqa: E731
        self._peer = tuple(sorted(peer, key=key))
        self._authn = tuple(authn)
        self._authz = tuple(authz)

    def for_workload(self, namespace: str, name: str, labels: Mapping[str, str]) -> WorkloadPolicies:
        root = self.root_namespace

        def pick(items: tuple[Resource[Any], ...]) -> tuple[Resource[Any], ...]:
            return tuple(r for r in items if selects(r, namespace, name, labels, root))

        peer = sorted(pick(self._peer), key=lambda r: _specificity(r, root))
        return WorkloadPolicies(tuple(peer), pick(self._authn), pick(self._authz))

    @property
    def all(self) -> tuple[Resource[Any], ...]:
        return (*self._peer, *self._authn, *self._authz)
