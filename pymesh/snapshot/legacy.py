"""Istio 1.0/1.1 security objects, translated once into the current model.

Filled in by the legacy translation work; until then nothing is translated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymesh.config.meshconfig import MeshConfig
from pymesh.config.resource import Resource

__all__ = ["LegacyPolicies", "translate"]


@dataclass(frozen=True, slots=True)
class LegacyPolicies:
    resources: tuple[Resource[Any], ...] = ()


def translate(resources: Iterable[Resource[Any]], mesh: MeshConfig) -> LegacyPolicies:
    return LegacyPolicies()
