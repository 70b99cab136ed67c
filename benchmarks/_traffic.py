"""Request scenarios: the routing decision, routed GETs (pymesh, bare httpx, Envoy), the flaky upstream,
async engines."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from benchmarks import resilience, routing
from benchmarks._env import (
    FLAKY_RATE,
    Env,
    comparisons,
    mesh_url,
    ok_getter,
    progress,
    tally_getter,
    with_totals,
)
from benchmarks._harness import Round, aggregate, interleave, per_call_ns
from pymesh import Mesh

ASYNC_TASKS = (1, 4, 16, 64)


# -- scenarios --------------------------------------------------------------------------------


def sc_decision(env: Env, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Routing decision alone at 1 / 100 / 1,000 / 10,000 VirtualServices (``routing.bench_decision``)."""
    rs = env.s.routing()
    meshes: dict[int, Mesh] = {}
    load_s: dict[int, float] = {}
    try:
        for count in env.s.decision_counts:
            env.log(f"  loading {count:,} services ({3 * count:,} resources)")
            meshes[count], load_s[count] = routing.build_mesh(count, env.upstream.port)
        try:
            out = routing.bench_decision(meshes, load_s, rs, env.log)
            out["level"] = "router.decide (internal) and mesh.route (public)"
        except (AttributeError, ImportError, TypeError) as exc:
            out = _decision_public(meshes, load_s, rs)
            out["level"] = f"mesh.route only (internal decide unavailable: {exc!r})"
        return {"status": "ok", **out}
    finally:
        for m in meshes.values():
            m.close()
        meshes.clear()
        gc.collect()


def _decision_public(meshes: dict[int, Mesh], load_s: dict[int, float], rs: routing.Settings) -> dict[str, Any]:
    rows = []
    for count, mesh in meshes.items():
        route_ns: dict[str, Any] = {}
        for variant, (path, headers, _) in routing.VARIANTS.items():
            values = per_call_ns(mesh.route, ("GET", routing.target_url(count, path), headers or None),
                                 batch=rs.route_batch, batches=rs.route_batches, warmup=100)
            route_ns[variant] = {"median": round(statistics.median(values), 1), "batches": len(values)}
        rows.append({"virtual_services": count, "load_s": round(load_s[count], 3), "route_ns": route_ns})
    return {"method": "median over batches of mesh.route() calls, thread CPU time", "rows": rows}


def sc_routed_get(env: Env, stack: contextlib.ExitStack, mesh: Mesh) -> dict[str, Any]:
    """Plain and resilient routed GETs: pymesh vs bare httpx vs httpx → Envoy, interleaved."""
    s = env.s
    up = env.upstream
    bare = stack.enter_context(httpx.Client(trust_env=False))
    client = stack.enter_context(mesh.client(trust_env=False))
    weighted = routing.target_url(s.http_services)
    scenarios: list[tuple[str, Callable[[], None]]] = [
        ("bare", ok_getter(bare, f"http://localhost:{up.port}/")),
        ("pymesh", ok_getter(client, mesh_url("plain"))),
        ("pymesh-weighted", ok_getter(client, weighted)),
        ("pymesh-resilient", ok_getter(client, mesh_url("resilient"))),
    ]
    if env.envoy is not None:
        via = stack.enter_context(httpx.Client(trust_env=False))
        via_res = stack.enter_context(httpx.Client(trust_env=False))
        scenarios += [("envoy", ok_getter(via, f"http://localhost:{env.envoy.ports['plain']}/")),
                      ("envoy-resilient", ok_getter(via_res, f"http://localhost:{env.envoy.ports['resilient']}/"))]
    results = interleave(scenarios, rounds=s.http_rounds, n=s.http_requests, warmup=s.http_warmup,
                         time_cap_s=s.round_cap_s, others=env.others(),
                         on_round=progress(env.log, s.http_rounds, "routed GET"))
    raw = routing._RawClient(up.port)
    try:
        results |= interleave([("raw-socket", raw)], rounds=s.raw_rounds, n=4 * s.http_requests,
                              warmup=s.http_warmup, time_cap_s=s.round_cap_s, others=env.others())
    finally:
        raw.close()
    aggs = {name: aggregate(rounds).as_json() for name, rounds in results.items()}
    with_totals(aggs)
    pairs = [("pymesh", "bare"), ("pymesh-weighted", "bare"), ("pymesh-resilient", "bare"), ("envoy", "bare"),
             ("envoy-resilient", "bare"), ("pymesh-resilient", "pymesh"), ("envoy-resilient", "envoy")]
    out: dict[str, Any] = {
        "status": "ok",
        "method": f"closed loop, one keep-alive connection per scenario, {s.http_rounds} interleaved rounds of "
                  f"{s.http_requests} requests (cap {s.round_cap_s:g} s), {s.http_warmup} warm-up each",
        "urls": {"bare": f"http://localhost:{up.port}/", "pymesh": mesh_url("plain"), "pymesh-weighted": weighted,
                 "pymesh-resilient": mesh_url("resilient"),
                 "envoy": "httpx → Envoy listener 'plain' → upstream" if env.envoy else None},
        "mesh_services": s.http_services,
        "scenarios": aggs,
        "comparisons": comparisons(results, pairs, aggs),
        "upstream_headroom": round(aggs["raw-socket"]["rps"] / aggs["pymesh"]["rps"], 1),
        "envoy_note": env.envoy_note or None,
    }
    out["in_memory"] = _in_memory(env, mesh)
    return out


