"""The conformance corpus (shared/conformance): real Istio files, loaded through the real loader.

- Every valid config file (bookinfo/, istio-tutorial/, legacy/, validation/*-valid.yaml)
  loads without error, and every document of a kind pymesh acts on becomes a resource.
- Every document of validation/*-invalid.yaml, its ``_err`` key removed, is rejected when
  loaded on its own, except the ones listed below with the reason.
- Istio 1.0/1.1-era files and current ones load side by side into one mesh.

Expected counts are taken from the files with ``yaml.safe_load_all``, never from pymesh.
jwt/ and certs/ hold keys and tokens, not config, and are not read here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import pymesh
from pymesh.config.load import Text, load
from pymesh.errors import ConfigError
from tests.conftest import shared_dir

CORPUS = shared_dir() / "conformance"

# The kinds pymesh acts on (CONTRACT.md section 1); anything else is skipped with a warning.
ISTIO_KINDS = frozenset({
    "VirtualService", "DestinationRule", "ServiceEntry", "WorkloadEntry", "Gateway",
    "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy",
})
LEGACY_KINDS = frozenset({
    "Policy", "MeshPolicy", "RbacConfig", "ClusterRbacConfig", "ServiceRole", "ServiceRoleBinding",
    "rule", "handler", "instance", "listchecker", "listentry", "denier", "checknothing",
})
ACTED_ON = ISTIO_KINDS | LEGACY_KINDS
CLUSTER_SCOPED = frozenset({"MeshPolicy", "ClusterRbacConfig"})


def _files(folder: str, pattern: str = "*") -> list[Path]:
    found = sorted(p for p in (CORPUS / folder).glob(pattern) if p.is_file())
    assert found, f"no {pattern} in {CORPUS / folder}"
    return found


VALID_FILES = [
    *_files("bookinfo"),
    *_files("istio-tutorial"),
    *_files("legacy"),
    *_files("validation", "*-valid.yaml"),
]
INVALID_FILES = _files("validation", "*-invalid.yaml")


def _rel(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def namespace_for(path: Path) -> str:
    """The tutorial was applied with ``kubectl -n tutorial``; everything else in ``default``."""
    return "tutorial" if path.parent.name == "istio-tutorial" else "default"


def documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def expected_resources(path: Path) -> Counter[str]:
    """Kinds pymesh acts on, counted from the file; a repeated kind/namespace/name counts once (kubectl apply)."""
    keys = set()
    for doc in documents(path):
        if not isinstance(doc, dict) or doc.get("kind") not in ACTED_ON:
            continue
        meta = doc.get("metadata") or {}
        ns = "" if doc["kind"] in CLUSTER_SCOPED else meta.get("namespace") or namespace_for(path)
        keys.add((doc["kind"], ns, meta["name"]))
    return Counter(kind for kind, _, _ in keys)


def skipped_documents(path: Path) -> int:
    return sum(1 for d in documents(path) if isinstance(d, dict) and d.get("kind") not in ACTED_ON)


# -- valid files ---------------------------------------------------------------------------------


def test_the_corpus_is_all_there() -> None:
    # MANIFEST.md: 23 bookinfo, 55 istio-tutorial, 29 legacy, 13 valid/13 invalid validation files.
    assert Counter(p.parent.name for p in VALID_FILES) == {
        "bookinfo": 23, "istio-tutorial": 55, "legacy": 29, "validation": 13,
    }
    assert len(INVALID_FILES) == 13


@pytest.mark.parametrize("path", VALID_FILES, ids=_rel)
def test_valid_file_loads(path: Path) -> None:
    try:
        config = load([path], namespace=namespace_for(path))
    except ConfigError as err:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{_rel(path)} must load:\n{err}")
    assert Counter(r.kind for r in config.resources) == expected_resources(path)
    assert all(w.severity == "warning" for w in config.warnings)
    skipped = [w for w in config.warnings if w.path == "kind" and "not acted on by pymesh" in w.message]
    assert len(skipped) == skipped_documents(path)
    for res in config.resources:
        assert res.source.file == str(path)
        if res.kind not in CLUSTER_SCOPED:
            assert res.namespace, f"{res!r} has no namespace"


# Counted by hand from the files (each matches yaml.safe_load_all; checked below against them).
BOOKINFO_COUNTS: dict[str, dict[str, int]] = {
    "bookinfo-gateway.yaml": {"Gateway": 1, "VirtualService": 1},
    "bookinfo.yaml": {},  # Services, ServiceAccounts and Deployments only
    "destination-rule-all-mtls.yaml": {"DestinationRule": 4},
    "destination-rule-all.yaml": {"DestinationRule": 4},
    "destination-rule-reviews.yaml": {"DestinationRule": 1},
    "egress-rule-google-apis.yaml": {"ServiceEntry": 1, "VirtualService": 1, "DestinationRule": 1},
    "fault-injection-details-v1.yaml": {"VirtualService": 1, "DestinationRule": 1},
    "github.yaml": {"ServiceEntry": 2},
    "httpbin-gateway.yaml": {"Gateway": 1, "VirtualService": 1},
    "httpbin.yaml": {},
    "productpage_envoy_ratelimit.yaml": {},  # EnvoyFilter only
    "virtual-service-all-v1.yaml": {"VirtualService": 4},
    "virtual-service-details-v2.yaml": {"VirtualService": 1},
    "virtual-service-ratings-db.yaml": {"VirtualService": 2},
    "virtual-service-ratings-test-abort.yaml": {"VirtualService": 1},
    "virtual-service-ratings-test-delay.yaml": {"VirtualService": 1},
    "virtual-service-reviews-50-v3.yaml": {"VirtualService": 1},
    "virtual-service-reviews-80-20.yaml": {"VirtualService": 1},
    "virtual-service-reviews-90-10.yaml": {"VirtualService": 1},
    "virtual-service-reviews-jason-v2-v3.yaml": {"VirtualService": 1},
    "virtual-service-reviews-test-v2.yaml": {"VirtualService": 1},
    "virtual-service-reviews-v2-v3.yaml": {"VirtualService": 1},
    "virtual-service-reviews-v3.yaml": {"VirtualService": 1},
}


@pytest.mark.parametrize("path", _files("bookinfo"), ids=_rel)
def test_bookinfo_resource_counts_by_kind(path: Path) -> None:
    want = BOOKINFO_COUNTS[path.name]
    assert Counter(want) == expected_resources(path), "the table disagrees with the file"
    config = load([path], namespace="default")
    assert Counter(r.kind for r in config.resources) == Counter(want)
    assert {r.namespace for r in config.resources} <= {"default"}


def test_bookinfo_table_lists_every_file() -> None:
    assert sorted(BOOKINFO_COUNTS) == [p.name for p in _files("bookinfo")]


def test_the_tutorial_namespace_comes_from_the_loader_argument() -> None:
    path = CORPUS / "istio-tutorial" / "virtual-service-recommendation-v1.yml"
    assert "namespace" not in (documents(path)[0].get("metadata") or {})
    (vs,) = load([path], namespace="tutorial").of_kind("VirtualService")
    assert (vs.namespace, vs.name) == ("tutorial", "recommendation")


# -- invalid documents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidDoc:
    file: str
    index: int
    name: str
    kind: str
    err: str  # the upstream _err hint ("" for the Galley files, which carry none)
    text: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.file, self.index)

    @property
    def id(self) -> str:
        return f"{self.file}#{self.index}-{self.name}"


def _invalid_docs() -> list[InvalidDoc]:
    out = []
    for path in INVALID_FILES:
        for i, doc in enumerate(documents(path)):
            assert isinstance(doc, dict), f"{path.name} document {i}"
            err = doc.pop("_err", "")
            meta = doc.get("metadata") or {}
            out.append(InvalidDoc(path.name, i, str(meta.get("name", "")), str(doc.get("kind", "")), str(err),
                                  yaml.safe_dump(doc, sort_keys=False)))
    return out


INVALID_DOCS = _invalid_docs()

# Documents of the -invalid files that are valid on their own: the Galley rule test ships its
# rule with the denier handler and checknothing instance it names, and only the rule is bad.
VALID_COMPANIONS: dict[tuple[str, int], str] = {
    ("config-v1alpha2-rule-invalid.yaml", 0): "the denier handler the invalid rule refers to; valid by itself",
    ("config-v1alpha2-rule-invalid.yaml", 1): "the checknothing instance the invalid rule refers to; valid by itself",
}


@dataclass(frozen=True)
class IstioAccepts:
    """A document upstream calls invalid but current Istio accepts; ``pymesh_rejects`` is pymesh's choice."""

    reason: str
    pymesh_rejects: bool
    message: str = ""  # part of pymesh's error, when it rejects


