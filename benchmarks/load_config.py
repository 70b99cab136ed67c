"""How long ``Mesh.from_path`` takes, and how much memory, for a large realistic config.

    python -m benchmarks.load_config [--count 1000] [--runs 3] [--profile] [--cpu N]

Generates, in a temporary folder, ``count`` services spread over ten namespaces, each
with a VirtualService (2-3 HTTP routes with header/URI matches, weighted subsets,
retries and a timeout), a DestinationRule (two subsets and a trafficPolicy) and a
ServiceEntry (two ports, two endpoints), one file per service. Then, every measurement
in a fresh interpreter so that nothing is warm:

- wall time of ``Mesh.from_path(folder)``, median of ``--runs`` runs, pymesh already imported;
- the same split into its phases (``load``: read, compose, decode, analyse; ``build``: the snapshot);
- peak memory: ``tracemalloc`` peak during the call (in its own run, since tracing slows
  Python down) and the growth of the peak RSS (``VmHWM``) across the call (an untraced run).

Prints a table and writes ``benchmarks/results/load_config.json``. The targets (the
issue's): under 2 s and under 200 MB for 1000 services. When a target is missed, or with
``--profile``, a cProfile run lists the hot spots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "load_config.json"
ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 2.0
TARGET_MB = 200.0
NAMESPACES = 10


# -- the config ----------------------------------------------------------------------------------


def service_docs(i: int) -> list[dict[str, Any]]:
    """Three documents for service ``i``: VirtualService, DestinationRule, ServiceEntry."""
    name = f"svc-{i:05d}"
    ns = f"team-{i % NAMESPACES:02d}"
    meta = {"name": name, "namespace": ns, "labels": {"app": name, "team": ns}}

    def dest(subset: str) -> dict[str, Any]:
        return {"host": name, "subset": subset, "port": {"number": 8080}}

    routes: list[dict[str, Any]] = [{
        "name": "canary-testers",
        "match": [
            {"headers": {"end-user": {"exact": f"tester-{i}"}}, "uri": {"prefix": f"/api/v{i % 3 + 1}/"}},
            {"headers": {"x-canary": {"exact": "true"}}},
        ],
        "route": [{"destination": dest("v2")}],
        "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "5xx,reset,connect-failure"},
        "timeout": "3s",
    }]
    if i % 2 == 0:  # half the services have a third route
        routes.append({
            "name": "mobile",
            "match": [{"headers": {"user-agent": {"regex": ".*(Android|iPhone).*"}}, "uri": {"prefix": "/m/"}}],
            "rewrite": {"uri": "/"},
            "route": [{"destination": dest("v2")}],
            "timeout": "1s",
        })
    routes.append({
        "name": "default",
        "route": [
            {"destination": dest("v1"), "weight": 90},
            {"destination": dest("v2"), "weight": 10, "headers": {"request": {"set": {"x-version": "v2"}}}},
        ],
        "retries": {"attempts": 2, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
        "timeout": "5s",
    })
    virtual_service = {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta,
        "spec": {"hosts": [name], "http": routes},
    }
    destination_rule = {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": meta,
        "spec": {
            "host": name,
            "trafficPolicy": {
                "loadBalancer": {"simple": "LEAST_REQUEST"},
                "connectionPool": {
                    "tcp": {"maxConnections": 100, "connectTimeout": "2s"},
                    "http": {"http1MaxPendingRequests": 50, "maxRequestsPerConnection": 10},
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50,
                },
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"},
                 "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
            ],
        },
    }
    subnet = f"10.{i // 250 % 256}.{i % 250}"
    service_entry = {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": meta,
        "spec": {
            "hosts": [name],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [
                {"number": 8080, "name": "http", "protocol": "HTTP"},
                {"number": 9090, "name": "grpc-admin", "protocol": "GRPC"},
            ],
            "endpoints": [
                {"address": f"{subnet}.{k}", "ports": {"http": 18080, "grpc-admin": 19090},
                 "labels": {"app": name, "version": f"v{k}"}, "serviceAccount": name,
                 "locality": f"us-east1/us-east1-{'bc'[k - 1]}"}
                for k in (1, 2)
            ],
        },
    }
    return [virtual_service, destination_rule, service_entry]


def service_yaml(i: int) -> str:
    return yaml.safe_dump_all(service_docs(i), sort_keys=False, default_flow_style=False)


def generate(folder: Path, count: int) -> dict[str, int]:
    total = 0
    for i in range(count):
        ns_dir = folder / f"team-{i % NAMESPACES:02d}"
        ns_dir.mkdir(exist_ok=True)
        text = service_yaml(i)
        (ns_dir / f"svc-{i:05d}.yaml").write_text(text)
        total += len(text.encode())
    return {"files": count, "documents": 3 * count, "bytes": total}


# -- one measurement, in a fresh interpreter --------------------------------------------------------


def _peak_rss_kib(resource: Any) -> float:
    """This process's peak resident set, KiB: ``VmHWM`` where /proc has it, else ``ru_maxrss``.

    On Linux ``ru_maxrss`` of a child starts at its parent's peak (it survives fork and exec), so a
    big parent (the harness, after its 10,000-service meshes) hides the child's growth; ``VmHWM``
    belongs to the child's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(maxrss) / 1024 if sys.platform == "darwin" else float(maxrss)  # bytes on macOS, KiB on Linux


