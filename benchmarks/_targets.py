"""Issue 5's targets, judged from one run's results: met, missed by how much, or not measured and why."""

from __future__ import annotations

import math
from typing import Any

# -- targets ----------------------------------------------------------------------------------


def _target(tid: str, what: str, measured: float | None, limit: float, unit: str, higher_is_better: bool = False,
            note: str = "") -> dict[str, Any]:
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        return {"id": tid, "target": what, "measured": None, "limit": limit, "unit": unit, "met": None,
                "by": "not measured", "note": note}
    met = measured >= limit if higher_is_better else measured <= limit
    if met:
        by = "met"
    elif higher_is_better:
        by = f"missed by {limit - measured:.3g} {unit} ({measured / limit:.2f}x of the floor)"
    else:
        by = f"missed by {measured - limit:.3g} {unit} ({measured / limit:.2f}x the limit)" if limit else "missed"
    return {"id": tid, "target": what, "measured": round(measured, 3), "limit": limit, "unit": unit, "met": met,
            "by": by, "note": note}


def targets(sc: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    rg = sc.get("routed_get", {})
    cmp = rg.get("comparisons", {}) if rg.get("status") == "ok" else {}
    pm = cmp.get("pymesh-weighted vs bare")
    env_c = cmp.get("envoy vs bare")
    out.append(_target("T2a", "routed GET throughput ≥ 0.93x bare httpx", pm and pm["rps_ratio"], 0.93, "x", True))
    out.append(_target("T2b", "routed GET added client CPU ≤ 20 µs/req", pm and pm["added_client_cpu_us_per_req"],
                       20.0, "µs"))
    out.append(_target("T2c", "routed GET added p50 ≤ 25 µs", pm and pm["added_p50_us"], 25.0, "µs"))
    mem = rg.get("in_memory", {})
    if mem.get("status") == "ok":
        out.append(_target("T2b'", "routed GET added CPU in memory (connections stubbed) ≤ 20 µs/req",
                           mem["weighted_vs_bare"]["transport"]["added_us"], 20.0, "µs",
                           note="transport level, the steadiest figure"))
    ratio = None
    if pm and env_c and pm["added_p50_us"] > 0:
        ratio = env_c["added_p50_us"] / pm["added_p50_us"]
    out.append(_target("T2d", "added p50 ≥ 10x cheaper than one Envoy hop", ratio, 10.0, "x", True,
                       note="Envoy added p50 / pymesh added p50, same run" if env_c else "no Envoy in this run"))
    dec = sc.get("decision", {})
    worst = None
    if dec.get("status") == "ok" and dec.get("rows") and "decide_ns" in dec["rows"][0]:
        worst = max(v["median"] for r in dec["rows"] for v in r["decide_ns"].values()) / 1000
    out.append(_target("T1", "routing decision ≤ 1 µs median at any number of virtual services", worst, 1.0, "µs",
                       note="router.decide, worst count and variant"))
    res = cmp.get("pymesh-resilient vs pymesh")
    out.append(_target("T3", "retry + outlier + limits success path ≤ 2 µs more than plain (loopback client CPU)",
                       res and res["added_client_cpu_us_per_req"], 2.0, "µs"))
    if mem.get("status") == "ok":
        out.append(_target("T3'", "the same, in memory (transport level)",
                           mem["resilient_vs_plain"]["transport"]["added_us"], 2.0, "µs"))
    mt = sc.get("mtls", {})
    pm_tls = mt.get("comparisons", {}).get("pymesh mTLS (DestinationRule MUTUAL) vs bare plaintext")
    out.append(_target("T5", "in-process mTLS steady state ≤ 80 µs p50 added", pm_tls and pm_tls["added_p50_us"],
                       80.0, "µs", note=mt.get("pymesh_mtls", {}).get("reason", "")))
    pm_row = mt.get("scenarios", {}).get("pymesh mTLS (DestinationRule MUTUAL)")
    out.append(_target("T5b", "in-process mTLS: ≥ 99 % connection reuse", pm_row and 100 * pm_row["connection_reuse"],
                       99.0, "%", True, note="1 - TLS handshakes at the upstream / requests, during the rounds"))
    asy = sc.get("async", {})
    scal = asy.get("scaling", {}) if asy.get("status") == "ok" else {}
    p = scal.get("pymesh async_client")
    out.append(_target("T7", "async at 16 tasks: CPU/req ≤ 1.2x its value at 1 task",
                       p and p["cpu_per_req_16_over_1"], 1.2, "x"))
    h = scal.get("httpx.AsyncClient")
    out.append(_target("T7b", "pymesh async at 16 tasks faster than bare httpx.AsyncClient at 16 (rps ratio ≥ 1)",
                       p["rps_at_16"] / h["rps_at_16"] if p and h else None, 1.0, "x", True))
    ib = sc.get("inbound", {})
    worst_inbound = worst_new = None
    if ib.get("status") == "ok" and ib.get("authz_enforced"):
        rows = [r for r in ib["rows"] if r["policies"] is not None]
        worst_inbound = max(r["added_ns"] for r in rows if r.get("memo") != "miss") / 1000
        misses = [r["added_ns"] for r in rows if r.get("memo") == "miss"]
        worst_new = max(misses) / 1000 if misses else None
    out.append(_target("T8", "inbound middleware ≤ 3 µs/req up to 1,000 policies", worst_inbound, 3.0, "µs",
                       note=ib.get("note") or ib.get("reason") or "repeated requests: the ASGI verdict memo answers"))
    out.append(_target("T8'", "the same, every request new to the verdict memo", worst_new, 3.0, "µs",
                       note="the full pipeline on every request (a query string no earlier request had)"))
    jwt = ib.get("jwt") or {}
    out.append(_target("T8b", "cached verified JWT ≤ 2 µs", jwt.get("added_us") if jwt.get("status") == "ok" else None,
                       2.0, "µs", note=jwt.get("reason", "")))
    m = sc.get("memory", {})
    ok = m.get("status") == "ok"
    out.append(_target("T9a", "pymesh's own memory ≤ 5 MB", m["pymesh_own_mb"] if ok else None, 5.0, "MB"))
    out.append(_target("T9b", "≤ 3 KB per service (tracemalloc)", m["per_service_kb_traced"] if ok else None, 3.0,
                       "KB"))
    out.append(_target("T9c", "≤ 3 KB per service (RSS)", m["per_service_kb_rss"] if ok else None, 3.0, "KB"))
    cl = sc.get("config_load", {})
    if cl.get("status") == "ok":
        out.append(_target("L1", f"config load of {cl['resources']:,} resources < {cl['target']['seconds']:g} s",
                           cl["from_path_s_median"], cl["target"]["seconds"], "s"))
    return out


