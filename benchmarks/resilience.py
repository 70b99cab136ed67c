"""Resilience benchmarks: the success-path cost of retries/timeouts/limits, a retry storm, a flaky upstream.

Run from the repository root::

    python -m benchmarks.resilience            # full: 10,000 storm requests, more rounds (~3.5 min)
    python -m benchmarks.resilience --quick    # about 45 s: 2,000 storm requests
    python -m benchmarks.resilience --pin      # client and upstream pinned to one CPU
    python -m benchmarks.resilience --json out.json

One upstream (this module run with ``--serve``, its own process) answers by path: ``/fail``
always 503, ``/flaky`` 503 with probability 0.1 (seeded), anything else ``200 ok``; it counts
arrivals per path (``/__stats`` reports them, ``/__reset`` zeroes them; neither is counted).

(a) Success-path overhead. The same GET through ``mesh.client()`` to two hosts of one mesh:
    ``plain`` (a VirtualService route with no ``retries`` block, so Istio's default retry
    policy applies, no timeout, no DestinationRule) and ``resilient`` (retries attempts 3,
    perTryTimeout 2s, retryOn 5xx; timeout 10s; a DestinationRule with outlierDetection and
    connectionPool limits). In memory first (the httpcore pools stubbed, as
    ``benchmarks.routing`` part (c)), at transport and at client level, then over loopback
    (``_harness.interleave``). Targets: resilient - plain <= 2 µs (perf-anchors) and < 10 %.
(b) Retry storm. ``/fail`` with retries attempts 5, retryOn 5xx, backoff 1 ms, N requests from
    8 threads: upstream arrivals / requests with the cluster's default retry budget (ratio
    0.2, 10 retries/s floor, 10 s window) vs the budget replaced by
    ``RetryBudget(ratio=1e9, min_per_second=1e9)`` (effectively off). Expected: 6x without,
    about 1.2x plus the floor with.
(c) Flaky upstream. ``/flaky`` (10 % 503) vs ``/ok`` on the same route (retries attempts 3,
    retryOn 503, Envoy's default 25 ms backoff): success rate, arrivals per request, added
    p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks._harness import aggregate, compare, interleave, machine, pick_cpu, pin, table, write_json
from benchmarks._upstream import UpstreamProcess
from benchmarks.routing import _getter, _handler, _median, _paired, _spread, _stub_pools
from pymesh import Mesh
from pymesh.config.load import Text

NS = "bench"
PORT = 8080
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "resilience.json"
FLAKY_RATE = 0.1
STORM_THREADS = 8
TARGETS = {"added_cpu_us_max": 2.0, "added_ratio_max": 0.10}


def host(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


def url(name: str, path: str = "/ok") -> str:
    return f"http://{host(name)}:{PORT}{path}"


# -- the upstream -----------------------------------------------------------------------------


class _Server(asyncio.Protocol):
    """HTTP/1.1 keep-alive: answer by path and count arrivals per path (bodyless GETs only)."""

    counts: dict[str, int] = {}
    rng = random.Random(7)

    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        out: list[bytes] = []
        while (end := self._buf.find(b"\r\n\r\n")) >= 0:
            head, self._buf = self._buf[:end], self._buf[end + 4 :]
            parts = head.split(b" ", 2)
            path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) > 1 else "/"
            out.append(self._answer(path))
        if out and self._transport is not None:
            self._transport.write(b"".join(out))

    def _answer(self, path: str) -> bytes:
        counts = _Server.counts
        if path == "/__stats":
            return _response(200, json.dumps(counts).encode())
        if path == "/__reset":
            counts.clear()
            return _response(200, b"{}")
        counts[path] = counts.get(path, 0) + 1
        if path == "/fail" or (path == "/flaky" and _Server.rng.random() < FLAKY_RATE):
            return _response(503, b"unavailable")
        return _response(200, b"ok")

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _response(status: int, body: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Service Unavailable"
    return (b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n" % (status, reason, len(body))
            + body)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fd = sys.stdin.fileno()
    os.set_blocking(fd, False)

    def on_stdin() -> None:
        with contextlib.suppress(BlockingIOError):
            if not os.read(fd, 4096):
                stop.set()  # the parent went away

    loop.add_reader(fd, on_stdin)
    server = await loop.create_server(_Server, "127.0.0.1", 0, reuse_address=True, backlog=256)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(fd)
        server.close()


class Upstream(UpstreamProcess):
    """``UpstreamProcess`` running this module's counting server instead of the fixed-answer one."""

    def start(self) -> Upstream:
        import subprocess

        args = [sys.executable, "-m", "benchmarks.resilience", "--serve"]
        if self.cpu is not None:
            args += ["--serve-cpu", str(self.cpu)]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        self._proc = proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:
            self.port = self._read_port(proc)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Upstream:
        return self.start()

    def _get(self, path: str) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            data: dict[str, int] = json.loads(r.read())
        return data

    def stats(self) -> dict[str, int]:
        return self._get("/__stats")

    def reset(self) -> None:
        self._get("/__reset")


