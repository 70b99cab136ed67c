"""The ``pymesh`` command (also ``python -m pymesh``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import timedelta
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

    ca = sub.add_parser("ca", help="a mesh certificate authority for development: init, issue")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True, metavar="ACTION")
    init = ca_sub.add_parser("init", help="create a root CA (or an intermediate under --root-cert/--root-key)")
    init.add_argument("--trust-domain", default="cluster.local", help="the mesh's trust domain (default cluster.local)")
    init.add_argument("--out", required=True, metavar="DIR", help="folder to write the CA into")
    init.add_argument("--root-cert", metavar="FILE", help="plug-in CA certificate (then its chain) to sign under")
    init.add_argument("--root-key", metavar="FILE", help="the plug-in CA's private key")
    init.add_argument("--key", choices=("ec", "rsa"), default="ec", help="ECDSA P-256 (default) or RSA 2048")
    init.add_argument("--days", type=int, default=3650, help="CA validity in days (default 3650)")
    init.add_argument("--force", action="store_true", help="overwrite a CA already in DIR")
    issue = ca_sub.add_parser("issue", help="issue a workload certificate in Istio's layout")
    issue.add_argument("--ca", required=True, metavar="DIR", help="a folder written by 'pymesh ca init'")
    issue.add_argument("--namespace", required=True)
    issue.add_argument("--service-account", required=True)
    issue.add_argument("--out", required=True, metavar="DIR",
                       help="folder for cert-chain.pem, key.pem, root-cert.pem")
    issue.add_argument("--trust-domain", default=None, help="default: the CA's")
    issue.add_argument("--ttl", default="24h", help="lifetime, e.g. 24h, 90m, 7d (default 24h, at most 90d)")
    issue.add_argument("--key", choices=("ec", "rsa"), default="ec", help="ECDSA P-256 (default) or RSA 2048")
    issue.add_argument("--dns", action="append", default=[], metavar="NAME", help="add a DNS SAN (repeatable)")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args, out)
    if args.command == "ca":
        return _ca(args, out)
    return _explain(args, out)


def _ca(args: argparse.Namespace, out: TextIO) -> int:
    # Imported here: cryptography's X.509 machinery is not needed by validate or explain.
    from pymesh.security.ca import MeshCA
    from pymesh.security.identity import CertificateError

    try:
        if args.ca_command == "init":
            folder = Path(args.out)
            if not args.force and any((folder / n).exists() for n in ("root-key.pem", "ca-key.pem")):
                print(f"pymesh ca init: {folder} already holds a CA key; use --force to replace it", file=sys.stderr)
                return 1
            if bool(args.root_cert) != bool(args.root_key):
                print("pymesh ca init: --root-cert and --root-key go together", file=sys.stderr)
                return 2
            ttl = timedelta(days=args.days)
            if args.root_cert:
                ca = MeshCA.from_plugin(Path(args.root_cert).read_bytes(), Path(args.root_key).read_bytes(),
                                        trust_domain=args.trust_domain, key=args.key, ttl=ttl)
            else:
                ca = MeshCA.init(args.trust_domain, key=args.key, ttl=ttl)
            for path in ca.save(folder):
                print(f"wrote {path}", file=out)
            return 0
        ca = MeshCA.load(args.ca)
        cert = ca.issue(args.namespace, args.service_account, ttl=_duration(args.ttl), key=args.key,
                        dns_names=args.dns, trust_domain=args.trust_domain)
        cert.write(args.out)
        print(f"issued {cert.spiffe_id.uri}, valid until {cert.not_after.isoformat()}, into {args.out}", file=out)
        return 0
    except (CertificateError, ValueError, OSError) as exc:
        print(f"pymesh ca {args.ca_command}: {exc}", file=sys.stderr)
        return 1


def _duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.replace(".", "", 1).isdigit():
        raise ValueError(f"--ttl {text!r}: use a number and a unit, e.g. 24h, 90m, 7d")
    return timedelta(seconds=float(number) * units[unit])


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
