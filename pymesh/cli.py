"""The ``pymesh`` command (also ``python -m pymesh``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pymesh import __version__
from pymesh.config.hosts import split_authority
from pymesh.config.load import load
from pymesh.errors import ConfigError, Issue
from pymesh.mesh import Mesh
from pymesh.workload import Workload, parse_labels

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pymesh", description="An Istio sidecar inside your Python process.")
    parser.add_argument("--version", action="version", version=f"pymesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check Istio config; exit 1 with one line per error")
    validate.add_argument("paths", nargs="+", metavar="PATH", help="files or folders of YAML/JSON")
    validate.add_argument("-n", "--namespace", default="default", help="namespace of documents that name none")
    validate.add_argument("--strict", action="store_true", help="treat analysis warnings as errors")
    validate.add_argument("-q", "--quiet", action="store_true", help="print errors only")

    explain = sub.add_parser("explain", help="show how the mesh would treat a request")
    explain.add_argument("path", metavar="PATH", help="config file or folder")
    explain.add_argument("method", metavar="METHOD")
    explain.add_argument("url", metavar="URL")
    explain.add_argument("--from", dest="source", default="", metavar="LABELS",
                         help="the calling workload's labels, e.g. app=customer,version=v1")
    explain.add_argument("-n", "--namespace", default="default", help="the calling workload's namespace")
    explain.add_argument("--workload", default="", help="the calling workload's name")
    explain.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args, out)
    return _explain(args, out)


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    try:
        config = load([Path(p) for p in args.paths], namespace=args.namespace, strict=args.strict)
    except ConfigError as exc:
        for issue in exc.issues:
            if issue.severity == "error" or not args.quiet:
                print(issue, file=out)
        return 1
    if not args.quiet:
        for issue in config.warnings:
            print(issue, file=out)
        kinds: dict[str, int] = {}
        for res in config.resources:
            kinds[res.kind] = kinds.get(res.kind, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no resources"
        print(f"ok: {len(config.files)} file(s), {summary}; {len(config.warnings)} warning(s)", file=out)
    return 0


def _explain(args: argparse.Namespace, out: TextIO) -> int:
    try:
        labels = parse_labels(args.source)
    except ValueError as exc:
        print(f"pymesh explain: --from: {exc}", file=sys.stderr)
        return 2
    workload = Workload(name=args.workload or labels.get("app", ""), namespace=args.namespace, labels=labels)
    try:
        mesh = Mesh.from_path(args.path, workload=workload, namespace=args.namespace)
    except ConfigError as exc:
        for issue in exc.errors:
            print(issue, file=out)
        return 1
    headers = {}
    for raw in args.header:
        name, _, value = raw.partition(":")
        headers[name.strip().lower()] = value.strip()
    for line in describe(mesh, args.method.upper(), args.url, headers):
        print(line, file=out)
    return 0


def describe(mesh: Mesh, method: str, url: str, headers: dict[str, str]) -> list[str]:
    """What the snapshot knows of the request's host (routing itself lands with the router)."""
    import urllib.parse

    snap = mesh.snapshot
    parts = urllib.parse.urlsplit(url)
    host, port = split_authority(parts.netloc)
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    w = snap.workload
    labels = ",".join(f"{k}={v}" for k, v in w.labels.items())
    lines = [f"request          {method} {url}  from {w.namespace}/{w.name or '-'} [{labels}]"]
    for name, value in headers.items():
        lines.append(f"                 {name}: {value}")
    vh = snap.routes.resolve(host, w.namespace)
    svc = snap.registry.resolve(host, w.namespace)
    fq = vh.host if vh else (svc.host if svc else host)
    lines.append(f"host             {host} -> {fq} port {port}")
    if vh is None:
        lines.append("virtual service  none: requests go straight to the service")
    else:
        vs = vh.service
        lines.append(f"virtual service  {vs.namespace}/{vs.name}  ({vs.source})")
        for i, route in enumerate(vs.spec.http):
            lines.append(f"  http[{i}] {_route_summary(route)}")
    if svc is None:
        mode = snap.mesh_config.outbound_traffic_policy.mode
        fate = "502 (REGISTRY_ONLY)" if mode == "REGISTRY_ONLY" else "resolved through DNS (ALLOW_ANY)"
        lines.append(f"service          not in the registry: {fate}")
    else:
        ports = ", ".join(f"{p.number}/{p.protocol}" for p in svc.ports)
        lines.append(f"service          {svc.host} [{ports}] {svc.resolution}, {len(svc.endpoints)} endpoint(s)")
    rule = snap.clusters.destination_rule(fq, svc.namespace if svc else None)
    if rule is None:
        lines.append("destination rule none: Istio's defaults apply")
    else:
        res = rule.resource
        subsets = ", ".join(rule.subsets) or "-"
        lines.append(f"destination rule {res.namespace}/{res.name}  ({res.source})  subsets: {subsets}")
        for subset in ("", *rule.subsets):
            cluster = snap.clusters.get(fq, subset, port)
            policy = cluster.policy
            parts_ = [f"{k}={_short(getattr(policy, k))}" for k in ("load_balancer", "connection_pool",
                                                                      "outlier_detection", "tls")
                      if getattr(policy, k) is not None]
            lines.append(f"  {cluster.key}  {' '.join(parts_) or 'defaults'}  endpoints: {len(cluster.endpoints)}")
    return lines


def _route_summary(route: Any) -> str:
    match = "catch-all" if not route.match else " or ".join(_match_summary(m) for m in route.match)
    if route.route:
        total = sum(d.weight for d in route.route) or 1
        dests = ", ".join(
            f"{d.destination.host}{'/' + d.destination.subset if d.destination.subset else ''}"
            f"{f' {round(100 * d.weight / total)}%' if len(route.route) > 1 else ''}"
            for d in route.route
        )
        action = f"route {dests}"
    elif route.redirect is not None:
        action = "redirect"
    elif route.direct_response is not None:
        action = f"direct response {route.direct_response.status}"
    elif route.delegate is not None:
        action = f"delegate {route.delegate.namespace or '.'}/{route.delegate.name}"
    else:
        action = "no action"
    extras = [name for name in ("fault", "retries", "timeout", "mirror", "rewrite", "cors_policy")
              if getattr(route, name, None) is not None]
    return f"{match} -> {action}" + (f"  [{', '.join(extras)}]" if extras else "")


def _match_summary(m: Any) -> str:
    bits = []
    if m.uri is not None:
        bits.append(f"uri {m.uri.kind} {m.uri.value!r}")
    for name, sm in m.headers.items():
        bits.append(f"header {name} {sm.kind or 'present'} {sm.value!r}" if sm.kind else f"header {name} present")
    if m.method is not None:
        bits.append(f"method {m.method.value}")
    if m.source_labels:
        bits.append("from " + ",".join(f"{k}={v}" for k, v in m.source_labels.items()))
    return " and ".join(bits) or "any"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _print_issues(issues: Sequence[Issue], out: TextIO) -> None:
    for issue in issues:
        print(issue, file=out)