def _in_memory(env: Env, mesh: Mesh) -> dict[str, Any]:
    """pymesh's own work per request with the httpcore pools stubbed (internal seams; guarded)."""
    rs = env.s.routing()
    try:
        plain = routing.bench_in_memory(mesh, env.s.http_services, env.upstream.port, rs, "localhost")
        if "missing" in plain:
            return {"status": "unavailable", "reason": plain["missing"]}
        res: dict[str, Any] = {}
        with resilience._stubbed(mesh) as calls:
            for level in ("transport", "client"):
                p, r = routing._paired(calls[f"{level} plain"], calls[f"{level} resilient"], rs.memory_rounds,
                                       rs.memory_batch, "cpu")
                deltas = [b - a for a, b in zip(p, r, strict=True)]
                res[level] = {"plain_us": round(statistics.median(p) / 1000, 2),
                              "resilient_us": round(statistics.median(r) / 1000, 2),
                              "added_us": round(statistics.median(deltas) / 1000, 2)}
        return {"status": "ok", "weighted_vs_bare": plain, "resilient_vs_plain": res}
    except (LookupError, AttributeError, ImportError, TypeError, RuntimeError) as exc:
        return {"status": "unavailable", "reason": f"internal seam changed: {exc!r}"}


def sc_flaky(env: Env, stack: contextlib.ExitStack, mesh: Mesh) -> dict[str, Any]:
    """10 %-503 upstream with 3 retries on 503: pymesh vs Envoy (default 25 ms backoff), and bare (no retries)."""
    s = env.s
    tallies: dict[str, list[int]] = {}
    bare = stack.enter_context(httpx.Client(trust_env=False))
    client = stack.enter_context(mesh.client(trust_env=False))
    scenarios: list[tuple[str, Callable[[], None]]] = []
    for name, c, url in (("bare (no retries)", bare, f"http://localhost:{env.flaky.port}/"),
                         ("pymesh", client, mesh_url("flaky"))):
        tallies[name] = [0, 0]
        scenarios.append((name, tally_getter(c, url, tallies[name])))
    if env.envoy is not None:
        via = stack.enter_context(httpx.Client(trust_env=False))
        tallies["envoy"] = [0, 0]
        scenarios.append(("envoy", tally_getter(via, f"http://localhost:{env.envoy.ports['flaky']}/",
                                                 tallies["envoy"])))
    for _, call in scenarios:
        for _ in range(20):
            call()
    for t in tallies.values():
        t[:] = [0, 0]
    envoy_before = env.envoy.stats("cluster.flaky.upstream_rq") if env.envoy else {}
    others = {"flaky-upstream": env.flaky.cpu_ns, **({"envoy": env.envoy.cpu_ns} if env.envoy else {})}
    results = interleave(scenarios, rounds=s.flaky_rounds, n=s.flaky_requests, warmup=0,
                         time_cap_s=s.round_cap_s, others=others)
    aggs = {name: aggregate(rounds).as_json() for name, rounds in results.items()}
    with_totals(aggs)
    for name, (good, total) in tallies.items():
        aggs[name]["success_rate"] = round(good / total, 5) if total else math.nan
    out: dict[str, Any] = {
        "status": "ok", "failure_rate": FLAKY_RATE,
        "retry": "pymesh: attempts 3, retryOn 503 (default 25 ms backoff); Envoy: num_retries 3 on "
                 "retriable-status-codes [503], default backoff (25 ms base, 250 ms max)",
        "scenarios": aggs,
        "comparisons": comparisons(results, [("pymesh", "bare (no retries)"), ("envoy", "bare (no retries)"),
                                              ("pymesh", "envoy")], aggs),
    }
    if env.envoy is not None:
        after = env.envoy.stats("cluster.flaky.upstream_rq")
        out["envoy_retries"] = after.get("cluster.flaky.upstream_rq_retry", 0) - envoy_before.get(
            "cluster.flaky.upstream_rq_retry", 0)
    return out


# -- async ------------------------------------------------------------------------------------


AsyncCall = Callable[[], Awaitable[None]]


