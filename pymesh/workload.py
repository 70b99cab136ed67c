"""The workload a mesh runs as: who this process is to the rest of the mesh."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from types import MappingProxyType
from typing import Any

__all__ = ["Workload", "parse_labels"]


def parse_labels(text: str) -> dict[str, str]:
    """``"app=a,version=v1"`` -> ``{"app": "a", "version": "v1"}``."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"label {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """A workload's name, namespace, labels and service account.

    Labels decide which ``selector`` blocks apply to it and which ``sourceLabels``
    route matches hold; the namespace is where short host names resolve and the
    default namespace of documents that name none. ``trust_domain`` None means the
    mesh's (MeshConfig ``trustDomain``, default ``cluster.local``).
    """

    name: str = ""
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = "default"
    trust_domain: str | None = None
    cert_dir: str | None = None
    locality: str = ""  # "region/zone/subzone", for locality-aware load balancing
    address: str = ""  # this workload's IP, the "source IP" consistent hashing and policies see

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def __hash__(self) -> int:
        # The generated hash would fail on the mappingproxy; a frozen value should hash.
        return hash(tuple(
            frozenset(v.items()) if isinstance(v, Mapping) else v for v in (getattr(self, f.name) for f in fields(self))
        ))

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # A mappingproxy cannot be pickled or deep-copied; rebuild from plain values instead.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["labels"] = dict(self.labels)
        return (partial(Workload, **values), ())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Workload:
        """``PYMESH_WORKLOAD``, ``PYMESH_NAMESPACE``, ``PYMESH_LABELS``, ``PYMESH_SERVICE_ACCOUNT``,
        ``PYMESH_TRUST_DOMAIN``, ``PYMESH_CERT_DIR``, ``PYMESH_LOCALITY`` and ``PYMESH_ADDRESS`` (else ``POD_IP``)."""
        env = os.environ if environ is None else environ
        return cls(
            name=env.get("PYMESH_WORKLOAD", ""),
            namespace=env.get("PYMESH_NAMESPACE", "") or "default",
            labels=parse_labels(env.get("PYMESH_LABELS", "")),
            service_account=env.get("PYMESH_SERVICE_ACCOUNT", "") or "default",
            trust_domain=env.get("PYMESH_TRUST_DOMAIN") or None,
            cert_dir=env.get("PYMESH_CERT_DIR") or None,
            locality=env.get("PYMESH_LOCALITY", ""),
            address=env.get("PYMESH_ADDRESS", "") or env.get("POD_IP", ""),
        )

    def spiffe_id(self, trust_domain: str = "cluster.local") -> str:
        td = self.trust_domain or trust_domain
        return f"spiffe://{td}/ns/{self.namespace}/sa/{self.service_account}"

    def principal(self, trust_domain: str = "cluster.local") -> str:
        """Istio's principal string: the SPIFFE ID without its scheme."""
        return self.spiffe_id(trust_domain).removeprefix("spiffe://")

    def __repr__(self) -> str:
        labels = ",".join(f"{k}={v}" for k, v in self.labels.items())
        return f"pymesh.Workload({self.namespace}/{self.name or '-'} [{labels}] sa={self.service_account})"
