"""Fresh-interpreter scenarios (config load, memory) and the pyinstrument profile of the routed path."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import load_config, routing
from benchmarks._env import (
    Env,
    ok_getter,
)
from pymesh import Mesh

# -- config load and memory (fresh interpreters) ----------------------------------------------


def sc_config_load(env: Env, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Loading 3 x N resources (``load_config``'s generated config), each run in a fresh interpreter."""
    s = env.s
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pymesh-bench-load-")))
    generated = load_config.generate(folder, s.load_count)
    timed = [load_config.run_worker(folder, "time", env.cpu) for _ in range(s.load_runs)]
    traced = load_config.run_worker(folder, "tracemalloc", env.cpu)
    return {"status": "ok", "services": s.load_count, "resources": timed[0]["resources"], "generated": generated,
            "from_path_s_median": round(statistics.median(r["seconds"] for r in timed), 3),
            "from_path_s_runs": [round(r["seconds"], 3) for r in timed],
            "cpu_s_median": round(statistics.median(r["cpu_seconds"] for r in timed), 3),
            "import_s": round(timed[0]["import_seconds"], 3),
            "rss_growth_mb": round(statistics.median(r["rss_delta_mb"] for r in timed), 1),
            "tracemalloc_peak_mb": round(traced["tracemalloc_peak_mb"], 1),
            "tracemalloc_retained_mb": round(traced["tracemalloc_retained_mb"], 1),
            "target": {"seconds": 2.0 * s.load_count / 1000, "mb": 200.0 * s.load_count / 1000}}


ROOT = Path(__file__).resolve().parent.parent


def _run_memory_worker(count: int, traced: bool, cpu: int | None) -> dict[str, Any]:
    args = [sys.executable, "-m", "benchmarks", "_memory", str(count)] + (["--traced"] if traced else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, check=False,
                          preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker failed: {proc.stderr[-1500:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def sc_memory(env: Env, stack: contextlib.ExitStack) -> dict[str, Any]:
    """pymesh's own RSS and memory per service (RSS delta and tracemalloc, two counts, fresh interpreters)."""
    lo, hi = env.s.memory_counts
    rss = {n: _run_memory_worker(n, False, env.cpu) for n in (lo, hi)}
    traced = {n: _run_memory_worker(n, True, env.cpu) for n in (lo, hi)}
    r_hi, r_lo = rss[hi], rss[lo]
    per_rss = (r_hi["mesh_rss_mb"] - r_lo["mesh_rss_mb"]) * 1024 / (hi - lo)
    per_traced = (traced[hi]["mesh_traced_mb"] - traced[lo]["mesh_traced_mb"]) * 1024 / (hi - lo)
    own = statistics.median(r["pymesh_used_mb"] - r["deps_mb"] for r in (*rss.values(), *traced.values()))
    return {"status": "ok", "counts": [lo, hi],
            "interpreter_mb": round(r_hi["interpreter_mb"], 1),
            "deps_imported_mb": round(r_hi["deps_mb"], 1),
            "pymesh_own_mb": round(own, 2),
            "pymesh_import_mb": round(r_hi["pymesh_import_mb"] - r_hi["deps_mb"], 2),
            "per_service_kb_rss": round(per_rss, 2), "per_service_kb_traced": round(per_traced, 2),
            "rows": [{"services": n, "mesh_rss_mb": round(rss[n]["mesh_rss_mb"], 2),
                      "mesh_traced_mb": round(traced[n]["mesh_traced_mb"], 2),
                      "mesh_traced_peak_mb": round(traced[n]["mesh_traced_peak_mb"], 2)} for n in (lo, hi)],
            "envoy_idle_rss_mb": env.envoy_idle_rss_mb,
            "envoy_rss_mb_end": round(env.envoy.rss_mb(), 1) if env.envoy is not None else None,
            "method": "RSS (/proc/self/status VmRSS) and tracemalloc in fresh interpreters; a mesh of N generated "
                      "services (3 resources each), every host routed once so its routes are compiled; per "
                      "service = slope between the two counts; pymesh's own = RSS after importing pymesh, "
                      "building a one-service mesh and a client, minus RSS after importing its dependencies "
                      "(median over the four interpreters)"}


# -- profile ----------------------------------------------------------------------------------


def profile_routed(env: Env, mesh: Mesh) -> dict[str, Any]:
    """pyinstrument over routed GETs through ``mesh.client()``: over loopback, and in memory when possible."""
    try:
        pyinstrument: Any = importlib.import_module("pyinstrument")
    except ImportError:
        return {"status": "skipped", "reason": "pyinstrument not installed (pip install pyinstrument)"}
    out: dict[str, Any] = {"status": "ok"}
    with mesh.client(trust_env=False) as client:
        out["loopback"] = _profile(pyinstrument, ok_getter(client, routing.target_url(env.s.http_services)),
                                   env.s.profile_requests, "over loopback")
    try:
        with routing.in_memory(mesh, env.s.http_services, env.upstream.port) as mem:
            out["in_memory"] = _profile(pyinstrument, mem.pymesh_get, env.s.profile_requests,
                                        "in memory (connections stubbed)")
    except (LookupError, AttributeError) as exc:
        out["in_memory"] = {"status": "unavailable", "reason": repr(exc)}
    out["target"] = routing.target_url(env.s.http_services)
    return out


def _profile(pyinstrument: Any, get: Callable[[], None], n: int, where: str) -> dict[str, Any]:
    for _ in range(200):
        get()
    prof = pyinstrument.Profiler(interval=0.0002)
    prof.start()
    for _ in range(n):
        get()
    prof.stop()
    session = prof.last_session
    root = session.root_frame()
    own: dict[tuple[str, str], float] = {}

    def walk(frame: Any, parent: tuple[str, str]) -> None:
        children = list(frame.children)
        # a synthetic frame ("[self]", "[await]") is time spent in the parent itself
        key = parent if frame.is_synthetic else (str(frame.function), f"{frame.file_path_short}:{frame.line_no}")
        self_time = frame.time - sum(c.time for c in children)
        own[key] = own.get(key, 0.0) + self_time
        for child in children:
            walk(child, key)

    walk(root, ("<root>", ""))
    total = root.time or math.nan
    top = sorted(own.items(), key=lambda kv: kv[1], reverse=True)[:20]
    ours = sorted(((k, v) for k, v in own.items() if k[1].startswith("pymesh/")), key=lambda kv: kv[1],
                  reverse=True)[:15]
    text = prof.output_text(unicode=True, color=False, show_all=False)
    return {"status": "ok", "requests": n, "where": where, "total_s": round(total, 3),
            "us_per_request": round(total / n * 1e6, 1),
            "top_own_time": [{"function": f, "where": w, "share": round(t / total, 4),
                              "us_per_request": round(t / n * 1e6, 2)} for (f, w), t in top],
            "pymesh_own_time": [{"function": f, "where": w, "share": round(t / total, 4),
                                 "us_per_request": round(t / n * 1e6, 2)} for (f, w), t in ours],
            "pymesh_own_share": round(sum(t for (_, w), t in own.items() if w.startswith("pymesh/")) / total, 4),
            "tree": "\n".join(text.splitlines()[:80])}