# The lead decides each entry. When pymesh_rejects is False the rejection test is a strict xfail,
# so flipping the decision (or the code) without updating this table fails loudly.
ISTIO_ACCEPTS: dict[tuple[str, int], IstioAccepts] = {
    # Galley 1.1 rejected a VirtualService without hosts ("virtual service must have at least one
    # host"). Since Istio 1.6 such a VirtualService is a delegate and is accepted on its own. pymesh
    # refuses one that no VirtualService in the same load delegates to (analyze._orphan_delegates).
    ("networking-v1alpha3-VirtualService-invalid.yaml", 0): IstioAccepts(
        "current Istio reads a VirtualService without hosts as a delegate",
        pymesh_rejects=True,
        message="virtual service must have at least one host",
    ),
}


def _invalid_params() -> list[pytest.ParameterSet]:
    out = []
    for doc in INVALID_DOCS:
        if doc.key in VALID_COMPANIONS:
            continue
        accepted = ISTIO_ACCEPTS.get(doc.key)
        marks = []
        if accepted is not None and not accepted.pymesh_rejects:
            marks.append(pytest.mark.xfail(strict=True, reason=f"DECISION: {accepted.reason}"))
        out.append(pytest.param(doc, id=doc.id, marks=marks))
    return out


def test_every_invalid_document_is_classified() -> None:
    assert len(INVALID_DOCS) == 59
    keys = {d.key for d in INVALID_DOCS}
    assert set(VALID_COMPANIONS) <= keys
    assert set(ISTIO_ACCEPTS) <= keys
    assert not set(VALID_COMPANIONS) & set(ISTIO_ACCEPTS)


