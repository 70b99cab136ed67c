"""From files and strings to validated resources, all or nothing.

``load`` reads every source, decodes every document and runs the cross-document
analysis before deciding: any error anywhere raises one ``ConfigError`` listing all of
them, so a bad file never half-applies. Warnings travel with the result.
"""

from __future__ import annotations

import difflib
import gc
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import yaml

from pymesh.config import analyze
from pymesh.config.decode import INVALID, Checker, Report, decode, is_null
from pymesh.config.guard import measure
from pymesh.config.kinds import IGNORED_KINDS, KINDS, MESH_CONFIG, lookup
from pymesh.config.meshconfig import MeshConfig
from pymesh.config.resource import KindSpec, ObjectMeta, Resource, Source
from pymesh.config.source import Document, Limits, discover, peek_identity, read_file, read_text
from pymesh.config.types import check_dns_label
from pymesh.errors import ConfigError, Issue

__all__ = ["Config", "Text", "load"]

log = logging.getLogger("pymesh.config")

_ENVELOPE = ("apiVersion", "kind", "metadata", "spec", "status")
_EMPTY = yaml.MappingNode("tag:yaml.org,2002:map", [])


@dataclass(frozen=True, slots=True)
class Text:
    """A config source given as a string (``Mesh.from_yaml``)."""

    text: str
    name: str = "<string>"


SourceSpec = str | os.PathLike[str] | Text


@dataclass(frozen=True, slots=True)
class Config:
    """Validated resources in apply order, the effective MeshConfig, and the warnings."""

    resources: tuple[Resource[Any], ...]
    mesh_config: MeshConfig
    warnings: tuple[Issue, ...]
    files: tuple[str, ...]

    def of_kind(self, kind: str) -> list[Resource[Any]]:
        return [r for r in self.resources if r.kind == kind]


@dataclass(slots=True)
class _Loaded:
    resource: Resource[Any]
    node: yaml.Node
    report: Report

    def analysis_checker(self) -> Checker:
        """A checker whose findings are kept apart, so ``strict`` can tell them from the rest."""
        report = Report(self.report.file, self.report.index, self.report.line_offset)
        report.kind, report.namespace, report.name = self.report.kind, self.report.namespace, self.report.name
        return Checker(report, self.node, ())


def load(
    sources: Iterable[SourceSpec],
    *,
    namespace: str = "default",
    limits: Limits | None = None,
    strict: bool = False,
) -> Config:
    """Load and validate; raise ``ConfigError`` with every issue if anything is wrong.

    ``strict`` turns the cross-document warnings (``pymesh validate --strict``) into errors.
    """
    # Hundreds of thousands of node objects stay alive until decoding ends; the cyclic
    # collector would re-scan them again and again (it tripled the load time of 3,000
    # resources). They hold no cycles, so it sits out the load.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(sources, namespace, limits or Limits(), strict)
    finally:
        if enabled:
            gc.enable()


def _load(sources: Iterable[SourceSpec], namespace: str, limits: Limits, strict: bool) -> Config:
    issues: list[Issue] = []
    documents: list[Document] = []
    files: list[str] = []
    paths: list[SourceSpec] = []
    for src in sources:
        if isinstance(src, Text):
            docs, problems = read_text(src.text, src.name, limits)
            documents.extend(docs)
            issues.extend(problems)
            files.append(src.name)
        else:
            paths.append(src)
    found, problems = discover(p for p in paths if not isinstance(p, Text))
    issues.extend(problems)
    for path in found:
        docs, problems = read_file(path, limits)
        documents.extend(docs)
        issues.extend(problems)
        files.append(str(path))
    # Findings from the reader name a document's kind and name but not the default namespace.
    issues = [replace(i, namespace=namespace) if i.kind and not i.namespace else i for i in issues]

    loaded: list[_Loaded] = []
    mesh_configs: list[tuple[MeshConfig, Report]] = []
    legacy_seen: set[tuple[str, str]] = set()  # warn once per removed kind, not per document
    for doc in documents:
        for item in _decode_document(doc, namespace, limits, issues, legacy_seen):
            if isinstance(item, _Loaded):
                loaded.append(item)
            else:
                mesh_configs.append(item)

    loaded = _apply_order(loaded, issues)
    mesh_config = MeshConfig()
    if mesh_configs:
        mesh_config = mesh_configs[-1][0]
        for _, report in mesh_configs[:-1]:
            report.add("warning", (), None, "a later MeshConfig replaces this one")
            issues.extend(report.issues[-1:])

    for item in loaded:
        issues.extend(item.report.issues)
    checkers = [(x.resource, x.analysis_checker()) for x in loaded]
    analyze.run(checkers, mesh_config)
    for _, checker in checkers:
        findings = checker.report.issues
        issues.extend([replace(i, severity="error") for i in findings] if strict else findings)

    if any(i.severity == "error" for i in issues):
        raise ConfigError(issues)
    for issue in issues:
        log.warning("%s", issue)
    return Config(
        resources=tuple(x.resource for x in loaded),
        mesh_config=mesh_config,
        warnings=tuple(issues),
        files=tuple(files),
    )


