"""Locality load balancing: Istio's priorities and locality weights, relative to the calling workload.

A port of ``pilot/pkg/networking/core/loadbalancer/loadbalancer.go``. Istio groups a
cluster's endpoints by locality (Envoy's ``LocalityLbEndpoints``) and, for each client,
rewrites them before Envoy sees them:

- ``distribute``: the first rule whose ``from`` matches the client sets each locality's
  weight (a target's weight split over the localities it matches, in proportion to their own
  weight, rounded up); localities no target matches get no traffic. Locality-weighted
  balancing is switched on. No failover.
- otherwise, only when failover is enabled (the cluster has outlier detection, or the setting
  forces it): ``failoverPriority`` labels, then region ``failover``, or by default the
  region/zone/subzone ladder (0 same subzone, 1 same zone, 2 same region, 3 elsewhere; 4 for
  regions a ``failover`` entry for the client's region does not name). Priorities are then
  compacted to 0..N. Locality weighting is on when ``failover`` or ``failoverPriority`` is set.
- without failover every endpoint is priority 0 and localities are not weighted.
- ``zoneAwareLbSetting`` (the newer message): regions bucketed 0 same, 1 the ``failover``
  target, 2 others, after any ``failoverPriority``; failover is forced (no outlier detection
  needed). Envoy's zone-aware routing inside the client's region needs the client's own
  cluster membership, which an in-process client does not have, so the region's zones are
  balanced as one level.

Envoy then spills traffic between priorities by health (``balancer.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pymesh.config.networking.loadbalancer import (
    LocalityDistribute,
    LocalityFailover,
    LocalityLoadBalancerSetting,
    ZoneAwareLoadBalancerSetting,
)
from pymesh.snapshot.registry import Endpoint

__all__ = [
    "Group", "Layout", "Setting", "effective_setting", "layout", "lb_priority", "locality_match", "split_locality",
]

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
NETWORK_LABEL = "topology.istio.io/network"

Locality = tuple[str, str, str]


def split_locality(locality: str) -> Locality:
    """``region/zone/subzone`` into its three parts (missing parts empty), as Istio's ``SplitLocalityLabel``."""
    parts = locality.split("/")
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""


def locality_match(locality: Locality, rule: str) -> bool:
    """Istio's ``LocalityMatch``: ``*`` or a missing zone/subzone in the rule matches anything."""
    region, zone, subzone = split_locality(rule)
    return ((region == "*" or locality[0] == region)
            and (zone in ("*", "") or locality[1] == zone)
            and (subzone in ("*", "") or locality[2] == subzone))


def lb_priority(client: Locality, endpoint: Locality) -> int:
    """Istio's ``LbPriority``: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere."""
    if client[0] != endpoint[0]:
        return 3
    if client[1] != endpoint[1]:
        return 2
    return 0 if client[2] == endpoint[2] else 1


@dataclass(frozen=True, slots=True)
class Group:
    """One ``LocalityLbEndpoints``: endpoints of one locality at one priority, and its locality weight."""

    locality: str
    priority: int
    members: tuple[int, ...]  # indices into the balancer's endpoints
    weight: float


@dataclass(frozen=True, slots=True)
class Layout:
    levels: tuple[tuple[Group, ...], ...]  # by priority, 0 first; no level is empty
    locality_weighted: bool  # Envoy's locality_weighted_lb_config


@dataclass(frozen=True, slots=True)
class Setting:
    """The effective locality setting, whichever message it came from."""

    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()
    failover_priority: tuple[str, ...] = ()
    zone_aware: bool = False  # zoneAwareLbSetting: region buckets, failover forced


def effective_setting(
    dr: LocalityLoadBalancerSetting | None,
    dr_zone_aware: ZoneAwareLoadBalancerSetting | None,
    mesh: LocalityLoadBalancerSetting | None,
) -> Setting | None:
    """Istio's ``GetEffectiveLbSetting``: the DR's setting replaces the mesh's whole; None: disabled.

    ``mesh`` None stands for MeshConfig's default, ``{enabled: true}``.
    """
    if dr_zone_aware is not None:
        if dr_zone_aware.enabled is False:
            return None
        return Setting((), dr_zone_aware.failover, dr_zone_aware.failover_priority, zone_aware=True)
    chosen = dr if dr is not None else (mesh or LocalityLoadBalancerSetting())
    if chosen.enabled is False:
        return None
    return Setting(chosen.distribute, chosen.failover, chosen.failover_priority)


def _labels(ep_labels: Mapping[str, str], locality: Locality, network: str) -> Mapping[str, str]:
    # Istio's AugmentLabels: topology labels derived from locality and network, unless already set.
    extra = {REGION_LABEL: locality[0], ZONE_LABEL: locality[1], SUBZONE_LABEL: locality[2]}
    if network:
        extra[NETWORK_LABEL] = network
    return {**{k: v for k, v in extra.items() if v}, **ep_labels}