@pytest.mark.parametrize("doc", _invalid_params(), ids=lambda d: d.id)
def test_invalid_document_is_rejected_on_its_own(doc: InvalidDoc) -> None:
    hint = f"upstream error: {doc.err!r}" if doc.err else "(a Galley 1.1 test file; no _err hint)"
    try:
        config = load([Text(doc.text, doc.file)], namespace="default")
    except ConfigError as err:
        errors = err.errors
    else:
        pytest.fail(f"{doc.id} loaded ({len(config.resources)} resources) but must be rejected; {hint}")
    assert errors, hint
    for issue in errors:
        assert issue.file == doc.file
        assert issue.message.strip(), hint
        # The findings are about the spec, so each names the document.
        assert (issue.kind, issue.name) == (doc.kind, doc.name), f"{issue}; {hint}"
    accepted = ISTIO_ACCEPTS.get(doc.key)
    if accepted is not None:
        assert any(accepted.message in i.message for i in errors), str(errors)


@pytest.mark.parametrize("key", sorted(VALID_COMPANIONS), ids=lambda k: f"{k[0]}#{k[1]}")
def test_valid_companion_in_an_invalid_file_loads(key: tuple[str, int]) -> None:
    (doc,) = [d for d in INVALID_DOCS if d.key == key]
    assert doc.err == ""
    config = load([Text(doc.text, doc.file)])
    assert [(r.kind, r.name) for r in config.resources] == [(doc.kind, doc.name)]


def test_invalid_rule_bundle_fails_as_a_whole() -> None:
    """Loaded as the file it is, the valid handler and instance do not half-apply beside the bad rule."""
    path = CORPUS / "validation" / "config-v1alpha2-rule-invalid.yaml"
    with pytest.raises(ConfigError) as info:
        load([path])
    assert [(i.document, i.kind, i.path) for i in info.value.errors] == [(2, "rule", "spec.badField")]


# -- seed-era and current config in one mesh ---------------------------------------------------------

LEGACY_MIX = [
    "legacy/istio-1.1.17__rbac-config-ON.yaml",  # ClusterRbacConfig
    "legacy/istio-1.1.17__details-reviews-policy-permissive.yaml",  # ServiceRole + ServiceRoleBinding
    "legacy/istio-1.1.17__mixer-rule-deny-label.yaml",  # handler + instance + rule
    "legacy/istio-1.0.0__mixer-rule-deny-serviceaccount.yaml",  # denier + checknothing + rule
    "legacy/istio-1.1.17__global-mtls.yaml",  # MeshPolicy
    "legacy/istio-1.1.17__authn-policy-permissive.yaml",  # Policy
    "legacy/istio-1.1.17__mixer-rule-deny-whitelist-crd.yaml",  # listchecker + listentry + rule
]
CURRENT_MIX = [
    "bookinfo/bookinfo.yaml",  # Kubernetes objects, skipped
    "bookinfo/bookinfo-gateway.yaml",
    "bookinfo/destination-rule-all.yaml",
    "bookinfo/virtual-service-all-v1.yaml",
    "bookinfo/github.yaml",
]


def test_seed_era_and_current_examples_load_into_one_mesh() -> None:
    paths = [CORPUS / p for p in LEGACY_MIX + CURRENT_MIX]
    mesh = pymesh.Mesh.from_path(paths)
    snap = mesh.snapshot
    want: Counter[str] = Counter()
    for p in paths:
        want += expected_resources(p)
    assert Counter(r.kind for r in snap.config.resources) == want
    for kind in ("ClusterRbacConfig", "ServiceRole", "ServiceRoleBinding", "rule", "handler", "instance", "denier",
                 "checknothing", "listchecker", "listentry", "MeshPolicy", "Policy"):
        assert snap.resources(kind), f"no {kind} in the snapshot"
    for kind in ("Gateway", "DestinationRule", "VirtualService", "ServiceEntry"):
        assert snap.resources(kind), f"no {kind} in the snapshot"
    assert snap.config.files == tuple(str(p) for p in paths)
    removed = {w.message.split(" was removed")[0] for w in mesh.warnings if "was removed from Istio" in w.message}
    assert "rbac.istio.io/v1alpha1 ServiceRole" in removed
    assert "config.istio.io/v1alpha2 rule" in removed
    assert "reviews.default.svc.cluster.local" in snap.routes.hosts()
