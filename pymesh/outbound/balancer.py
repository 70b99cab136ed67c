"""The per-cluster load balancer: Envoy's priorities, panic mode, locality weights and LB algorithms.

``make_balancer`` compiles a DestinationRule ``loadBalancer`` and a cluster's endpoints, as seen
from one client, into a ``Balancer``; the transport calls ``pick`` once per try and brackets the
request with ``start`` / ``finish``. A pick runs Envoy's steps in order:

1. priority: the health of each priority level (``healthy * 1.4``, capped at 100%) decides how
   much traffic it takes; what a level lacks spills to the next (``locality.py`` makes levels);
2. panic: when the levels together are short of 100% and a level has fewer than
   ``panic_threshold`` % healthy endpoints, that level balances over all its endpoints;
3. locality: with locality weighting on, a locality of the level by weight x availability;
4. the algorithm over the chosen endpoints, minus the previous tries' endpoints when any other
   qualifies (Envoy's ``previous_hosts`` retry predicate).

Consistent hashing (ring hash, Maglev) uses one table per level built here, and skips unhealthy
or excluded endpoints by walking on from the key's slot (see ``hashing.py``).

PASSTHROUGH has no endpoints to choose from: ``pick`` returns None and ``passthrough`` is True,
and the caller dials the address the application asked for (Envoy's ORIGINAL_DST).

Concurrency: one ``Balancer`` serves every thread and event loop of the process. Health is
read (``healthy`` called) before any lock is taken; the lock guards only the counters and the
smooth-weighted-round-robin state, a few list updates per pick, never anything slow and never
an ``await``. Equal-weight round robin uses ``itertools.count`` (``next`` is atomic under the
GIL) and random choices call ``random.Random`` methods that are single C calls, so those paths
take no lock. Active-request counts are read without the lock (a racy read, as Envoy's atomic
loads are) and written under it.
"""

from __future__ import annotations

import bisect
import itertools
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pymesh.config.networking.loadbalancer import LoadBalancerSettings, LocalityLoadBalancerSetting
from pymesh.outbound.hashing import (
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_MIN_RING_SIZE,
    HashPolicy,
    MaglevTable,
    RingHashTable,
    SetCookie,
    hash64,
)
from pymesh.outbound.locality import Group, effective_setting, layout
from pymesh.snapshot.registry import Endpoint

__all__ = [
    "DEFAULT_PANIC_THRESHOLD",
    "Algorithm",
    "Balancer",
    "HashPolicy",
    "SetCookie",
    "Warmup",
    "make_balancer",
]

Algorithm = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "PASSTHROUGH", "RING_HASH", "MAGLEV"]

DEFAULT_PANIC_THRESHOLD = 50.0  # Envoy's healthy_panic_threshold default; Istio writes 0 with outlier detection
_OVERPROVISIONING = 140  # Envoy's overprovisioning factor, percent
_CHOICE_COUNT = 2  # LEAST_REQUEST choice_count
_ACTIVE_REQUEST_BIAS = 1.0  # LEAST_REQUEST active_request_bias

_Table = RingHashTable | MaglevTable


@dataclass(frozen=True, slots=True)
class Warmup:
    """Envoy slow start: weight x max(min_fraction, (age / window) ** (1 / aggression)) while age < window."""

    window: float  # seconds
    min_fraction: float = 0.1
    aggression: float = 1.0

    def factor(self, age: float) -> float:
        if age >= self.window:
            return 1.0
        time_factor = max(age, 0.001) / self.window  # Envoy counts at least 1ms
        if self.aggression != 1.0:
            time_factor **= 1.0 / self.aggression
        return max(time_factor, self.min_fraction)


@dataclass(frozen=True, slots=True)
class _Level:
    members: tuple[int, ...]
    member_set: frozenset[int]
    groups: tuple[Group, ...]
    equal: bool  # every member has the same endpoint weight
    cumulative: tuple[float, ...]  # running sum of member weights (RANDOM)


def _algorithm(settings: LoadBalancerSettings | None) -> Algorithm:
    if settings is None:
        return "LEAST_REQUEST"
    ch = settings.consistent_hash
    if ch is not None:
        return "MAGLEV" if ch.maglev is not None else "RING_HASH"
    simple = settings.simple
    if simple in ("ROUND_ROBIN", "RANDOM", "PASSTHROUGH"):
        return simple
    return "LEAST_REQUEST"  # UNSPECIFIED / unset (Istio >= 1.14), LEAST_CONN (an alias), LEAST_REQUEST