def _apply_order(loaded: list[_Loaded], issues: list[Issue]) -> list[_Loaded]:
    """Later documents replace earlier ones with the same kind/namespace/name, as kubectl apply does."""
    by_key: dict[tuple[str, str, str], _Loaded] = {}
    for item in loaded:
        earlier = by_key.pop(item.resource.key, None)
        if earlier is not None:
            item.report.add(
                "warning", ("metadata", "name"), item.node,
                f"replaces the {item.resource.kind} of the same name from {earlier.resource.source}",
            )
        by_key[item.resource.key] = item
    return list(by_key.values())


def _scalar(node: yaml.MappingNode, key: str) -> tuple[str | None, yaml.Node | None]:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            if isinstance(v, yaml.ScalarNode) and not is_null(v):
                return v.value, v
            return None, v
    return None, None


def _child(node: yaml.MappingNode, key: str) -> yaml.Node | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            child: yaml.Node = v
            return child
    return None


def _decode_document(
    doc: Document, namespace: str, limits: Limits, issues: list[Issue], legacy_seen: set[tuple[str, str]]
) -> list[_Loaded | tuple[MeshConfig, Report]]:
    report = Report(doc.file, doc.index, doc.line_offset)
    node = doc.node
    out: list[_Loaded | tuple[MeshConfig, Report]] = []
    if not isinstance(node, yaml.MappingNode):
        report.add("error", (), node, "a document must be a mapping with apiVersion, kind, metadata and spec")
        issues.extend(report.issues)
        return out
    if not node.value:
        return out  # an empty mapping, like an empty document, is nothing to apply
    api_version, av_node = _scalar(node, "apiVersion")
    kind, kind_node = _scalar(node, "kind")
    # Name the document in every finding, even those about its envelope.
    report.kind, given_ns, report.name = peek_identity(node)
    report.namespace = given_ns or namespace
    if api_version is None or kind is None:
        for name, value, vnode in (("apiVersion", api_version, av_node), ("kind", kind, kind_node)):
            if value is None:
                report.add("error", (name,), vnode or node, f"missing {name}")
        issues.extend(report.issues)
        return out
    group, _, version = api_version.rpartition("/")

    if group == "" and kind == "ConfigMap":
        problem = measure(node, limits, doc.line_offset)  # ConfigMaps are read by hand, not decoded
        if problem is not None:
            report.add("error", (), yaml.ScalarNode("", "", problem[1], problem[1]), problem[0])
            issues.extend(report.issues)
            return out
        out.extend(_mesh_configmap(node, doc, limits, report, issues))
        issues.extend(report.issues)
        return out

    spec_kind = MESH_CONFIG if (group, kind) == ("pymesh", "MeshConfig") else lookup(group, kind)
    if spec_kind is None:
        if kind not in IGNORED_KINDS and group.endswith(".istio.io") and group != "config.istio.io":
            # No such CRD exists, so the API server would refuse it; skipping it instead would
            # silently drop what may be a misspelt DENY policy. (config.istio.io is left out:
            # Mixer had a kind per adapter, far more than pymesh reads.)
            known = sorted(k for g, k in KINDS if g == group) + sorted(k for k in IGNORED_KINDS if k[0].isupper())
            close = difflib.get_close_matches(kind, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            report.add("error", ("kind",), kind_node, f"{group} has no kind {kind!r}{hint}")
        else:
            hint = "" if kind in IGNORED_KINDS else (
                " (a kind pymesh does not know; check the spelling if you meant one)")
            report.add("warning", ("kind",), kind_node,
                       f"{api_version} {kind} is not acted on by pymesh; skipped{hint}")
        issues.extend(report.issues)
        return out
    if not spec_kind.namespaced:
        report.namespace = given_ns
    if version not in spec_kind.versions:
        accepted = ", ".join(f"{spec_kind.group}/{v}" for v in spec_kind.versions)
        report.add("error", ("apiVersion",), av_node,
                   f"unsupported apiVersion {api_version!r} for {kind} (accepted: {accepted})")
        issues.extend(report.issues)
        return out

    seen: dict[str, yaml.Node] = {}
    for k, _v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value in seen:
            first = seen[k.value].start_mark.line + 1 + doc.line_offset
            report.add("error", (k.value,), k, f"duplicate key {k.value!r} (first at line {first})")
            continue
        if isinstance(k, yaml.ScalarNode):
            seen[k.value] = k
        if isinstance(k, yaml.ScalarNode) and k.value not in _ENVELOPE:
            report.add("error", (k.value,), k,
                       f"unknown top-level field {k.value!r} (a document has {', '.join(_ENVELOPE[:4])})")

    meta = _metadata(node, namespace, spec_kind, report)
    spec_node = _child(node, "spec")
    if spec_node is None or is_null(spec_node):
        spec_node = _EMPTY if spec_node is None else yaml.MappingNode("tag:yaml.org,2002:map", [], spec_node.start_mark)
    spec = decode(spec_kind.spec, spec_node, report, ("spec",))
    if spec is INVALID or meta is None or report.failed:
        issues.extend(report.issues)
        return out
    source = Source(doc.file, doc.index, node.start_mark.line + 1 + doc.line_offset)
    if spec_kind is MESH_CONFIG:
        out.append((spec, report))
        issues.extend(report.issues)
        return out
    resource: Resource[Any] = Resource(api_version=api_version, kind=kind, metadata=meta, spec=spec, source=source)
    if spec_kind.legacy and (api_version, kind) not in legacy_seen:
        legacy_seen.add((api_version, kind))
        report.add("warning", ("apiVersion",), av_node,
                   f"{api_version} {kind} was removed from Istio; pymesh reads it as the seed-era API did")
    out.append(_Loaded(resource, node, report))
    return out


def _metadata(node: yaml.MappingNode, namespace: str, spec_kind: KindSpec, report: Report) -> ObjectMeta | None:
    meta_node = _child(node, "metadata")
    if meta_node is None or is_null(meta_node):
        report.add("error", ("metadata",), meta_node or node, "missing metadata (a document needs metadata.name)")
        return None
    meta = decode(ObjectMeta, meta_node, report, ("metadata",))
    if meta is INVALID:
        return None
    assert isinstance(meta, ObjectMeta)
    if not meta.name:
        report.add("error", ("metadata", "name"), meta_node, "metadata.name is required")
        return None
    problem = _check_object_name(meta.name)
    if problem:
        Checker(report, meta_node, ("metadata",)).error(problem, "name")
    ns = meta.namespace or (namespace if spec_kind.namespaced else "")
    if meta.namespace:
        problem = check_dns_label(meta.namespace, "namespace")
        if problem:
            Checker(report, meta_node, ("metadata",)).error(problem, "namespace")
    report.name = meta.name
    report.namespace = ns
    if ns != meta.namespace:
        meta = replace(meta, namespace=ns)
    return meta


def _block_indent(text: str, line: int) -> int:
    """Indentation of the first non-blank line at or after 0-based ``line``."""
    for row in text.splitlines()[line:]:
        if row.strip():
            return len(row) - len(row.lstrip(" "))
    return 0


def _check_object_name(name: str) -> str | None:
    # Kubernetes object names are DNS-1123 subdomains: labels joined by dots.
    if len(name) > 253:
        return "metadata.name is longer than 253 characters"
    for label in name.split("."):
        if check_dns_label(label) is not None:
            return f"metadata.name {name!r} is not a valid name (lowercase letters, digits, '-' and '.')"
    return None


def _mesh_configmap(
    node: yaml.MappingNode, doc: Document, limits: Limits, report: Report, issues: list[Issue]
) -> list[_Loaded | tuple[MeshConfig, Report]]:
    meta_node = _child(node, "metadata")
    name, _ = _scalar(meta_node, "name") if isinstance(meta_node, yaml.MappingNode) else (None, None)
    report.name = name or ""
    if name != "istio":
        report.add("warning", ("metadata", "name"), meta_node or node,
                   "a ConfigMap other than 'istio' is not acted on by pymesh; skipped")
        return []
    data = _child(node, "data")
    mesh_text, mesh_node = _scalar(data, "mesh") if isinstance(data, yaml.MappingNode) else (None, None)
    if mesh_text is None or mesh_node is None:
        report.add("warning", ("data",), data or node, "ConfigMap 'istio' has no data.mesh; nothing to apply")
        return []
    block = isinstance(mesh_node, yaml.ScalarNode) and mesh_node.style in ("|", ">")
    # A block scalar's text starts on the line after its indicator, indented; a quoted or
    # plain string cannot be mapped line by line, so its findings point at the string.
    offset = mesh_node.start_mark.line + (1 if block else 0) + doc.line_offset
    indent = _block_indent(doc.text, mesh_node.start_mark.line + 1) if block else 0
    docs, problems = read_text(mesh_text, doc.file, limits, line_offset=offset)
    if not block:
        problems = [replace(p, line=mesh_node.start_mark.line + 1 + doc.line_offset,
                            column=mesh_node.start_mark.column + 1) for p in problems]
    elif indent:
        problems = [replace(p, column=p.column + indent) if p.column is not None else p for p in problems]
    issues.extend(replace(p, kind="ConfigMap", namespace=report.namespace, name="istio") for p in problems)
    out: list[_Loaded | tuple[MeshConfig, Report]] = []
    for inner in docs:
        inner_report = Report(doc.file, doc.index, offset, indent)
        if not block:
            inner_report.pin = mesh_node.start_mark
        inner_report.kind, inner_report.namespace, inner_report.name = "ConfigMap", report.namespace, "istio"
        mesh = decode(MeshConfig, inner.node, inner_report, ("data", "mesh"))
        issues.extend(inner_report.issues)
        if mesh is not INVALID and not inner_report.failed:
            out.append((mesh, inner_report))
    return out