def worker(folder: str, mode: str, cpu: int | None = None) -> dict[str, Any]:
    """Run in a child process: import pymesh, then measure one thing about loading ``folder``."""
    import gc
    import resource
    import time

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    t0 = time.perf_counter()
    import pymesh
    from pymesh.config.load import load
    from pymesh.snapshot.snapshot import build

    out: dict[str, Any] = {"import_seconds": time.perf_counter() - t0}
    gc.collect()
    if mode == "time":
        rss0 = _peak_rss_kib(resource)
        c0 = time.process_time()
        t0 = time.perf_counter()
        mesh = pymesh.Mesh.from_path(folder)
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0  # less sensitive than wall time to a busy machine
        rss1 = _peak_rss_kib(resource)
        out["rss_before_mb"] = rss0 / 1024
        out["rss_delta_mb"] = (rss1 - rss0) / 1024
        out["resources"] = len(mesh.config.resources)
        out["warnings"] = len(mesh.warnings)
        out["hosts"] = len(mesh.snapshot.routes)
        out["services"] = len(mesh.snapshot.registry)
    elif mode == "phases":
        c0, t0 = time.process_time(), time.perf_counter()
        config = load([Path(folder)])
        c1, t1 = time.process_time(), time.perf_counter()
        build(config, pymesh.Workload())
        c2, t2 = time.process_time(), time.perf_counter()
        out["load_seconds"], out["load_cpu_seconds"] = t1 - t0, c1 - c0
        out["build_seconds"], out["build_cpu_seconds"] = t2 - t1, c2 - c1
    elif mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        t0 = time.perf_counter()
        mesh = pymesh.Mesh.from_path(folder)
        out["traced_seconds"] = time.perf_counter() - t0
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["tracemalloc_peak_mb"] = peak / 2**20
        out["tracemalloc_retained_mb"] = current / 2**20
        del mesh
    elif mode == "profile":
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        pymesh.Mesh.from_path(folder)
        profiler.disable()
        for order in ("tottime", "cumulative"):
            buf = io.StringIO()
            pstats.Stats(profiler, stream=buf).strip_dirs().sort_stats(order).print_stats(25)
            out[f"profile_{order}"] = buf.getvalue()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return out


def run_worker(folder: Path, mode: str, cpu: int | None) -> dict[str, Any]:
    pin = [] if cpu is None else ["--cpu", str(cpu)]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_config", "--worker", str(folder), "--mode", mode, *pin],
        capture_output=True, text=True, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker ({mode}) failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- the report -----------------------------------------------------------------------------------


