"""Measurement helpers shared by the benchmarks (method: ``reference/perf-anchors.md`` section 3).

- ``interleave`` runs closed-loop scenarios in alternating rounds (A B, B A, A B ...) so that
  drift on a shared machine hits every scenario alike. Each request is timed with
  ``time.perf_counter_ns``; percentiles come from the samples of all rounds pooled, never
  from averaging per-round percentiles. Rounds are bounded by a request count *and* a
  time cap.
- CPU per request: the client's from ``time.process_time_ns`` (every thread of this
  process), another process's from ``/proc/<pid>/task/*/schedstat`` (nanoseconds), or
  ``/proc/<pid>/stat`` (clock ticks) where schedstat is missing.
- ``per_call_ns`` times a micro-operation in batches (one clock read per batch, not per
  call, because a clock read costs about as much as the thing being measured), in
  thread CPU time by default.
- ``machine`` and ``write_json`` record where and how a result was produced.
"""

from __future__ import annotations

import gc
import glob
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLOCKS",
    "Aggregate",
    "Comparison",
    "Round",
    "Stats",
    "aggregate",
    "compare",
    "interleave",
    "machine",
    "per_call_ns",
    "pick_cpu",
    "pin",
    "proc_cpu_ns",
    "run_round",
    "table",
    "write_json",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- CPU accounting -------------------------------------------------------------------------


def proc_cpu_ns(pid: int) -> int:
    """CPU time used so far by every thread of process ``pid`` (user + system), in ns."""
    total = 0
    found = False
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
            found = True
        except (OSError, ValueError, IndexError):
            continue  # a thread that exited between glob and open
    if found:
        return total
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) * 1_000_000_000 // _CLK_TCK


def _rusage() -> tuple[int, int]:
    """Voluntary and involuntary context switches of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_nvcsw, ru.ru_nivcsw


# -- placement ------------------------------------------------------------------------------


def pick_cpu() -> int:
    """The CPU to pin to: the highest one this process may use (often the least busy)."""
    return max(os.sched_getaffinity(0))


def pin(cpu: int) -> None:
    """Pin this process's calling thread (and threads started after it) to ``cpu``."""
    os.sched_setaffinity(0, {cpu})


# -- statistics -----------------------------------------------------------------------------


