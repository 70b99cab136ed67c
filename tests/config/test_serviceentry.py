"""ServiceEntry and WorkloadEntry models: decoded values, Istio's validation rules, the corpus."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.config.decode import Report, decode
from pymesh.config.networking.serviceentry import KINDS, ServiceEntry, WorkloadEntry
from pymesh.config.source import Limits, read_text

SPECS: dict[str, type[Any]] = {k.kind: k.spec for k in KINDS}


def load(tp: type[Any], text: str, namespace: str = "default") -> tuple[Any, Report]:
    r = Report("t.yaml", 0)
    r.namespace = namespace
    node = yaml.compose(textwrap.dedent(text))
    assert node is not None
    return decode(tp, node, r, ("spec",)), r


def errors(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "error"]


def warnings(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "warning"]


def test_kinds() -> None:
    assert [(k.group, k.kind, k.versions) for k in KINDS] == [
        ("networking.istio.io", "ServiceEntry", ("v1", "v1beta1", "v1alpha3")),
        ("networking.istio.io", "WorkloadEntry", ("v1", "v1beta1", "v1alpha3")),
    ]
    assert {"ServiceEntry": ServiceEntry, "WorkloadEntry": WorkloadEntry} == SPECS


# -- valid input, decoded values ------------------------------------------------------------------


def test_service_entry_values() -> None:
    spec, r = load(ServiceEntry, """
        hosts: [api.example.com]
        addresses: [240.0.0.1, "2001:db8::1"]
        ports:
        - {number: 80, name: http, protocol: http}
        - {number: 443, name: https, protocol: Https, targetPort: 8443}
        - {number: 9000, name: raw}
        location: MESH_INTERNAL
        resolution: STATIC
        endpoints:
        - address: 10.0.0.1
          ports: {http: 8080}
          labels: {version: v1}
          locality: us-east/zone1
          weight: 3
          serviceAccount: api
        - address: 10.0.0.2
          network: net2
        exportTo: [".", "~"]
        subjectAltNames: [spiffe://cluster.local/ns/default/sa/api]
    """)
    assert errors(r) == [("spec.exportTo", "cannot export service entry to no one (~) and someone")]
    assert spec.hosts == ("api.example.com",)
    assert spec.addresses == ("240.0.0.1", "2001:db8::1")
    # protocol is case-insensitive and stored in upper case; unset means "detect"
    assert [(p.number, p.name, p.protocol, p.target_port) for p in spec.ports] == [
        (80, "http", "HTTP", 0), (443, "https", "HTTPS", 8443), (9000, "raw", "", 0),
    ]
    assert spec.location == "MESH_INTERNAL"
    assert spec.resolution == "STATIC"
    ep = spec.endpoints[0]
    assert (ep.address, ep.ports, ep.labels, ep.locality, ep.weight, ep.service_account) == (
        "10.0.0.1", {"http": 8080}, {"version": "v1"}, "us-east/zone1", 3, "api")
    assert spec.endpoints[1].network == "net2"
    assert spec.endpoints[1].weight == 0
    assert spec.subject_alt_names == ("spiffe://cluster.local/ns/default/sa/api",)


def test_service_entry_defaults() -> None:
    spec, r = load(ServiceEntry, "hosts: [worldclockapi.com]\nports: [{name: http-80, number: 80, protocol: http}]")
    assert errors(r) == []
    assert warnings(r) == []
    assert spec.location == "MESH_EXTERNAL"
    assert spec.resolution == "NONE"
    assert spec.endpoints == ()
    assert spec.workload_selector is None
    assert spec.export_to == ()
    assert spec.ports[0].protocol == "HTTP"


@pytest.mark.parametrize("addresses", ['["001:db8::"]', "\n- 2001:db8::1\n- 10.0.0.0/8", '["2001:db8::/32"]'])
def test_ipv6_addresses(addresses: str) -> None:
    spec, r = load(ServiceEntry, f"hosts: [a.example.com]\naddresses: {addresses}")
    assert errors(r) == []
    assert ":" in spec.addresses[0]


def test_dns_with_hostname_endpoints() -> None:
    spec, r = load(ServiceEntry, """
        hosts: [db.internal]
        ports: [{number: 5432, name: tcp-pg, protocol: TCP}]
        resolution: DNS
        endpoints: [{address: db1.example.com}, {address: 10.1.1.1}]
    """)
    assert errors(r) == []
    assert [e.address for e in spec.endpoints] == ["db1.example.com", "10.1.1.1"]


def test_selector_and_dynamic_dns() -> None:
    spec, r = load(ServiceEntry, """
        hosts: ["*.example.com"]
        ports: [{number: 443, name: tls, protocol: TLS}]
        resolution: DYNAMIC_DNS
    """)
    assert errors(r) == []
    assert spec.resolution == "DYNAMIC_DNS"
    spec, r = load(ServiceEntry, """
        hosts: [vm.example.com]
        location: MESH_INTERNAL
        resolution: STATIC
        workloadSelector: {labels: {app: vm}}
    """)
    assert errors(r) == []
    assert spec.workload_selector.labels == {"app": "vm"}


@pytest.mark.parametrize(("text", "path", "fragment"), [
    pytest.param("hosts: ['*x']", "spec.hosts[0]", "partial wildcard", id="partial-wildcard"),
    pytest.param("hosts: [a.b]\nworkloadSelector: {}\nresolution: STATIC", "spec.workloadSelector",
                 "without labels", id="empty-selector"),
    pytest.param("hosts: [a.b]\nworkloadSelector: {labels: {app: a}}", "spec.workloadSelector",
                 "should not be set when resolution mode is NONE", id="selector-with-none"),
])
def test_service_entry_warnings(text: str, path: str, fragment: str) -> None:
    _, r = load(ServiceEntry, text)
    assert errors(r) == []
    assert [(p, fragment in m) for p, m in warnings(r)] == [(path, True)]


def test_workload_entry_values() -> None:
    spec, r = load(WorkloadEntry, """
        address: 1.2.3.4
        serviceAccount: sa
        network: net
        labels: {app: app}
        ports: {http: 1}
        weight: 2
        locality: foo/bar/baz
    """)
    assert errors(r) == []
    assert warnings(r) == []
    assert (spec.address, spec.service_account, spec.network, spec.labels, spec.ports, spec.weight, spec.locality) \
        == ("1.2.3.4", "sa", "net", {"app": "app"}, {"http": 1}, 2, "foo/bar/baz")
    assert not spec.is_unix


@pytest.mark.parametrize("address", ["unix://@foo", "unix:///var/run/app.sock", "example.com", "::1", ""])
def test_workload_entry_addresses(address: str) -> None:
    spec, r = load(WorkloadEntry, f"address: {address!r}\nnetwork: n1")
    assert errors(r) == []
    assert spec.is_unix == address.startswith("unix://")


# -- invalid input --------------------------------------------------------------------------------

SE_INVALID = [
    pytest.param("ports: [{number: 80, name: http}]", "spec.hosts", "missing required field 'hosts'", id="no-hosts"),
    pytest.param("hosts: []", "spec.hosts", "at least one host", id="empty-hosts"),
    pytest.param("hosts: ['*']", "spec.hosts[0]", "hostname cannot be wildcard", id="star-host"),
    pytest.param("hosts: [foo_bar.com]", "spec.hosts[0]", "invalid", id="bad-host"),
    pytest.param("hosts: [a.b]\naddresses: [1.2.3.4/99]", "spec.addresses[0]", "not an IP address or CIDR",
                 id="bad-cidr"),
    pytest.param("hosts: [a.b]\naddresses: [1.2.3.0/24]\nresolution: DNS", "spec.addresses",
                 "CIDR addresses are allowed only for NONE/STATIC", id="cidr-with-dns"),
    pytest.param("hosts: [a.b]\nports: [{number: 80, name: http, protocol: SMTP}]", "spec.ports[0].protocol",
                 "unsupported protocol 'SMTP'", id="unknown-protocol"),
    pytest.param("hosts: [a.b]\nports: [{number: 80, name: a_b}]", "spec.ports[0].name", "invalid port name",
                 id="port-name"),
    pytest.param("hosts: [a.b]\nports: [{number: 80}]", "spec.ports[0].name", "missing required field",
                 id="port-no-name"),
    pytest.param("hosts: [a.b]\nports: [{name: a}]", "spec.ports[0].number", "missing required field",
                 id="port-no-number"),
    pytest.param("hosts: [a.b]\nports: [{number: 0, name: a}]", "spec.ports[0].number", "out of range 1..65535",
                 id="port-zero"),
    pytest.param("hosts: [a.b]\nports: [{number: 1, name: a}, {number: 2, name: a}]", "spec.ports[1].name",
                 "port name 'a' already defined", id="duplicate-port-name"),
    pytest.param("hosts: [a.b]\nports: [{number: 1, name: a}, {number: 1, name: b}]", "spec.ports[1].number",
                 "port 1 already defined", id="duplicate-port-number"),
    pytest.param("hosts: [a.b]\nports: [{number: 1, name: a, targetPort: 70000}]", "spec.ports[0].targetPort",
                 "port must be between 1-65535", id="target-port"),
    pytest.param("hosts: [a.b]\nendpoints: [{address: 1.2.3.4}]", "spec.endpoints", "NONE mode cannot set endpoints",
                 id="none-with-endpoints"),
    pytest.param("hosts: [a.b]\nresolution: STATIC\nendpoints: [{address: db.example.com}]",
                 "spec.endpoints[0].address", "is not a valid IP address", id="static-hostname"),
    pytest.param("hosts: [a.b]\nresolution: STATIC\nendpoints: [{address: '-x-'}]", "spec.endpoints[0].address",
                 "not a valid FQDN or an IP address", id="static-garbage"),
    pytest.param("hosts: [a.b]\nresolution: STATIC\nports: [{number: 1, name: a}, {number: 2, name: b}]\n"
                 "endpoints: [{address: 'unix:///sock'}]", "spec.endpoints[0].address",
                 "exactly 1 service port required for unix endpoints", id="static-unix-two-ports"),
    pytest.param("hosts: [a.b]\nresolution: DNS\nendpoints: [{address: 'unix:///sock'}]",
                 "spec.endpoints[0].address", "not a valid FQDN or an IP address", id="dns-unix"),
    pytest.param("hosts: ['*.example.com']\nresolution: DNS", "spec.hosts[0]", "hosts must be FQDN",
                 id="dns-wildcard-no-endpoints"),
    pytest.param("hosts: [a.b]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: x.a.b}, {address: y.a.b}]",
                 "spec.endpoints", "DNS_ROUND_ROBIN mode cannot have multiple endpoints", id="dns-rr-two"),
    pytest.param("hosts: [a.b]\nresolution: STATIC\nports: [{number: 1, name: a}]\n"
                 "endpoints: [{address: 1.1.1.1, ports: {b: 80}}]", "spec.endpoints[0].ports.b",
                 "is not defined by the service entry", id="endpoint-port-unknown"),
    pytest.param("hosts: [a.b, c.d]\nresolution: DNS\nports: [{number: 5432, name: pg, protocol: TCP}]",
                 "spec.ports[0].protocol", "multiple hosts provided with non-HTTP, non-TLS ports",
                 id="multi-host-tcp"),
    pytest.param("hosts: [a.example.com]\nresolution: DYNAMIC_DNS", "spec.hosts[0]", "host must be wildcarded",
                 id="dynamic-dns-exact"),
    pytest.param("hosts: ['*.a.b']\nresolution: DYNAMIC_DNS\nports: [{number: 22, name: ssh, protocol: TCP}]",
                 "spec.ports[0].protocol", "only HTTP, TLS, GRPC, and HTTP2", id="dynamic-dns-tcp"),
    pytest.param("hosts: ['*.a.b']\nresolution: DYNAMIC_DNS\naddresses: [1.1.1.1]", "spec.addresses",
                 "addresses cannot be set", id="dynamic-dns-addresses"),
    pytest.param("hosts: [a.b]\nworkloadSelector: {labels: {app: x}}\nresolution: STATIC\n"
                 "endpoints: [{address: 1.1.1.1}]", "spec.workloadSelector",
                 "only one of WorkloadSelector or Endpoints", id="selector-and-endpoints"),
    pytest.param("hosts: [a.b]\nworkloadSelector: {labels: {app: '*'}}", "spec.workloadSelector.labels",
                 "invalid value '*'", id="selector-wildcard"),
    pytest.param("hosts: [a.b]\nworkloadSelector: {matchLabels: {app: x}}", "spec.workloadSelector.matchLabels",
                 "unknown field 'matchLabels'", id="selector-match-labels"),
    pytest.param("hosts: [a.b]\nlocation: EXTERNAL", "spec.location", "is not one of", id="location"),
    pytest.param("hosts: [a.b]\nresolution: dns", "spec.resolution", "did you mean 'DNS'", id="resolution-case"),
    pytest.param("hosts: [a.b]\nexportTo: ['~', foo]", "spec.exportTo", "no one (~) and someone",
                 id="export-none-and-some"),
    pytest.param("hosts: [a.b]\nexportTo: [Foo_Bar]", "spec.exportTo[0]", "only ., *, or a namespace name",
                 id="export-bad-namespace"),
    pytest.param("hosts: [a.b]\nendpoints: [{address: 1.1.1.1, weight: -1}]\nresolution: STATIC",
                 "spec.endpoints[0].weight", "must be >= 0", id="endpoint-weight"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), SE_INVALID)
def test_service_entry_invalid(text: str, path: str, fragment: str) -> None:
    _, r = load(ServiceEntry, text)
    errs = errors(r)
    assert errs, f"expected an error at {path}"
    assert errs[0][0] == path
    assert fragment in errs[0][1]


WE_INVALID = [
    pytest.param("{}", "spec.address", "Address is required", id="empty"),
    pytest.param("labels: {app: a}", "spec.address", "Address is required", id="labels-only"),
    pytest.param("address: 'unix:///dir/'", "spec.address", "UDS may not be a dir", id="uds-dir"),
    pytest.param("address: 'unix://relative'", "spec.address", "UDS must be an absolute path", id="uds-relative"),
    pytest.param("address: 'unix://'", "spec.address", "unix address must not be empty", id="uds-empty"),
    pytest.param("address: 'unix://@foo'\nports: {http: 80}", "spec.ports", "UDS may not include ports",
                 id="uds-ports"),
    pytest.param("address: 1.1.1.1\nports: {http: 99999}", "spec.ports.http", "out of range 1..65535",
                 id="port-high"),
    pytest.param("address: 1.1.1.1\nports: {http: 0}", "spec.ports.http", "out of range 1..65535", id="port-zero"),
    pytest.param("address: 1.1.1.1\nports: {'@': 80}", "spec.ports['@']", "port name must be valid",
                 id="port-name"),
    pytest.param("address: 'not an address'", "spec.address", "not a valid FQDN or an IP address", id="garbage"),
    pytest.param("address: 300.1.1.1", "spec.address", "not a valid FQDN or an IP address", id="bad-ipv4"),
    pytest.param("address: a.b\nlabels: {'bad key!': x}", "spec.labels", "invalid label key", id="label-key"),
    pytest.param("address: a.b\nweight: -2", "spec.weight", "must be >= 0", id="weight"),
    pytest.param("address: a.b\nserviceAcount: sa", "spec.serviceAcount", "did you mean 'serviceAccount'",
                 id="typo"),
    pytest.param("address: a.b\nports: [80]", "spec.ports", "expected a mapping", id="ports-list"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), WE_INVALID)
def test_workload_entry_invalid(text: str, path: str, fragment: str) -> None:
    _, r = load(WorkloadEntry, text)
    errs = errors(r)
    assert errs, f"expected an error at {path}"
    assert errs[0][0] == path
    assert fragment in errs[0][1]


def test_endpoint_rules_apply_inside_service_entry() -> None:
    _, r = load(ServiceEntry, """
        hosts: [a.b]
        resolution: STATIC
        ports: [{number: 80, name: http}]
        endpoints: [{address: 'unix://relative'}, {labels: {app: x}}]
    """)
    assert [p for p, _ in errors(r)] == ["spec.endpoints[0].address", "spec.endpoints[1].address"]


# -- the conformance corpus -------------------------------------------------------------------------

# `addresses: [1.2.3.4, 001:db8::]`: Kubernetes' parser (go-yaml) ends a plain scalar at ':' only
# before a blank, so it reads the IPv6 address as a string. PyYAML cannot: libyaml stops with a
# scanner error and the pure-Python parser composes {"001:db8:": null}. The fix belongs in the YAML
# reading (pymesh.config.source), not in this model.
IPV6_FLOW_LIST = ("serviceentry-valid.yaml", 0)  # `[1.2.3.4, 001:db8::]`: YAML 1.2 reads two strings


def _documents(files: list[Path]) -> list[tuple[str, int, str, yaml.Node, str]]:
    out: list[tuple[str, int, str, yaml.Node, str]] = []
    for f in files:
        for document in read_text(f.read_text(), f.name, Limits())[0]:
            i, doc = document.index, document.node
            mapping = {k.value: v for k, v in doc.value if k.value != "_err"}
            kind = mapping.get("kind")
            if kind is None or kind.value not in SPECS:
                continue
            spec: yaml.Node | None = mapping.get("spec")
            if spec is None or (isinstance(spec, yaml.ScalarNode) and spec.tag.endswith(":null")):
                spec = yaml.compose("{}")
            assert spec is not None
            meta = {k.value: v for k, v in mapping["metadata"].value} if "metadata" in mapping else {}
            namespace = meta["namespace"].value if "namespace" in meta else "default"
            out.append((f"{f.parent.name}/{f.name}", i, kind.value, spec, namespace))
    return out


def _decode_doc(doc: tuple[str, int, str, yaml.Node, str]) -> Report:
    name, index, kind, spec, namespace = doc
    r = Report(name, index)
    r.namespace = namespace
    decode(SPECS[kind], spec, r, ("spec",))
    return r


def _corpus_valid(conformance: Path) -> list[tuple[str, int, str, yaml.Node, str]]:
    return _documents(sorted([
        *conformance.glob("bookinfo/*.yaml"), *conformance.glob("istio-tutorial/*.yml"),
        *conformance.glob("istio-tutorial/*.yaml"), *conformance.glob("legacy/*"),
        *conformance.glob("validation/*-valid.yaml"),
    ]))


def test_corpus_valid(conformance: Path) -> None:
    docs = _corpus_valid(conformance)
    assert len(docs) >= 15  # 10 ServiceEntries and 5 WorkloadEntries
    named = {d[0] for d in docs}
    assert {"legacy/istio-1.0.0__egress-rule-google-apis.yaml", "bookinfo/github.yaml",
            "bookinfo/egress-rule-google-apis.yaml", "istio-tutorial/service-entry-egress-worldclockapi.yml"} <= named
    for doc in docs:
        r = _decode_doc(doc)
        assert errors(r) == [], f"{doc[0]} document {doc[1]}"


def test_corpus_valid_ipv6_in_flow_list(conformance: Path) -> None:
    doc = next(d for d in _corpus_valid(conformance) if (d[0].rpartition("/")[2], d[1]) == IPV6_FLOW_LIST)
    assert errors(_decode_doc(doc)) == []


def test_corpus_lower_case_protocols(conformance: Path) -> None:
    protocols = set()
    for _name, _index, kind, spec, _ in _corpus_valid(conformance):
        if kind == "ServiceEntry":
            protocols |= {p.protocol for p in decode(ServiceEntry, spec, Report("t", 0), ("spec",)).ports}
    assert protocols == {"HTTP", "HTTPS", "TCP"}


def test_corpus_invalid(conformance: Path) -> None:
    docs = _documents(sorted(conformance.glob("validation/*-invalid.yaml")))
    assert len(docs) == 12 + 7
    for doc in docs:
        assert errors(_decode_doc(doc)), f"{doc[0]} document {doc[1]} should be rejected"
