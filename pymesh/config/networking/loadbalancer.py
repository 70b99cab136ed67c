"""DestinationRule ``loadBalancer``: the algorithm, consistent hashing, locality weighting, slow start.

Fields follow istio/api ``networking/v1alpha3/destination_rule.proto`` (LoadBalancerSettings and
the messages under it); rules follow Istio's ``validateLoadBalancer`` and
``agent.ValidateLocalityLbSetting`` / ``ValidateZoneAwareLbSetting``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pymesh.config.decode import Checker, field
from pymesh.config.types import Duration, DurationOrZero, NonNegInt, ranged

__all__ = [
    "ConsistentHashLB",
    "HTTPCookie",
    "HTTPCookieAttribute",
    "LoadBalancerSettings",
    "LocalityDistribute",
    "LocalityFailover",
    "LocalityLoadBalancerSetting",
    "MagLev",
    "RingHash",
    "SimpleLB",
    "WarmupConfiguration",
    "ZoneAwareLoadBalancerSetting",
]

SimpleLB = Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"]

_MAGLEV_LIMIT = 5000011
_TOPOLOGY_LABELS = frozenset({
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone",
})


def _is_prime(n: int) -> bool:
    # Envoy's test (source/common/common/utility.cc), which Istio copies: 1 counts as prime.
    if 0 < n < 4:
        return True
    if n % 2 == 0:
        return False
    return all(n % f for f in range(3, math.isqrt(n) + 1, 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPCookieAttribute:
    name: str
    value: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class HTTPCookie:
    """Hash on a cookie; with ``ttl`` Envoy sets the cookie when the request lacks it (0s: session cookie)."""

    name: str
    path: str = ""
    ttl: DurationOrZero | None = None
    attributes: tuple[HTTPCookieAttribute, ...] = ()

    def _check(self, v: Checker) -> None:
        if not self.name:
            v.error("name required for HttpCookie", "name")
        seen: set[str] = set()
        for i, attr in enumerate(self.attributes):
            if not attr.name:
                v.error("cookie attribute name cannot be empty", "attributes", i, "name")
            elif attr.name in seen:
                v.error(f"duplicate cookie attribute name: {attr.name}", "attributes", i, "name")
            seen.add(attr.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class RingHash:
    minimum_ring_size: NonNegInt = 0  # 0: Envoy's default, 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class MagLev:
    table_size: NonNegInt = 0

    def _check(self, v: Checker) -> None:
        if self.table_size == 0:
            v.error("tableSize must be set for maglev", "tableSize")
        elif self.table_size >= _MAGLEV_LIMIT:
            v.error(f"tableSize must be less than {_MAGLEV_LIMIT} for maglev", "tableSize")
        elif not _is_prime(self.table_size):
            v.error(f"tableSize must be a prime number for maglev, not {self.table_size}", "tableSize")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsistentHashLB:
    """Ring-hash (default) or Maglev balancing on one request property."""

    # oneof hash_key
    http_header_name: str = ""
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool = False
    http_query_parameter_name: str = ""
    # oneof hash_algorithm
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: NonNegInt = field(
        default=0, deprecated="consistentHash.minimumRingSize is deprecated; use ringHash.minimumRingSize"
    )

    def _check(self, v: Checker) -> None:
        keys = [
            name for name, given in (
                ("httpHeaderName", bool(self.http_header_name)),
                ("httpCookie", self.http_cookie is not None),
                ("useSourceIp", self.use_source_ip),
                ("httpQueryParameterName", bool(self.http_query_parameter_name)),
            ) if given
        ]
        if len(keys) > 1:
            v.error(f"only one hash key may be set, got {' and '.join(keys)}", keys[1])
        if self.ring_hash is not None and self.maglev is not None:
            v.error("only one of ringHash or maglev may be set", "maglev")
        if self.minimum_ring_size and (self.ring_hash is not None or self.maglev is not None):
            v.error("only one of MinimumRingSize or Maglev/Ringhash can be specified", "minimumRingSize")


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalityDistribute:
    """Traffic from ``from`` (``region/zone/subzone``, trailing ``*`` allowed) split over ``to`` by weight."""

    from_: str = ""
    to: Mapping[str, NonNegInt] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalityFailover:
    """When ``from`` (a region) has no healthy endpoints, fail over to region ``to``."""

    from_: str = ""
    to: str = ""


def _check_failover(v: Checker, failover: tuple[LocalityFailover, ...], what: str) -> None:
    for i, f in enumerate(failover):
        if f.from_ == f.to:
            v.error(f"{what} failover settings must specify different regions", "failover", i)
        if "/" in f.from_ or "/" in f.to:
            v.error(f"{what} failover only specify region", "failover", i)
        if "*" in f.from_ or "*" in f.to:
            v.error(f"{what} failover region should not contain '*' wildcard", "failover", i)


def _locality_overlap(localities: list[str]) -> str | None:
    """Istio's ``validateLocalities``: well-formed, at most one trailing ``*``, no two overlapping."""
    covered: dict[str, dict[str, set[str]]] = {}
    for loc in localities:
        stars = loc.count("*")
        if stars and (stars > 1 or not loc.endswith("*")):
            return f"locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
        if "*" in covered:
            return f"locality {loc} overlap with previous specified ones"
        parts = loc.split("/", 2)
        if any(not p for p in parts):
            return f"locality {loc} must not contain empty region/zone/subzone info"
        region = parts[0]
        zones = covered.get(region)
        if len(parts) == 1:
            if zones is not None:
                return f"locality {loc} overlap with previous specified ones"
            covered[region] = {"*": {"*"}}
            continue
        zone = parts[1]
        if zones is None:
            zones = covered[region] = {}
        elif "*" in zones:
            return f"locality {loc} overlap with previous specified ones"
        if len(parts) == 2:
            if zone in zones:
                return f"locality {loc} overlap with previous specified ones"
            zones[zone] = {"*"}
            continue
        subzones = zones.setdefault(zone, set())
        if "*" in subzones or parts[2] in subzones:
            return f"locality {loc} overlap with previous specified ones"
        subzones.add(parts[2])
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalityLoadBalancerSetting:
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()
    enabled: bool | None = None  # None: the mesh setting (default on)

    def _check(self, v: Checker) -> None:
        if self.distribute and self.failover:
            v.error("can not simultaneously specify 'distribute' and 'failover'", "failover")
            return
        if self.failover:
            for i, label in enumerate(self.failover_priority):
                if label in _TOPOLOGY_LABELS:
                    v.error(f"can not simultaneously set 'failover' and topology label '{label}' in "
                            "'failover_priority'", "failoverPriority", i)
        for i, d in enumerate(self.distribute):
            bad = [loc for loc, weight in d.to.items() if not 1 <= weight <= 100]
            if bad:
                v.error(f"locality weight must be in range [1, 100], got {d.to[bad[0]]} for {bad[0]!r}",
                        "distribute", i, "to", bad[0])
                continue
            total = sum(d.to.values())
            if total != 100:
                v.error(f"total locality weight {total} != 100", "distribute", i, "to")
                continue
            problem = _locality_overlap(list(d.to))
            if problem:
                v.error(problem, "distribute", i, "to")
        problem = _locality_overlap([d.from_ for d in self.distribute])
        if problem:
            v.error(problem, "distribute")
        _check_failover(v, self.failover, "locality lb")


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneAwareLoadBalancerSetting:
    """Envoy zone-aware routing; region, zone and subzone ordering is automatic."""

    enabled: bool | None = None
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()
    min_cluster_size: Annotated[int, ranged(1, None, "minClusterSize")] | None = None  # None: 6

    def _check(self, v: Checker) -> None:
        for i, label in enumerate(self.failover_priority):
            if label in _TOPOLOGY_LABELS:
                v.error(f"'failover_priority' for zone aware lb must not use topology label '{label}'; "
                        "region- and zone-level routing are handled automatically", "failoverPriority", i)
        _check_failover(v, self.failover, "zone aware lb")


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmupConfiguration:
    """Envoy slow start: a new endpoint's weight ramps up over ``duration``."""

    duration: Duration
    minimum_percent: Annotated[float, ranged(0.0, 100.0, "minimumPercent")] | None = None  # None: 10
    aggression: float | None = None  # None: 1.0 (linear)

    def _check(self, v: Checker) -> None:
        if self.aggression is not None and self.aggression <= 0:
            v.error(f"aggression should be greater than 0, got {self.aggression:g}", "aggression")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadBalancerSettings:
    """``simple`` or ``consistentHash`` (a oneof), plus locality and warmup settings."""

    simple: SimpleLB | None = None  # None: not set (Istio's default, LEAST_REQUEST, unless consistentHash)
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: LocalityLoadBalancerSetting | None = None
    zone_aware_lb_setting: ZoneAwareLoadBalancerSetting | None = None
    warmup_duration_secs: Duration | None = field(
        default=None, deprecated="warmupDurationSecs is deprecated; use warmup.duration"
    )
    warmup: WarmupConfiguration | None = None

    @property
    def has_failover(self) -> bool:
        """Whether failover is configured (which needs outlier detection to take effect)."""
        for lb in (self.locality_lb_setting, self.zone_aware_lb_setting):
            if lb is not None and (lb.failover or lb.failover_priority):
                return True
        return False

    def _check(self, v: Checker) -> None:
        if self.simple is not None and self.consistent_hash is not None:
            v.error("only one of simple or consistentHash may be set", "consistentHash")
        if self.simple == "LEAST_CONN":
            v.warn("LEAST_CONN is deprecated; use LEAST_REQUEST (the same algorithm)", "simple")
        if self.locality_lb_setting is not None and self.zone_aware_lb_setting is not None:
            v.error("only one of localityLbSetting and zoneAwareLbSetting can be set", "zoneAwareLbSetting")
        if self.warmup_duration_secs is not None and self.warmup is not None:
            v.error("only one of warmupDurationSecs or warmup can be set", "warmupDurationSecs")