@dataclass(slots=True)
class _Bucket:
    locality: str
    priority: int
    members: list[int]
    weight: float


def layout(
    endpoints: Sequence[Endpoint],
    setting: Setting | None,
    *,
    client_locality: str = "",
    client_labels: Mapping[str, str] | None = None,
    client_network: str = "",
    outlier_detection: bool = False,
) -> Layout:
    """Priorities and locality weights for ``endpoints`` as seen from the client."""
    client = split_locality(client_locality)
    # LocalityLbEndpoints: one bucket per locality, in order of first appearance.
    by_locality: dict[str, list[int]] = {}
    for i, ep in enumerate(endpoints):
        by_locality.setdefault(ep.locality, []).append(i)
    buckets = [_Bucket(loc, 0, members, float(sum(endpoints[i].weight for i in members)))
               for loc, members in by_locality.items()]
    weighted = False
    if setting is not None and setting.distribute:
        _distribute(buckets, client, setting.distribute)
        weighted = True
    elif setting is not None and (outlier_detection or setting.zone_aware):
        proxy = _labels(client_labels or {}, client, client_network)
        if setting.failover_priority and proxy:
            buckets = _failover_priorities(buckets, endpoints, proxy, setting.failover_priority)
        if setting.zone_aware:
            _failover(buckets, client, setting)  # region buckets always; Envoy's zone-aware LB within
        else:
            weighted = bool(setting.failover or setting.failover_priority)
            if setting.failover or not setting.failover_priority:
                _failover(buckets, client, setting)
    levels: dict[int, list[_Bucket]] = {}
    for b in buckets:
        if b.members:
            levels.setdefault(b.priority, []).append(b)
    # compacted to 0..N without gaps, as Istio does
    return Layout(
        tuple(
            tuple(Group(b.locality, n, tuple(b.members), b.weight) for b in levels[p])
            for n, p in enumerate(sorted(levels))
        ),
        weighted,
    )


def _distribute(buckets: list[_Bucket], client: Locality, rules: tuple[LocalityDistribute, ...]) -> None:
    for rule in rules:
        if not locality_match(client, rule.from_):
            continue
        unmatched = set(range(len(buckets)))
        for target, weight in rule.to.items():
            hit = [i for i in sorted(unmatched) if locality_match(split_locality(buckets[i].locality), target)]
            unmatched.difference_update(hit)
            total = sum(buckets[i].weight for i in hit)
            for i in hit:
                share = buckets[i].weight * weight / total if total else 0.0
                if share > 0:
                    buckets[i].weight = float(math.ceil(share))
        for i in unmatched:
            buckets[i].members = []  # no traffic to localities the rule does not name
        return


def _failover(buckets: list[_Bucket], client: Locality, setting: Setting) -> None:
    """Locality priorities composed with any ``failoverPriority`` ones (which weigh more)."""
    for b in buckets:
        region = split_locality(b.locality)[0]
        if setting.zone_aware:
            # applyZoneAwareRegionalFailover: 0 same region, 1 the failover target, 2 any other region
            p = 0 if region == client[0] else 2
            for f in setting.failover:
                if f.from_ == client[0]:
                    if p == 2 and region == f.to:
                        p = 1
                    break
            b.priority = b.priority * 3 + p
            continue
        p = lb_priority(client, split_locality(b.locality))
        if p == 3:
            for f in setting.failover:
                if f.from_ == client[0]:
                    if region != f.to:
                        p = 4
                    break
        b.priority = b.priority * 5 + p


def _failover_priorities(buckets: list[_Bucket], endpoints: Sequence[Endpoint], proxy: Mapping[str, str],
                         failover_priority: tuple[str, ...]) -> list[_Bucket]:
    """``failoverPriority``: within each locality, endpoints matching the client's first k labels get N - k."""
    names: list[str] = []
    overrides: dict[str, str] = {}
    for item in failover_priority:
        parts = item.split("=")
        names.append(parts[0])
        if len(parts) == 2:
            overrides[parts[0]] = parts[1]
    lowest = len(names)
    out: list[_Bucket] = []
    for b in buckets:
        by_prio: dict[int, list[int]] = {}
        for i in b.members:
            ep = endpoints[i]
            labels = _labels(ep.labels, split_locality(ep.locality), ep.network)
            prio = 0
            for j, name in enumerate(names):
                if overrides.get(name, proxy.get(name, "")) != labels.get(name, ""):
                    prio = lowest - j
                    break
            by_prio.setdefault(prio, []).append(i)
        for prio in sorted(by_prio):
            ids = by_prio[prio]
            out.append(_Bucket(b.locality, prio, ids, float(sum(endpoints[i].weight for i in ids))))
    return out
