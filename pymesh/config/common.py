"""Small messages several API groups share."""

from __future__ import annotations

from dataclasses import dataclass

from pymesh.config.decode import Checker, field
from pymesh.config.types import Labels

__all__ = ["PolicyTargetReference", "WorkloadSelector"]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSelector:
    """``selector: {matchLabels: {...}}`` of the security kinds and Sidecar."""

    match_labels: Labels = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyTargetReference:
    """``targetRef`` / ``targetRefs`` (Gateway API style) of the security kinds."""

    name: str
    kind: str
    group: str = ""
    namespace: str = ""

    def _check(self, v: Checker) -> None:
        if not self.name:
            v.error("targetRef name must not be empty", "name")
        if self.namespace and self.namespace != v.namespace:
            v.error("cross namespace referencing is not allowed", "namespace")