def measure(count: int, runs: int, profile: bool, cpu: int | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pymesh-bench-") as tmp:
        folder = Path(tmp)
        generated = generate(folder, count)
        timed = [run_worker(folder, "time", cpu) for _ in range(runs)]
        phases = [run_worker(folder, "phases", cpu) for _ in range(runs)]
        traced = run_worker(folder, "tracemalloc", cpu)
        seconds = statistics.median(r["seconds"] for r in timed)
        rss = statistics.median(r["rss_delta_mb"] for r in timed)
        peak = traced["tracemalloc_peak_mb"]
        result: dict[str, Any] = {
            "benchmark": "load_config",
            "command": " ".join(["python -m benchmarks.load_config", "--count", str(count), "--runs", str(runs),
                                 *([] if cpu is None else ["--cpu", str(cpu)])]),
            "pinned_cpu": cpu,
            "count": count,
            "generated": generated,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "from_path_seconds_median": seconds,
            "from_path_seconds_runs": [r["seconds"] for r in timed],
            "from_path_cpu_seconds_median": statistics.median(r["cpu_seconds"] for r in timed),
            "load_average_1min": os.getloadavg()[0],
            "cpus": os.cpu_count(),
            "load_seconds_median": statistics.median(r["load_seconds"] for r in phases),
            "build_seconds_median": statistics.median(r["build_seconds"] for r in phases),
            "load_cpu_seconds_median": statistics.median(r["load_cpu_seconds"] for r in phases),
            "build_cpu_seconds_median": statistics.median(r["build_cpu_seconds"] for r in phases),
            "import_seconds_median": statistics.median(r["import_seconds"] for r in timed),
            "rss_delta_mb_median": rss,
            "rss_before_mb": timed[0]["rss_before_mb"],
            "tracemalloc_peak_mb": peak,
            "tracemalloc_retained_mb": traced["tracemalloc_retained_mb"],
            "tracemalloc_run_seconds": traced["traced_seconds"],
            "resources": timed[0]["resources"],
            "warnings": timed[0]["warnings"],
            "hosts": timed[0]["hosts"],
            "services": timed[0]["services"],
            "targets": {"seconds": TARGET_SECONDS, "mb": TARGET_MB, "for_count": 1000},
        }
        result["meets_time_target"] = seconds < TARGET_SECONDS * count / 1000
        result["meets_memory_target"] = max(peak, rss) < TARGET_MB * count / 1000
        if profile or not (result["meets_time_target"] and result["meets_memory_target"]):
            prof = run_worker(folder, "profile", cpu)
            result["profile_tottime"] = prof["profile_tottime"]
            result["profile_cumulative"] = prof["profile_cumulative"]
    return result


def table(r: dict[str, Any]) -> str:
    scale = r["count"] / 1000
    ok = {True: "ok", False: "MISSED"}
    rows = [
        ("services (VS + DR + SE each)", f"{r['count']}", ""),
        ("documents / YAML size", f"{r['generated']['documents']} / {r['generated']['bytes'] / 2**20:.1f} MiB", ""),
        ("Mesh.from_path, median", f"{r['from_path_seconds_median']:.3f} s",
         f"< {TARGET_SECONDS * scale:.2f} s: {ok[r['meets_time_target']]}"),
        ("  runs", ", ".join(f"{s:.3f}" for s in r["from_path_seconds_runs"]), ""),
        ("  CPU time, median", f"{r['from_path_cpu_seconds_median']:.3f} s",
         f"load average {r['load_average_1min']:.1f} on {r['cpus']} CPU(s)"),
        ("  load (read, decode, analyse)", f"{r['load_seconds_median']:.3f} s",
         f"CPU {r['load_cpu_seconds_median']:.3f} s"),
        ("  build (snapshot)", f"{r['build_seconds_median']:.3f} s", f"CPU {r['build_cpu_seconds_median']:.3f} s"),
        ("import pymesh", f"{r['import_seconds_median']:.3f} s", "not in the above"),
        ("tracemalloc peak", f"{r['tracemalloc_peak_mb']:.1f} MB",
         f"< {TARGET_MB * scale:.0f} MB: {ok[r['meets_memory_target']]}"),
        ("tracemalloc retained after", f"{r['tracemalloc_retained_mb']:.1f} MB", "the live mesh"),
        ("peak RSS growth, median", f"{r['rss_delta_mb_median']:.1f} MB",
         f"over {r['rss_before_mb']:.0f} MB after import"),
        ("resources / hosts / services", f"{r['resources']} / {r['hosts']} / {r['services']}",
         f"{r['warnings']} warning(s)"),
    ]
    width = max(len(a) for a, _, _ in rows)
    vwidth = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>{vwidth}}  {c}".rstrip() for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load_config", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="services to generate (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs, each in a fresh interpreter (default 3)")
    parser.add_argument("--profile", action="store_true", help="always print the cProfile hot spots")
    parser.add_argument("--cpu", type=int, default=None, help="pin every measured process to this CPU")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    parser.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.mode, args.cpu)))
        return 0
    result = measure(args.count, args.runs, args.profile, args.cpu)
    print(table(result))
    for order in ("tottime", "cumulative"):
        text = result.get(f"profile_{order}")
        if text:
            print(f"\ncProfile of one Mesh.from_path, by {order}:")
            print(text.strip())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
