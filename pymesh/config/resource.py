"""The Kubernetes envelope every document shares, and the table entry for a kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pymesh.config.decode import Json, field
from pymesh.config.types import Labels

__all__ = ["KindSpec", "ObjectMeta", "Resource", "Source", "exported_to"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectMeta:
    """Kubernetes ``metadata``; what kubectl output carries is accepted, little is used."""

    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    labels: Labels = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    creation_timestamp: str | None = None
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    self_link: str = ""
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    owner_references: Json = None
    finalizers: tuple[str, ...] = ()
    managed_fields: Json = None


@dataclass(frozen=True, slots=True)
class Source:
    """Where a resource was read from."""

    file: str
    document: int
    line: int  # 1-based line of the document's first key

    def __str__(self) -> str:
        return f"{self.file}:{self.line} (document {self.document})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource(Generic[S]):
    """One loaded config object: the envelope and its typed ``spec``."""

    api_version: str
    kind: str
    metadata: ObjectMeta
    spec: S
    source: Source

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def age(self) -> tuple[str, str, str]:
        """Istio's precedence order: creation time, then name, then namespace (oldest first)."""
        return (self.metadata.creation_timestamp or "", self.metadata.name, self.metadata.namespace)

    @property
    def key(self) -> tuple[str, str, str]:
        """(kind, namespace, name): the identity ``kubectl apply`` replaces by."""
        return (self.kind, self.metadata.namespace, self.metadata.name)

    def __repr__(self) -> str:
        return f"<Resource {self.kind} {self.namespace}/{self.name} from {self.source}>"


def exported_to(export_to: tuple[str, ...], own: str, viewer: str) -> bool:
    """``exportTo`` as Istio reads it: empty or ``*`` all, ``.`` own namespace, ``~`` nobody."""
    if not export_to or "*" in export_to:
        return True
    if "~" in export_to:
        return False
    return viewer in export_to or ("." in export_to and viewer == own)


@dataclass(frozen=True, slots=True)
class KindSpec:
    """A kind pymesh reads: its API group, the versions accepted and its spec model."""

    group: str
    kind: str
    versions: tuple[str, ...]
    spec: type[Any]
    legacy: bool = False  # removed from current Istio; pymesh keeps reading it
    namespaced: bool = True