def _rank(sorted_values: Sequence[int | float], q: float) -> float:
    """Nearest-rank percentile of already sorted values; q in [0, 1]."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[k])


@dataclass(frozen=True, slots=True)
class Stats:
    """Summary of one pool of samples, in ns."""

    n: int
    mean: float
    min: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    @classmethod
    def of(cls, samples: Iterable[int | float]) -> Stats:
        s = sorted(samples)
        if not s:
            return cls(0, *(math.nan,) * 7)
        return cls(len(s), statistics.fmean(s), float(s[0]), _rank(s, 0.50), _rank(s, 0.90), _rank(s, 0.99),
                   _rank(s, 0.999), float(s[-1]))

    def us(self) -> dict[str, float]:
        """The same figures in µs, rounded for JSON."""
        return {k: round(getattr(self, k) / 1000, 2) for k in ("mean", "min", "p50", "p90", "p99", "p999", "max")}


# -- closed-loop rounds ---------------------------------------------------------------------


@dataclass(slots=True)
class Round:
    """One timed round of one scenario."""

    scenario: str
    index: int
    n: int
    wall_ns: int
    client_cpu_ns: int
    other_cpu_ns: int | None  # the upstream's (or another process's) CPU during the round
    samples_ns: list[int] = field(repr=False)
    voluntary_switches: int = 0
    involuntary_switches: int = 0
    capped: bool = False  # stopped by the time cap before reaching its count
    others_cpu_ns: dict[str, int] = field(default_factory=dict)  # CPU of each named other process

    @property
    def rps(self) -> float:
        return self.n * 1e9 / self.wall_ns if self.wall_ns else math.nan


def run_round(
    scenario: str,
    call: Callable[[], object],
    n: int,
    *,
    index: int = 0,
    time_cap_s: float = 10.0,
    other_cpu: Callable[[], int] | None = None,
    collect: bool = True,
    others: Mapping[str, Callable[[], int]] | None = None,
) -> Round:
    """Call ``call`` ``n`` times (or until ``time_cap_s``), timing each call; ``collect``: GC first.

    ``others`` names more processes whose CPU time to charge to the round (e.g. "envoy").
    """
    samples: list[int] = []
    append = samples.append
    clock = time.perf_counter_ns
    if collect:
        gc.collect()
    nv0, ni0 = _rusage()
    other0 = other_cpu() if other_cpu is not None else None
    named0 = {k: f() for k, f in others.items()} if others else {}
    cpu0 = time.process_time_ns()
    start = clock()
    deadline = start + int(time_cap_s * 1e9)
    t1 = start
    for _ in range(n):
        t0 = clock()
        call()
        t1 = clock()
        append(t1 - t0)
        if t1 > deadline:
            break
    wall = t1 - start
    cpu1 = time.process_time_ns()
    other1 = other_cpu() if other_cpu is not None else None
    named1 = {k: f() for k, f in others.items()} if others else {}
    nv1, ni1 = _rusage()
    return Round(
        scenario=scenario, index=index, n=len(samples), wall_ns=wall, client_cpu_ns=cpu1 - cpu0,
        other_cpu_ns=None if other0 is None or other1 is None else other1 - other0, samples_ns=samples,
        voluntary_switches=nv1 - nv0, involuntary_switches=ni1 - ni0, capped=len(samples) < n,
        others_cpu_ns={k: named1[k] - named0[k] for k in named0},
    )


def interleave(
    scenarios: Sequence[tuple[str, Callable[[], object]]],
    *,
    rounds: int,
    n: int,
    warmup: int,
    time_cap_s: float = 10.0,
    other_cpu: Callable[[], int] | None = None,
    on_round: Callable[[Round], None] | None = None,
    collect_each_round: bool = False,
    others: Mapping[str, Callable[[], int]] | None = None,
) -> dict[str, list[Round]]:
    """Warm every scenario up, then run ``rounds`` rounds of each, alternating the order.

    Round r runs the scenarios in order when r is even and reversed when r is odd
    (A B / B A / A B ...): each scenario sees the same mix of "ran first" and "ran
    second", and a linear drift over the run cancels out of the comparison. Many short
    rounds beat a few long ones on a shared machine: a burst of other work then lands
    on both scenarios of a round, and the median of the per-round comparisons ignores
    the rounds it spoiled. The garbage collector runs once before the first round
    (and before every round with ``collect_each_round``).
    """
    for _, call in scenarios:
        for _ in range(warmup):
            call()
    gc.collect()
    out: dict[str, list[Round]] = {name: [] for name, _ in scenarios}
    for r in range(rounds):
        order = scenarios if r % 2 == 0 else list(reversed(scenarios))
        for name, call in order:
            rnd = run_round(name, call, n, index=r, time_cap_s=time_cap_s, other_cpu=other_cpu,
                            collect=collect_each_round, others=others)
            out[name].append(rnd)
            if on_round is not None:
                on_round(rnd)
    return out


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A scenario over all its rounds."""

    scenario: str
    latency: Stats  # pooled samples
    n: int
    rps: float  # all requests over all round time
    rps_rounds: tuple[float, ...]
    client_cpu_us: float  # per request
    other_cpu_us: float | None
    client_cpu_us_rounds: tuple[float, ...]
    switches_per_req: float
    others_cpu_us: Mapping[str, float] = field(default_factory=dict)  # per request, by process name

    def as_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "latency_us": self.latency.us(),
            "rps": round(self.rps, 1),
            "rps_rounds": [round(x, 1) for x in self.rps_rounds],
            "client_cpu_us_per_req": round(self.client_cpu_us, 2),
            "client_cpu_us_per_req_rounds": [round(x, 2) for x in self.client_cpu_us_rounds],
            "upstream_cpu_us_per_req": None if self.other_cpu_us is None else round(self.other_cpu_us, 2),
            "context_switches_per_req": round(self.switches_per_req, 3),
            "process_cpu_us_per_req": {k: round(v, 2) for k, v in self.others_cpu_us.items()},
        }


def aggregate(rounds: Sequence[Round]) -> Aggregate:
    n = sum(r.n for r in rounds)
    wall = sum(r.wall_ns for r in rounds)
    others = [r.other_cpu_ns for r in rounds]
    other = None if any(o is None for o in others) else sum(o or 0 for o in others) / n / 1000
    return Aggregate(
        scenario=rounds[0].scenario,
        latency=Stats.of(s for r in rounds for s in r.samples_ns),
        n=n,
        rps=n * 1e9 / wall if wall else math.nan,
        rps_rounds=tuple(r.rps for r in rounds),
        client_cpu_us=sum(r.client_cpu_ns for r in rounds) / n / 1000,
        other_cpu_us=other,
        client_cpu_us_rounds=tuple(r.client_cpu_ns / r.n / 1000 for r in rounds),
        switches_per_req=sum(r.voluntary_switches + r.involuntary_switches for r in rounds) / n,
        others_cpu_us={k: sum(r.others_cpu_ns.get(k, 0) for r in rounds) / n / 1000 for k in rounds[0].others_cpu_ns},
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """``subject`` against ``baseline`` from the same run."""

    subject: str
    baseline: str
    rps_ratio: float  # median over rounds of subject rps / baseline rps of the same round
    rps_ratio_rounds: tuple[float, ...]
    added_p50_us: float
    added_p90_us: float
    added_p99_us: float
    added_client_cpu_us: float
    added_client_cpu_us_rounds: tuple[float, ...]
    added_p50_us_rounds: tuple[float, ...]  # per round: subject p50 - baseline p50 of the same round

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "baseline": self.baseline,
            "rps_ratio": round(self.rps_ratio, 4),
            "rps_ratio_rounds": [round(x, 4) for x in self.rps_ratio_rounds],
            "added_p50_us": round(self.added_p50_us, 2),
            "added_p90_us": round(self.added_p90_us, 2),
            "added_p99_us": round(self.added_p99_us, 2),
            "added_client_cpu_us_per_req": round(self.added_client_cpu_us, 2),
            "added_client_cpu_us_per_req_rounds": [round(x, 2) for x in self.added_client_cpu_us_rounds],
            "added_p50_us_rounds": [round(x, 2) for x in self.added_p50_us_rounds],
            "added_p50_us_median_of_rounds": round(statistics.median(self.added_p50_us_rounds), 2),
            "added_client_cpu_us_median_of_rounds": round(statistics.median(self.added_client_cpu_us_rounds), 2),
        }