def _warmup(settings: LoadBalancerSettings | None, algorithm: Algorithm) -> Warmup | None:
    if settings is None or algorithm not in ("ROUND_ROBIN", "LEAST_REQUEST"):
        return None  # Envoy slow start exists for these two only
    w = settings.warmup
    if w is not None:
        return Warmup(
            w.duration,
            (10.0 if w.minimum_percent is None else w.minimum_percent) / 100.0,
            1.0 if w.aggression is None else w.aggression,
        )
    if settings.warmup_duration_secs:
        return Warmup(settings.warmup_duration_secs)
    return None


def _host_keys(endpoints: Sequence[Endpoint]) -> tuple[str, ...]:
    """What a table hashes for each endpoint: its address, a repeat of one numbered ``#2``, ``#3``..."""
    seen: dict[str, int] = {}
    keys = []
    for ep in endpoints:
        n = seen[ep.address] = seen.get(ep.address, 0) + 1
        keys.append(ep.address if n == 1 else f"{ep.address}#{n}")
    return tuple(keys)


def make_balancer(
    settings: LoadBalancerSettings | None,
    endpoints: Sequence[Endpoint],
    *,
    client_locality: str = "",
    client_labels: Mapping[str, str] | None = None,
    client_network: str = "",
    mesh_locality: LocalityLoadBalancerSetting | None = None,
    outlier_detection: bool = False,
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD,
    joined_at: Mapping[str, float] | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Balancer:
    """A balancer for one cluster as one client sees it.

    ``settings``: the cluster's merged ``loadBalancer`` (None: Istio's default, LEAST_REQUEST).
    ``client_locality`` / ``client_labels`` / ``client_network``: the calling workload, for
    locality priorities and ``failoverPriority`` (``topology.*`` labels are derived from the
    locality and network when not given). ``mesh_locality``: MeshConfig ``localityLbSetting``,
    which the DR's ``localityLbSetting`` replaces whole (None: the mesh default, enabled).
    ``outlier_detection``: whether the cluster has an ``outlierDetection`` block; Istio writes
    locality failover priorities only then, since nothing would ever mark an endpoint unhealthy
    otherwise (``distribute`` applies regardless). ``panic_threshold``: percent (Envoy's
    default 50; Istio writes ``outlierDetection.minHealthPercent``, default 0, when that block
    exists). ``joined_at``: monotonic join time by endpoint address, carried from the previous
    balancer (``Balancer.joined_at``) so slow start counts from when an endpoint first appeared.
    """
    eps = tuple(endpoints)
    algorithm = _algorithm(settings)
    rng = rng or random.Random()  # noqa: S311 -- load balancing, not cryptography
    hash_policy = None
    if settings is not None and settings.consistent_hash is not None:
        hash_policy = HashPolicy.compile(settings.consistent_hash)
    if algorithm == "PASSTHROUGH":
        return Balancer(eps, algorithm, (), False, None, hash_policy, panic_threshold, None, {}, rng, clock)
    setting = effective_setting(
        settings.locality_lb_setting if settings is not None else None,
        settings.zone_aware_lb_setting if settings is not None else None,
        mesh_locality,
    )
    lay = layout(eps, setting, client_locality=client_locality, client_labels=client_labels,
                 client_network=client_network, outlier_detection=outlier_detection)
    levels = []
    for groups in lay.levels:
        members = tuple(i for g in groups for i in g.members)
        weights = [float(eps[i].weight) for i in members]
        levels.append(_Level(members, frozenset(members), groups, len(set(weights)) <= 1,
                             tuple(itertools.accumulate(weights))))
    keys = _host_keys(eps)
    tables: tuple[_Table, ...] | None = None
    ch = settings.consistent_hash if settings is not None else None
    if ch is not None:
        built: list[_Table] = []
        for lvl in levels:
            weights = _hash_weights(eps, lvl, lay.locality_weighted)
            hosts_keys = [keys[i] for i in lvl.members]
            if ch.maglev is not None:
                built.append(MaglevTable(lvl.members, hosts_keys, weights,
                                         size=ch.maglev.table_size or DEFAULT_MAGLEV_TABLE_SIZE))
            else:
                min_size = (ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else ch.minimum_ring_size)
                built.append(RingHashTable(lvl.members, hosts_keys, weights,
                                           min_size=min_size or DEFAULT_MIN_RING_SIZE))
        tables = tuple(built)
    warmup = _warmup(settings, algorithm)
    now = clock()
    joined = {k: (joined_at or {}).get(k, now) for k in keys} if warmup is not None else {}
    return Balancer(eps, algorithm, tuple(levels), lay.locality_weighted, tables, hash_policy, panic_threshold,
                    warmup, joined, rng, clock)


def _hash_weights(eps: tuple[Endpoint, ...], level: _Level, locality_weighted: bool) -> list[float]:
    if not locality_weighted:
        return [float(eps[i].weight) for i in level.members]
    # Envoy's normalizeLocalityWeights: locality share x the host's share of its locality
    total = sum(g.weight for g in level.groups) or 1.0
    out: list[float] = []
    for g in level.groups:
        inside = sum(eps[i].weight for i in g.members)
        out.extend(g.weight / total * eps[i].weight / inside for i in g.members)
    return out


class Balancer:
    """Runtime load-balancing state for one cluster; built by ``make_balancer``, shared by all callers."""

    __slots__ = (
        "_active", "_clock", "_counters", "_current", "_cycles", "_join_times", "_joined", "_levels", "_lock",
        "_rng", "_tables", "_warm_until", "_warmup", "_weight", "algorithm", "endpoints", "hash_policy",
        "locality_weighted", "panic_threshold", "priorities",
    )

    def __init__(
        self,
        endpoints: tuple[Endpoint, ...],
        algorithm: Algorithm,
        levels: tuple[_Level, ...],
        locality_weighted: bool,
        tables: tuple[_Table, ...] | None,
        hash_policy: HashPolicy | None,
        panic_threshold: float,
        warmup: Warmup | None,
        joined: Mapping[str, float],
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self.endpoints = endpoints
        self.algorithm: Algorithm = algorithm
        self.hash_policy = hash_policy
        self.locality_weighted = locality_weighted
        self.panic_threshold = panic_threshold
        prio: list[int | None] = [None] * len(endpoints)
        for n, lvl in enumerate(levels):
            for i in lvl.members:
                prio[i] = n
        self.priorities: tuple[int | None, ...] = tuple(prio)  # None: receives no traffic (distribute)
        self._levels = levels
        self._tables = tables
        self._warmup = warmup
        self._joined = dict(joined)
        self._warm_until = max(joined.values(), default=0.0) + warmup.window if warmup is not None else 0.0
        self._join_times = [joined.get(k, 0.0) for k in _host_keys(endpoints)] if warmup is not None else []
        self._weight = tuple(float(ep.weight) for ep in endpoints)
        self._rng = rng
        self._clock = clock
        self._lock = threading.Lock()
        self._active = [0] * len(endpoints)
        # Sources: a whole level (group -1) or one locality of it; each keeps its own RR position,
        # started at a random offset as Envoy seeds its schedulers, so clients do not move in step.
        # A weighted round-robin source with all its endpoints healthy repeats one smooth cycle:
        # it is computed here so such picks are an index (lock-free), as Envoy's EDF is O(log n).
        self._counters: dict[tuple[int, int], itertools.count[int]] = {}
        self._current: dict[tuple[int, int], list[float]] = {}
        self._cycles: dict[tuple[int, int], tuple[int, ...]] = {}
        for n, lvl in enumerate(levels):
            for g in range(-1, len(lvl.groups)):
                members = lvl.members if g < 0 else lvl.groups[g].members
                period = len(members)
                if algorithm == "ROUND_ROBIN" and not _equal(self._weight, members):
                    cycle = _smooth_cycle(members, [endpoints[i].weight for i in members])
                    if cycle:
                        self._cycles[n, g] = cycle
                        period = len(cycle)
                self._counters[n, g] = itertools.count(rng.randrange(max(period, 1)))
                self._current[n, g] = [0.0] * len(endpoints)
            self._current[n, -2] = [0.0] * len(lvl.groups)  # locality choice

    # -- public -----------------------------------------------------------------------------------

    @property
    def passthrough(self) -> bool:
        """True for PASSTHROUGH: ``pick`` returns None and the caller dials the original destination."""
        return self.algorithm == "PASSTHROUGH"

    @property
    def joined_at(self) -> Mapping[str, float]:
        """When each endpoint (by address) joined, for ``make_balancer(joined_at=...)`` on the next rebuild."""
        return dict(self._joined)

    def active(self, index: int) -> int:
        """Requests started on endpoint ``index`` and not yet finished."""
        return self._active[index]

    # start and finish bracket every request: acquire/release, since ``with`` costs twice as much on 3.11.

    def start(self, index: int) -> None:
        lock = self._lock
        lock.acquire()
        try:
            self._active[index] += 1
        finally:
            lock.release()

    def finish(self, index: int) -> None:
        lock = self._lock
        lock.acquire()
        try:
            if self._active[index] > 0:
                self._active[index] -= 1
        finally:
            lock.release()

    def pick(
        self,
        *,
        hash_key: bytes | None = None,
        exclude: Collection[int] = (),
        healthy: Callable[[int], bool] | None = None,
        retry_remote_localities: bool = False,
    ) -> int | None:
        """An index into ``endpoints``, or None when no endpoint qualifies (or PASSTHROUGH).

        ``hash_key``: from ``hash_policy.key`` (consistent hashing only; None picks at random).
        ``exclude``: endpoints earlier tries used; avoided while any other in the chosen source
        qualifies. ``healthy``: outlier detection's verdict (None: all healthy).
        ``retry_remote_localities``: the route's ``retryRemoteLocalities``; priority levels
        holding an excluded endpoint are skipped while another level has healthy endpoints
        (Envoy's ``previous_priorities``).
        """
        levels = self._levels
        if not levels:
            return None
        tables = self._tables
        h = 0
        if tables is not None:
            h = hash64(hash_key) if hash_key is not None else self._rng.getrandbits(64)
        ok: frozenset[int] | None = None
        level, panic = 0, False
        if healthy is not None:
            ok = frozenset(filter(healthy, range(len(self.endpoints))))
        if ok is not None or (retry_remote_localities and exclude):
            skip = {p for i in exclude if (p := self.priorities[i]) is not None} if retry_remote_localities else None
            level, panic = self._choose_level(ok, h if tables is not None else self._rng.getrandbits(32), skip)
            if panic:
                ok = None
        if tables is not None:
            return self._walk(tables[level], levels[level], h, ok, exclude)
        return self._pick_in_level(level, ok, exclude)

    # -- priorities and panic (Envoy's LoadBalancerBase) ------------------------------------------

    def _choose_level(self, ok: frozenset[int] | None, roll: int, skip: set[int] | None) -> tuple[int, bool]:
        levels = self._levels
        threshold = self.panic_threshold
        counts = [len(lvl.members) for lvl in levels]
        up = counts if ok is None else [len(ok & lvl.member_set) for lvl in levels]
        if len(levels) == 1:  # the usual case: no priorities to spill between, only panic to decide
            only = min(100, _OVERPROVISIONING * up[0] // counts[0])
            return 0, only < 100 and 100.0 * up[0] / counts[0] < threshold
        health = [min(100, _OVERPROVISIONING * u // c) for u, c in zip(up, counts, strict=True)]
        real_total = min(100, sum(health))
        if skip and any(h for n, h in enumerate(health) if n not in skip):
            health = [0 if n in skip else h for n, h in enumerate(health)]
        total = min(100, sum(health))
        load = [0] * len(levels)
        if total == 0:
            load[0] = 100
        else:
            remaining = 100
            for n, h in enumerate(health):
                load[n] = min(remaining, h * 100 // total)
                remaining -= load[n]
            load[next(n for n, h in enumerate(health) if h > 0)] += remaining
        if real_total == 100 or (threshold <= 0 and total == 0):
            panics = [False] * len(levels)
        else:
            panics = [100.0 * u / c < threshold for u, c in zip(up, counts, strict=True)]
            if all(panics):  # total panic: load by endpoint counts
                everyone = sum(counts)
                load = [100 * c // everyone for c in counts]
                load[0] += 100 - sum(load)
        point = roll % 100 + 1
        acc = 0
        for n, share in enumerate(load):
            acc += share
            if point <= acc:
                return n, panics[n]
        return 0, panics[0]

    # -- the algorithms (Envoy's EDF / least-request / random LBs) ----------------------------------

    def _pick_in_level(self, level: int, ok: frozenset[int] | None, exclude: Collection[int]) -> int | None:
        lvl = self._levels[level]
        group = -1
        source: Sequence[int] = lvl.members
        if self.locality_weighted and len(lvl.groups) > 1:
            group = self._choose_locality(level, lvl, ok)
            if group >= 0:
                source = lvl.groups[group].members
        pool = source
        if ok is not None and not ok.issuperset(source):
            pool = [i for i in source if i in ok]
        if exclude:
            fresh = [i for i in pool if i not in exclude]
            if not fresh and group >= 0:  # this locality is used up: the rest of the level, then back
                wider = [i for i in lvl.members if (ok is None or i in ok) and i not in exclude]
                if wider:
                    fresh, group = wider, -1
            if fresh and len(fresh) < len(pool):
                pool = fresh
        if not pool:
            return None
        if len(pool) == 1:
            return pool[0]
        key = (level, group)
        algorithm = self.algorithm
        warming = self._warmup is not None and self._clock() < self._warm_until
        if algorithm == "RANDOM":
            return self._random(lvl, pool)
        equal = (lvl.equal or _equal(self._weight, pool)) and not warming
        if algorithm == "ROUND_ROBIN":
            if equal:
                return pool[next(self._counters[key]) % len(pool)]
            cycle = self._cycles.get(key) if pool is source and not warming else None
            if cycle:
                return cycle[next(self._counters[key]) % len(cycle)]
            return self._smooth(key, pool, self._weights(pool, warming, 0.0))
        # LEAST_REQUEST
        if equal:
            return self._two_choices(pool)
        return self._smooth(key, pool, self._weights(pool, warming, _ACTIVE_REQUEST_BIAS))

    def _choose_locality(self, level: int, lvl: _Level, ok: frozenset[int] | None) -> int:
        """A locality by Envoy's effective weight: weight x min(1, 1.4 x its healthy fraction); -1: none."""
        weights = []
        for g in lvl.groups:
            if ok is None:
                weights.append(g.weight)
            else:
                up = sum(1 for i in g.members if i in ok)
                weights.append(g.weight * min(1.0, _OVERPROVISIONING / 100 * up / len(g.members)))
        live = [n for n, w in enumerate(weights) if w > 0]
        if not live:
            return -1
        if len(live) == 1:
            return live[0]
        return self._smooth((level, -2), live, [weights[n] for n in live])

    def _weights(self, pool: Sequence[int], warming: bool, bias: float) -> list[float]:
        weight = self._weight
        out = [weight[i] for i in pool]
        if bias:
            active = self._active
            out = [w / (active[i] + 1) ** bias for w, i in zip(out, pool, strict=True)]
        if warming:
            assert self._warmup is not None
            now = self._clock()
            joined = self._join_times
            factor = self._warmup.factor
            out = [w * factor(now - joined[i]) for w, i in zip(out, pool, strict=True)]
        return out

    def _smooth(self, key: tuple[int, int], pool: Sequence[int], weights: Sequence[float]) -> int:
        """Smooth weighted round robin (nginx): exact shares over a cycle, no bursts; Envoy uses EDF."""
        current = self._current[key]
        total = sum(weights)
        with self._lock:
            best = pool[0]
            best_value = float("-inf")
            for i, w in zip(pool, weights, strict=True):
                value = current[i] + w
                current[i] = value
                if value > best_value:
                    best, best_value = i, value
            current[best] -= total
        return best

    def _two_choices(self, pool: Sequence[int]) -> int:
        """Envoy's unweighted least request: the least busy of ``choice_count`` random draws (with replacement)."""
        rnd = self._rng.random
        active = self._active
        n = len(pool)
        best = pool[int(rnd() * n)]
        for _ in range(_CHOICE_COUNT - 1):
            other = pool[int(rnd() * n)]
            if active[other] < active[best]:
                best = other
        return best

    def _random(self, lvl: _Level, pool: Sequence[int]) -> int:
        if pool is lvl.members:
            cumulative: Sequence[float] = lvl.cumulative
        else:
            weight = self._weight
            cumulative = list(itertools.accumulate(weight[i] for i in pool))
        point = self._rng.random() * cumulative[-1]
        return pool[min(bisect.bisect_right(cumulative, point), len(pool) - 1)]

    # -- consistent hashing ----------------------------------------------------------------------------

    def _walk(self, table: _Table, lvl: _Level, h: int, ok: frozenset[int] | None,
              exclude: Collection[int]) -> int | None:
        owner = table.owner(h)
        if owner < 0:
            return None
        if (ok is None or owner in ok) and (not exclude or owner not in exclude):
            return owner
        # walk on: past unhealthy endpoints, and past excluded ones while another qualifies
        eligible = lvl.members if ok is None else [i for i in lvl.members if i in ok]
        if not eligible:
            return None
        prefer_fresh = bool(exclude) and any(i not in exclude for i in eligible)
        for host in table.walk(h):
            if ok is not None and host not in ok:
                continue
            if prefer_fresh and host in exclude:
                continue
            return host
        return None  # not reached: every eligible endpoint has a slot


def _smooth_cycle(members: Sequence[int], weights: Sequence[int], limit: int = 1 << 18) -> tuple[int, ...]:
    """One period of smooth weighted round robin from a zero state (empty when too long to keep)."""
    total = sum(weights)
    if total * len(members) > limit:
        return ()
    current = [0] * len(members)
    out = []
    for _ in range(total):
        best = 0
        for k, w in enumerate(weights):
            current[k] += w
            if current[k] > current[best]:
                best = k
        current[best] -= total
        out.append(members[best])
    return tuple(out)


def _equal(weight: tuple[float, ...], pool: Sequence[int]) -> bool:
    first = weight[pool[0]]
    return all(weight[i] == first for i in pool)