async def _async_round(name: str, call: AsyncCall, n: int, tasks: int, index: int, cap_s: float,
                       others: dict[str, Callable[[], int]]) -> Round:
    samples: list[int] = []
    clock = time.perf_counter_ns
    per_task = max(1, n // tasks)
    deadline = clock() + int(cap_s * 1e9)
    capped = False

    async def worker() -> None:
        nonlocal capped
        for _ in range(per_task):
            t0 = clock()
            await call()
            t1 = clock()
            samples.append(t1 - t0)
            if t1 > deadline:
                capped = True
                return

    gc.collect()
    named0 = {k: f() for k, f in others.items()}
    cpu0 = time.process_time_ns()
    start = clock()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    wall = clock() - start
    cpu1 = time.process_time_ns()
    named1 = {k: f() for k, f in others.items()}
    return Round(scenario=name, index=index, n=len(samples), wall_ns=wall, client_cpu_ns=cpu1 - cpu0,
                 other_cpu_ns=None, samples_ns=samples, capped=capped,
                 others_cpu_ns={k: named1[k] - named0[k] for k in named0})


async def _async_engines(env: Env, mesh: Mesh, stack: contextlib.AsyncExitStack
                         ) -> tuple[dict[str, AsyncCall], dict[str, str]]:
    up = env.upstream.port
    bare_url = f"http://localhost:{up}/"
    engines: dict[str, AsyncCall] = {}
    notes: dict[str, str] = {}

    def httpx_call(client: httpx.AsyncClient, url: str) -> AsyncCall:
        async def call() -> None:
            r = await client.get(url)
            if r.status_code != 200:
                raise RuntimeError(f"GET {url}: {r.status_code}")
        return call

    bare = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
    engines["httpx.AsyncClient"] = httpx_call(bare, bare_url)
    pm = await stack.enter_async_context(mesh.async_client(trust_env=False))
    engines["pymesh async_client"] = httpx_call(pm, mesh_url("plain"))
    try:
        aiohttp: Any = importlib.import_module("aiohttp")
    except ImportError:
        notes["aiohttp"] = "not installed (pip install aiohttp)"
    else:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), trust_env=False))

        async def aio_call() -> None:
            async with session.get(bare_url) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET {bare_url}: {r.status}")

        engines["aiohttp ClientSession"] = aio_call
        try:
            hx_aio: Any = importlib.import_module("httpx_aiohttp")
        except ImportError:
            notes["httpx-aiohttp"] = "not installed (pip install httpx-aiohttp)"
        else:
            over = await stack.enter_async_context(httpx.AsyncClient(transport=hx_aio.AiohttpTransport(),
                                                                     trust_env=False))
            engines["httpx + aiohttp transport"] = httpx_call(over, bare_url)
    return engines, notes


def sc_async(env: Env, stack: contextlib.ExitStack, mesh: Mesh) -> dict[str, Any]:
    """Async at 1 / 4 / 16 / 64 tasks: pymesh's async client vs bare httpx.AsyncClient vs aiohttp."""
    s = env.s

    notes: dict[str, str] = {}

    async def main() -> dict[str, list[Round]]:
        async with contextlib.AsyncExitStack() as astack:
            engines, found = await _async_engines(env, mesh, astack)
            notes.update(found)
            combos = [(f"{e} @{t}", e, t) for e in engines for t in ASYNC_TASKS]
            for _, engine, tasks in combos:  # warm-up: open every connection the round will use
                await asyncio.gather(*(engines[engine]() for _ in range(tasks)))
                await asyncio.gather(*(engines[engine]() for _ in range(2 * tasks)))
            out: dict[str, list[Round]] = {name: [] for name, _, _ in combos}
            for r in range(s.async_rounds):
                for name, engine, tasks in combos if r % 2 == 0 else combos[::-1]:
                    out[name].append(await _async_round(name, engines[engine], s.async_requests, tasks, r,
                                                        s.round_cap_s, {"upstream": env.upstream.cpu_ns}))
                env.log(f"  async round {r + 1}/{s.async_rounds}")
            return out

    results = asyncio.run(main())
    rows: list[dict[str, Any]] = []
    for name, rounds in results.items():
        engine, _, tasks = name.rpartition(" @")
        a = aggregate(rounds).as_json()
        a["engine"], a["tasks"] = engine, int(tasks)
        a["capped_rounds"] = sum(r.capped for r in rounds)
        rows.append(a)
    by = {(r["engine"], r["tasks"]): r for r in rows}
    scaling = {}
    for engine in {r["engine"] for r in rows}:
        one, sixteen = by.get((engine, 1)), by.get((engine, 16))
        if one and sixteen:
            scaling[engine] = {"cpu_per_req_16_over_1": round(sixteen["client_cpu_us_per_req"]
                                                              / one["client_cpu_us_per_req"], 3),
                               "rps_at_16": sixteen["rps"], "p99_us_at_16": sixteen["latency_us"]["p99"]}
    return {"status": "ok",
            "method": f"{s.async_requests} requests per (engine, tasks) per round split over the tasks, "
                      f"{s.async_rounds} interleaved rounds, one event loop; client CPU = process_time",
            "rows": rows, "scaling": scaling, "notes": notes}