def compare(subject: Sequence[Round], baseline: Sequence[Round]) -> Comparison:
    s, b = aggregate(subject), aggregate(baseline)
    ratios = tuple(x.rps / y.rps for x, y in zip(subject, baseline, strict=True))
    cpu = tuple(x - y for x, y in zip(s.client_cpu_us_rounds, b.client_cpu_us_rounds, strict=True))
    p50 = tuple((Stats.of(x.samples_ns).p50 - Stats.of(y.samples_ns).p50) / 1000
                for x, y in zip(subject, baseline, strict=True))
    return Comparison(
        subject=s.scenario,
        baseline=b.scenario,
        rps_ratio=statistics.median(ratios),
        rps_ratio_rounds=ratios,
        added_p50_us=(s.latency.p50 - b.latency.p50) / 1000,
        added_p90_us=(s.latency.p90 - b.latency.p90) / 1000,
        added_p99_us=(s.latency.p99 - b.latency.p99) / 1000,
        added_client_cpu_us=s.client_cpu_us - b.client_cpu_us,
        added_client_cpu_us_rounds=cpu,
        added_p50_us_rounds=p50,
    )


# -- micro-benchmarks -----------------------------------------------------------------------


CLOCKS: dict[str, Callable[[], int]] = {"cpu": time.thread_time_ns, "wall": time.perf_counter_ns}


def _loop(fn: Callable[..., object], args: tuple[Any, ...], count: int, clock: Callable[[], int]) -> int:
    """``count`` calls of ``fn(*args)``, unrolled by arity so no ``*args`` cost is measured; ns."""
    r = range(count)
    if len(args) == 0:
        t0 = clock()
        for _ in r:
            fn()
        return clock() - t0
    if len(args) == 1:
        (a,) = args
        t0 = clock()
        for _ in r:
            fn(a)
        return clock() - t0
    if len(args) == 2:
        a, b = args
        t0 = clock()
        for _ in r:
            fn(a, b)
        return clock() - t0
    if len(args) == 3:
        a, b, c = args
        t0 = clock()
        for _ in r:
            fn(a, b, c)
        return clock() - t0
    t0 = clock()
    for _ in r:
        fn(*args)
    return clock() - t0


def per_call_ns(
    fn: Callable[..., object],
    args: tuple[Any, ...] = (),
    *,
    batch: int = 1000,
    batches: int = 100,
    time_cap_s: float = 5.0,
    warmup: int = 1000,
    clock: str = "cpu",
) -> list[float]:
    """Per-call ns of each batch of ``batch`` calls; at most ``batches`` batches or ``time_cap_s``.

    ``clock``: "cpu" (this thread's CPU time, ``time.thread_time_ns``) or "wall"
    (``time.perf_counter_ns``). CPU time leaves out the slices in which other processes
    ran, which on a shared machine is most of the noise in wall time. The garbage
    collector stays on (httpx and pymesh allocate on the request path; a benchmark
    without GC would hide that cost) but is run before the first batch.
    """
    read = CLOCKS[clock]
    _loop(fn, args, warmup, read)
    gc.collect()
    out: list[float] = []
    deadline = time.perf_counter_ns() + int(time_cap_s * 1e9)
    for _ in range(batches):
        out.append(_loop(fn, args, batch, read) / batch)
        if time.perf_counter_ns() > deadline:
            break
    return out


# -- reporting ------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, align: str | None = None) -> str:
    """A plain-text table; ``align`` is one character per column, "<" or ">" (default: text left)."""
    body = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    aligns = align or "<" + ">" * (len(headers) - 1)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "<" else c.rjust(w) for c, w, a in zip(cells, widths, aligns, strict=True))

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in body)])


def _cell(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine(extra_versions: Iterable[str] = ()) -> dict[str, Any]:
    """Where a result was produced: CPU, kernel, Python, library versions, source revision."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str] = {}
    for name in ("httpx", "httpcore", "h11", *extra_versions):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "-"
    return {
        "cpu_model": _cpu_model(),
        "cpus_online": os.cpu_count(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "versions": versions,
        "git_revision": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
        "pymesh_source_sha256": _source_digest(),
    }


def _source_digest() -> str:
    """A digest of pymesh's sources, to tell apart runs of an uncommitted work tree."""
    import hashlib

    root = Path(__file__).resolve().parent.parent / "pymesh"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON, creating the folder; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, out)
    return out