# -- the mesh ---------------------------------------------------------------------------------


def _entry(name: str, port: int) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {NS}}}
spec:
  hosts: [{host(name)}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"""


def _route(name: str, extra: str = "") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {NS}}}
spec:
  hosts: [{host(name)}]
  http:
  - name: default
    route: [{{destination: {{host: {host(name)}}}}}]
{extra}"""


RESILIENT_DR = f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: resilient, namespace: {NS}}}
spec:
  host: {host("resilient")}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 2s}}
      http: {{http1MaxPendingRequests: 100, http2MaxRequests: 1000, maxRetries: 10}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}}
"""


def build_mesh(port: int) -> Mesh:
    docs = [
        _entry("plain", port), _route("plain"),
        _entry("resilient", port), RESILIENT_DR,
        _route("resilient", "    timeout: 10s\n    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}\n"),
        _entry("storm-budget", port),
        _route("storm-budget", "    retries: {attempts: 5, retryOn: 5xx, backoff: 1ms}\n"),
        _entry("storm-nobudget", port),
        _route("storm-nobudget", "    retries: {attempts: 5, retryOn: 5xx, backoff: 1ms}\n"),
        _entry("flaky", port), _route("flaky", "    retries: {attempts: 3, retryOn: \"503\"}\n"),
    ]
    return Mesh([Text("---\n".join(docs), "<resilience benchmark>")], namespace=NS)


def _check(mesh: Mesh) -> dict[str, Any]:
    """The compiled policies of each route, to show what was measured (and catch a config mistake)."""
    out: dict[str, Any] = {}
    for name in ("plain", "resilient", "storm-budget", "flaky"):
        outcome = mesh._live.router.decide(_info(url(name)), mesh._runtime.rng)
        assert outcome.route is not None, name
        p = outcome.route.retry_policy
        out[name] = {"attempts": p.attempts, "retry_on": sorted(p.retry_on),
                     "retriable_status_codes": sorted(p.retriable_status_codes), "per_try_timeout": p.per_try_timeout,
                     "backoff_base_s": p.backoff_base, "timeout_s": outcome.route.timeout}
    return out


def _info(u: str) -> Any:
    from pymesh.outbound.transport import request_info

    with httpx.Client(trust_env=False) as c:
        return request_info(c.build_request("GET", u))


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    memory_rounds: int
    memory_batch: int
    http_rounds: int
    http_requests: int
    storm_requests: int
    flaky_rounds: int
    flaky_requests: int

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, 12, 200, 10, 300, 2000, 6, 300)
        return cls(False, 40, 300, 40, 500, 10_000, 20, 500)


# -- (a) success-path overhead ------------------------------------------------------------------


@contextlib.contextmanager
def _stubbed(mesh: Mesh) -> Iterator[dict[str, Callable[[], None]]]:
    """plain/resilient GETs at client and transport level, with the httpcore pools stubbed."""
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(mesh.client(trust_env=False))
        transport = stack.enter_context(mesh.transport())
        calls: dict[str, Callable[[], None]] = {}
        for name in ("plain", "resilient"):
            calls[f"client {name}"] = get = _getter(client, url(name))
            calls[f"transport {name}"] = handle = _handler(transport, client.build_request("GET", url(name)))
            get()  # each creates its endpoint pool over the network first
            handle()
        _stub_pools(client._transport)
        _stub_pools(transport)
        yield calls


def bench_overhead(mesh: Mesh, upstream: Upstream, s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    memory: dict[str, Any] = {}
    with _stubbed(mesh) as calls:
        for level in ("transport", "client"):
            plain, res = _paired(calls[f"{level} plain"], calls[f"{level} resilient"], s.memory_rounds,
                                 s.memory_batch, "cpu")
            deltas = [r - p for r, p in zip(res, plain, strict=True)]
            ratios = [r / p for r, p in zip(res, plain, strict=True)]
            lo, hi = _spread(deltas)
            memory[level] = {
                "plain_us": round(_median(plain) / 1000, 2), "resilient_us": round(_median(res) / 1000, 2),
                "added_us": round(_median(deltas) / 1000, 2),
                "added_us_p10_p90": [round(lo / 1000, 2), round(hi / 1000, 2)],
                "ratio": round(_median(ratios), 4),
            }
            log(f"  in memory, {level}: +{memory[level]['added_us']:.2f} µs")
    with mesh.client(trust_env=False) as client:
        scenarios = [("plain", _getter(client, url("plain"))), ("resilient", _getter(client, url("resilient")))]
        rounds = interleave(scenarios, rounds=s.http_rounds, n=s.http_requests, warmup=200,
                            other_cpu=upstream.cpu_ns)
    aggs = {k: aggregate(v).as_json() for k, v in rounds.items()}
    cmp = compare(rounds["resilient"], rounds["plain"]).as_json()
    cmp["client_cpu_ratio"] = round(aggs["resilient"]["client_cpu_us_per_req"]
                                    / aggs["plain"]["client_cpu_us_per_req"], 4)
    return {
        "method": f"in memory: httpcore pools stubbed, {s.memory_rounds} rounds alternating order, each the median "
                  f"of 3 batches of {s.memory_batch}, thread CPU time; loopback: {s.http_rounds} interleaved "
                  f"rounds of {s.http_requests} requests, one keep-alive connection per host, process CPU time",
        "in_memory": memory,
        "loopback": {"scenarios": aggs, "resilient_vs_plain": cmp},
    }


# -- (b) retry storm --------------------------------------------------------------------------


def _storm(mesh: Mesh, name: str, n: int) -> tuple[dict[int, int], float]:
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    target = url(name, "/fail")

    def worker(count: int) -> None:
        mine: dict[int, int] = {}
        with mesh.client(trust_env=False) as client:
            for _ in range(count):
                code = client.get(target).status_code
                mine[code] = mine.get(code, 0) + 1
        with lock:
            for k, v in mine.items():
                statuses[k] = statuses.get(k, 0) + v

    shares = [n // STORM_THREADS + (1 if i < n % STORM_THREADS else 0) for i in range(STORM_THREADS)]
    threads = [threading.Thread(target=worker, args=(c,)) for c in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses, time.perf_counter() - t0


def bench_storm(mesh: Mesh, upstream: Upstream, s: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    from pymesh.outbound.resilience.budget import RetryBudget  # internal: swapped in to switch the budget off

    with mesh.client(trust_env=False) as client:  # creates both clusters' runtime state (200s: no retries)
        for name in ("storm-budget", "storm-nobudget"):
            if client.get(url(name)).status_code != 200:
                raise RuntimeError(f"warm-up GET to {name} failed")
    replaced = 0
    for entry in mesh._runtime._entries.values():
        if entry.cluster.key.host == host("storm-nobudget"):
            entry.budget = RetryBudget(ratio=1e9, min_per_second=1e9)
            replaced += 1
    if not replaced:
        raise RuntimeError("no runtime entry for storm-nobudget")
    default = RetryBudget()
    out: dict[str, Any] = {"requests": s.storm_requests, "threads": STORM_THREADS, "retry_attempts": 5,
                           "backoff_base_s": 0.001, "default_budget": {"ratio": default.ratio,
                                                                       "min_per_second": default.min_per_second,
                                                                       "ttl_s": default.ttl}}
    for label, name in (("no budget", "storm-nobudget"), ("default budget", "storm-budget")):
        upstream.reset()
        statuses, took = _storm(mesh, name, s.storm_requests)
        arrivals = upstream.stats().get("/fail", 0)
        row: dict[str, Any] = {"host": host(name), "arrivals": arrivals,
                               "amplification": round(arrivals / s.storm_requests, 3),
                               "statuses": {str(k): v for k, v in sorted(statuses.items())},
                               "duration_s": round(took, 2)}
        if name == "storm-budget":
            # ratio x requests, plus the floor: min_per_second x ttl up front, then min_per_second each second
            bound = s.storm_requests * (1 + default.ratio) + default.min_per_second * (default.ttl + took)
            row["expected_max_arrivals"] = round(bound)
            row["expected_max_amplification"] = round(bound / s.storm_requests, 3)
        out[label] = row
        log(f"  storm {label}: {arrivals:,} arrivals for {s.storm_requests:,} requests "
            f"({row['amplification']:.2f}x) in {took:.1f} s")
    return out


# -- (c) flaky upstream -----------------------------------------------------------------------


def bench_flaky(mesh: Mesh, upstream: Upstream, s: Settings) -> dict[str, Any]:
    ok: dict[str, list[int]] = {"0% failures": [0, 0], "10% 503": [0, 0]}

    def getter(client: httpx.Client, target: str, tally: list[int]) -> Callable[[], None]:
        def call() -> None:
            tally[1] += 1
            if client.get(target).status_code == 200:
                tally[0] += 1
        return call

    with mesh.client(trust_env=False) as client:
        scenarios = [("0% failures", getter(client, url("flaky", "/ok"), ok["0% failures"])),
                     ("10% 503", getter(client, url("flaky", "/flaky"), ok["10% 503"]))]
        for _, call in scenarios:  # warm-up outside the tallies and the arrival counts
            for _ in range(100):
                call()
        upstream.reset()
        for tally in ok.values():
            tally[:] = [0, 0]
        rounds = interleave(scenarios, rounds=s.flaky_rounds, n=s.flaky_requests, warmup=0)
    arrivals = upstream.stats()
    out: dict[str, Any] = {"failure_rate": FLAKY_RATE, "retry": "attempts 3, retryOn 503, backoff 25 ms (default)",
                           "scenarios": {}}
    for name, path in (("0% failures", "/ok"), ("10% 503", "/flaky")):
        good, total = ok[name]
        agg = aggregate(rounds[name]).as_json()
        out["scenarios"][name] = {"requests": total, "success_rate": round(good / total, 5),
                                  "arrivals_per_request": round(arrivals.get(path, 0) / total, 4),
                                  "latency_us": agg["latency_us"],
                                  "client_cpu_us_per_req": agg["client_cpu_us_per_req"]}
    out["flaky_vs_ok"] = compare(rounds["10% 503"], rounds["0% failures"]).as_json()
    return out


# -- report -----------------------------------------------------------------------------------


def check_targets(a: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for level in ("transport", "client"):
        m = a["in_memory"][level]
        out.append({"target": f"added client CPU, in memory ({level})", "value": m["added_us"], "unit": "µs/req",
                    "limit": TARGETS["added_cpu_us_max"], "pass": m["added_us"] <= TARGETS["added_cpu_us_max"]})
        extra = m["ratio"] - 1
        out.append({"target": f"extra per request, in memory ({level})", "value": round(100 * extra, 2),
                    "unit": "%", "limit": 100 * TARGETS["added_ratio_max"],
                    "pass": extra < TARGETS["added_ratio_max"]})
    c = a["loopback"]["resilient_vs_plain"]
    extra = c["client_cpu_ratio"] - 1
    out.append({"target": "extra client CPU per request, loopback", "value": round(100 * extra, 2), "unit": "%",
                "limit": 100 * TARGETS["added_ratio_max"], "pass": extra < TARGETS["added_ratio_max"]})
    return out


def report(p: dict[str, Any]) -> None:
    m = p["machine"]
    print(f"\npymesh resilience benchmark ({p['mode']}), {m['cpu_model']}, {m['cpus_online']} CPUs, "
          f"Python {m['python']}, httpx {m['versions']['httpx']}")
    a = p["overhead"]
    print("\n(a) Success path: plain route (default retry policy, no DR) vs retries + timeout + DR "
          "(outlierDetection, connectionPool)")
    rows: list[list[object]] = []
    for level in ("transport", "client"):
        r = a["in_memory"][level]
        lo, hi = r["added_us_p10_p90"]
        rows.append([f"in memory, {level}", r["plain_us"], r["resilient_us"], f"{r['added_us']:+.2f}",
                     f"{lo:+.2f} to {hi:+.2f}", f"{100 * (r['ratio'] - 1):+.1f}%"])
    lb = a["loopback"]
    c = lb["resilient_vs_plain"]
    rows.append(["loopback, client CPU", lb["scenarios"]["plain"]["client_cpu_us_per_req"],
                 lb["scenarios"]["resilient"]["client_cpu_us_per_req"], f"{c['added_client_cpu_us_per_req']:+.2f}",
                 f"{min(c['added_client_cpu_us_per_req_rounds']):+.1f} to "
                 f"{max(c['added_client_cpu_us_per_req_rounds']):+.1f}", f"{100 * (c['client_cpu_ratio'] - 1):+.1f}%"])
    print(table(["measure", "plain µs", "resilient µs", "added µs", "rounds p10-p90 (loopback: min-max)", "extra"],
                rows))
    print(f"loopback latency: p50 {lb['scenarios']['plain']['latency_us']['p50']:.1f} vs "
          f"{lb['scenarios']['resilient']['latency_us']['p50']:.1f} µs (added {c['added_p50_us']:+.1f}), "
          f"p99 added {c['added_p99_us']:+.1f} µs; rps ratio {c['rps_ratio']:.3f}")

    b = p["storm"]
    print(f"\n(b) Retry storm: {b['requests']:,} requests from {b['threads']} threads to an upstream answering 503 "
          "to all, retries attempts 5, retryOn 5xx, backoff 1 ms")
    rows = []
    for label in ("no budget", "default budget"):
        r = b[label]
        rows.append([label, f"{r['arrivals']:,}", f"{r['amplification']:.2f}x",
                     f"{r.get('expected_max_amplification', 6.0):.2f}x", r["duration_s"],
                     ", ".join(f"{k}: {v:,}" for k, v in r["statuses"].items())])
    print(table(["retry budget", "upstream arrivals", "amplification", "expected max", "seconds", "answers"], rows))
    d = b["default_budget"]
    print(f"default budget: ratio {d['ratio']}, floor {d['min_per_second']:g} retries/s over a {d['ttl_s']:g} s "
          "window; expected max = requests x (1 + ratio) + floor x (window + duration)")

    f = p["flaky"]
    print(f"\n(c) Flaky upstream: {100 * f['failure_rate']:.0f}% 503 vs 0%, same route ({f['retry']}), closed loop")
    rows = []
    for name, r in f["scenarios"].items():
        lat = r["latency_us"]
        rows.append([name, f"{r['requests']:,}", f"{100 * r['success_rate']:.3f}%", r["arrivals_per_request"],
                     lat["p50"], lat["p90"], lat["p99"], lat["p999"]])
    print(table(["upstream", "requests", "success", "arrivals/req", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs"], rows))
    fc = f["flaky_vs_ok"]
    print(f"added by 10% 503 with retries: p50 {fc['added_p50_us']:+.1f} µs, p90 {fc['added_p90_us']:+.1f} µs, "
          f"p99 {fc['added_p99_us']:+.1f} µs")

    print("\nTargets (success-path overhead: issue < 10 % extra per request; perf-anchors <= 2 µs)")
    print(table(["target", "measured", "limit", ""],
                [[t["target"], f"{t['value']:g} {t['unit']}", f"{t['limit']:g} {t['unit']}",
                  "PASS" if t["pass"] else "MISS"] for t in p["targets"]], align="<>><"))


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.resilience",
                                description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="fewer rounds, 2,000 storm requests; about 20 s")
    p.add_argument("--json", type=Path, default=DEFAULT_OUT, metavar="PATH", help=f"default: {DEFAULT_OUT}")
    p.add_argument("--pin", nargs="?", type=int, const=-1, default=None, metavar="CPU",
                   help="pin the client and the upstream to one CPU (default: the highest allowed)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # run as the upstream
    p.add_argument("--serve-cpu", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = Settings.for_mode(args.quick)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    where = machine(("pymesh-istio", "tenacity"))
    cpu = None
    if args.pin is not None:
        cpu = pick_cpu() if args.pin < 0 else args.pin
        pin(cpu)
    payload: dict[str, Any] = {"benchmark": "resilience", "mode": "quick" if s.quick else "full", "argv": sys.argv,
                               "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": where,
                               "placement": {"cpu": cpu}, "targets_spec": TARGETS,
                               "loadavg_start": os.getloadavg()}
    with Upstream(cpu=cpu) as upstream:
        log(f"upstream pid {upstream.pid} on port {upstream.port}")
        mesh = build_mesh(upstream.port)
        try:
            payload["policies"] = _check(mesh)
            log("(a) success-path overhead")
            payload["overhead"] = bench_overhead(mesh, upstream, s, log)
            log("(b) retry storm")
            payload["storm"] = bench_storm(mesh, upstream, s, log)
            log("(c) flaky upstream")
            payload["flaky"] = bench_flaky(mesh, upstream, s)
        finally:
            mesh.close()
    payload["targets"] = check_targets(payload["overhead"])
    payload["loadavg_end"] = os.getloadavg()
    payload["duration_s"] = round(time.perf_counter() - started, 1)
    return payload


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        if args.serve_cpu is not None:
            os.sched_setaffinity(0, {args.serve_cpu})
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve())
        return 0
    try:
        payload = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; the upstream has been stopped", file=sys.stderr)
        return 130
    report(payload)
    load = payload["loadavg_start"][0], payload["loadavg_end"][0]
    cpus = payload["machine"]["cpus_online"] or 1
    if max(load) > 0.5 * cpus:
        print(f"\nnote: load average {load[0]:.2f} at start, {load[1]:.2f} at end on {cpus} CPUs: other work was "
              "running; the in-memory CPU figures hold up better than loopback ones")
    out = write_json(args.json, payload)
    print(f"\nwrote {out} ({payload['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
