"""The ``pymesh`` command (also ``python -m pymesh``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from pymesh import __version__
from pymesh.config.load import load
from pymesh.errors import ConfigError, NoRouteError
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
    explain.add_argument("-n", "--namespace", default=None,
                         help="the calling workload's namespace (default: the config's only namespace, else default)")
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
    namespace = args.namespace or _only_namespace(args.path)
    workload = Workload(name=args.workload or labels.get("app", ""), namespace=namespace, labels=labels)
    try:
        mesh = Mesh.from_path(args.path, workload=workload, namespace=namespace)
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



def _only_namespace(path: str) -> str:
    """The one namespace the config's documents name (the root namespace aside), else ``default``."""
    try:
        config = load([Path(path)])
    except ConfigError:
        return "default"
    found = {r.namespace for r in config.resources} - {"", config.mesh_config.root_namespace}
    return found.pop() if len(found) == 1 else "default"


def describe(mesh: Mesh, method: str, url: str, headers: dict[str, str]) -> list[str]:
    """The mesh's routing decision for a request, readably."""
    w = mesh.workload
    labels = ",".join(f"{k}={v}" for k, v in w.labels.items())
    lines = [f"caller           {w.namespace}/{w.name or '-'} [{labels}]"]
    lines.extend(f"header           {name}: {value}" for name, value in headers.items())
    try:
        decision = mesh.route(method, url, headers)
    except NoRouteError as exc:
        lines.append(f"no route         {exc}")
        return lines
    return lines + decision.lines()
