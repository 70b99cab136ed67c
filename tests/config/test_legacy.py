"""Legacy (Istio 1.0/1.1) models: decoding, Istio 1.1's validation, and the conformance corpus."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.config.decode import INVALID, Report, decode
from pymesh.config.legacy import KINDS
from pymesh.config.legacy.authn import MeshPolicy, MutualTls, Policy
from pymesh.config.legacy.mixer import (
    COMPILED_ADAPTERS,
    COMPILED_TEMPLATES,
    CheckNothing,
    DenierParams,
    Handler,
    Instance,
    ListcheckerParams,
    ListEntry,
    Rule,
    Status,
)
from pymesh.config.legacy.rbac import ClusterRbacConfig, RbacConfig, ServiceRole, ServiceRoleBinding
from tests.conftest import shared_dir

CORPUS = shared_dir() / "conformance"
SPECS: dict[tuple[str, str], type[Any]] = {(k.group, k.kind): k.spec for k in KINDS}
CLUSTER_SCOPED = {k.kind for k in KINDS if not k.namespaced}


def load(tp: type[Any], text: str, name: str = "", namespace: str = "default") -> tuple[Any, Report]:
    r = Report("t.yaml", 0)
    r.name, r.namespace = name, namespace
    node = yaml.compose(textwrap.dedent(text) or "{}")
    assert node is not None
    return decode(tp, node, r, ("spec",)), r


def errors(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "error"]


def warnings(r: Report) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in r.issues if i.severity == "warning"]


# -- KINDS -------------------------------------------------------------------------------------------


def test_kinds() -> None:
    assert {(k.group, k.kind, k.versions) for k in KINDS} == {
        ("authentication.istio.io", "Policy", ("v1alpha1",)),
        ("authentication.istio.io", "MeshPolicy", ("v1alpha1",)),
        ("rbac.istio.io", "RbacConfig", ("v1alpha1",)),
        ("rbac.istio.io", "ClusterRbacConfig", ("v1alpha1",)),
        ("rbac.istio.io", "ServiceRole", ("v1alpha1",)),
        ("rbac.istio.io", "ServiceRoleBinding", ("v1alpha1",)),
        ("config.istio.io", "rule", ("v1alpha2",)),
        ("config.istio.io", "handler", ("v1alpha2",)),
        ("config.istio.io", "instance", ("v1alpha2",)),
        ("config.istio.io", "listchecker", ("v1alpha2",)),
        ("config.istio.io", "listentry", ("v1alpha2",)),
        ("config.istio.io", "denier", ("v1alpha2",)),
        ("config.istio.io", "checknothing", ("v1alpha2",)),
    }
    assert all(k.legacy for k in KINDS)
    assert {"MeshPolicy", "ClusterRbacConfig"} == CLUSTER_SCOPED
    assert SPECS[("config.istio.io", "listchecker")] is ListcheckerParams


# -- authentication.istio.io: decoded values ----------------------------------------------------------


def test_policy_jwt_with_snake_case_trigger_rules() -> None:
    spec, r = load(Policy, """
        targets:
        - name: c
        - name: d
          ports: [{number: 80}, {name: http}]
        origins:
        - jwt:
            issuer: a@example.com
            jwksUri: https://example.com/jwks.json
            audiences: [x, y]
            jwt_headers: [x-token]
            trigger_rules:
            - excluded_paths: [{exact: /health}, {prefix: /static/}]
              included_paths: [{regex: "/api/.*"}]
        originIsOptional: true
        principalBinding: USE_ORIGIN
    """, name="enable-jwt")
    assert errors(r) == []
    assert warnings(r) == []
    assert [t.name for t in spec.targets] == ["c", "d"]
    assert spec.targets[1].ports[0].number == 80
    assert spec.targets[1].ports[1].name == "http"
    jwt = spec.origins[0].jwt
    assert jwt.issuer == "a@example.com"
    assert jwt.audiences == ("x", "y")
    assert jwt.jwt_headers == ("x-token",)
    rule = jwt.trigger_rules[0]
    assert rule.excluded_paths[0].exact == "/health"
    assert rule.excluded_paths[1].prefix == "/static/"
    assert rule.included_paths[0].regex == "/api/.*"
    assert spec.origin_is_optional is True
    assert spec.peer_is_optional is False
    assert spec.principal_binding == "USE_ORIGIN"


@pytest.mark.parametrize(
    ("peers", "mode"),
    [
        ("- mtls:", "STRICT"),
        ("- mtls: {}", "STRICT"),
        ("- mtls: {mode: PERMISSIVE}", "PERMISSIVE"),
        ("- mtls: {mode: STRICT}", "STRICT"),
    ],
    ids=["null-is-strict", "empty-is-strict", "permissive", "strict"],
)
def test_mesh_policy_peer_mtls(peers: str, mode: str) -> None:
    spec, r = load(MeshPolicy, "peers:\n" + peers + "\n", name="default", namespace="")
    assert errors(r) == []
    mtls = spec.peers[0].effective_mtls
    assert isinstance(mtls, MutualTls)
    assert mtls.mode == mode
    assert not mtls.allow_tls


def test_policy_defaults_and_deprecations() -> None:
    spec, r = load(Policy, """
        peers:
        - mtls: {allowTls: true}
        - jwt: {issuer: peer@example.com}
    """, name="default")
    assert errors(r) == []
    assert spec.principal_binding == "USE_PEER"
    assert spec.targets == ()
    assert spec.peers[0].effective_mtls.allow_tls is True
    assert spec.peers[1].effective_mtls is None
    assert spec.peers[1].jwt.issuer == "peer@example.com"
    assert [p for p, _ in warnings(r)] == ["spec.peers[0].mtls.allowTls", "spec.peers[1].jwt"]


def test_policy_use_origin_without_origins_warns() -> None:
    _, r = load(Policy, "principalBinding: USE_ORIGIN\n", name="default")
    assert errors(r) == []
    assert warnings(r) == [("spec.principalBinding",
                            "principalBinding USE_ORIGIN without origins rejects every request")]


def test_policy_name_unknown_skips_naming_rules() -> None:
    # Decoded without metadata (no name): only the spec's own rules apply.
    _, r = load(Policy, "peers: [{mtls: {}}]\n")
    assert r.issues == []


# -- rbac.istio.io: decoded values --------------------------------------------------------------------


def test_cluster_rbac_config_values() -> None:
    spec, r = load(ClusterRbacConfig, """
        mode: 'ON_WITH_EXCLUSION'
        exclusion: {services: [a.ns.svc.cluster.local], namespaces: [istio-system]}
        enforcement_mode: PERMISSIVE
    """, name="default", namespace="")
    assert r.issues == []
    assert spec.mode == "ON_WITH_EXCLUSION"
    assert spec.inclusion is None
    assert spec.exclusion.services == ("a.ns.svc.cluster.local",)
    assert spec.exclusion.namespaces == ("istio-system",)
    assert spec.enforcement_mode == "PERMISSIVE"


def test_rbac_config_is_deprecated_but_loads() -> None:
    spec, r = load(RbacConfig, "mode: 'ON'\n", name="default")
    assert errors(r) == []
    assert warnings(r) == [("spec", "RbacConfig is deprecated, use ClusterRbacConfig instead")]
    assert spec.mode == "ON"
    assert spec.enforcement_mode == "ENFORCED"


def test_rbac_config_empty_inclusion_is_allowed() -> None:
    spec, r = load(ClusterRbacConfig, "mode: ON_WITH_INCLUSION\ninclusion: {}\n", name="default")
    assert r.issues == []
    assert spec.inclusion.services == ()
    assert spec.inclusion.namespaces == ()


def test_service_role_and_binding_values() -> None:
    role, r = load(ServiceRole, """
        rules:
        - services: ["*"]
          methods: [GET, HEAD]
          paths: [/api/*]
          ports: [8080]
          constraints:
          - key: destination.labels[app]
            values: [reviews, ratings]
    """)
    assert r.issues == []
    rule = role.rules[0]
    assert rule.services == ("*",)
    assert rule.methods == ("GET", "HEAD")
    assert rule.ports == (8080,)
    assert rule.constraints[0].key == "destination.labels[app]"
    assert rule.constraints[0].values == ("reviews", "ratings")
    binding, r = load(ServiceRoleBinding, """
        subjects:
        - user: "*"
          properties: {"request.auth.claims[role]": customer}
        - namespaces: [prod]
          notIps: [10.0.0.0/8]
        roleRef: {kind: ServiceRole, name: viewer}
        mode: PERMISSIVE
    """)
    assert r.issues == []
    assert binding.subjects[0].user == "*"
    assert binding.subjects[0].properties == {"request.auth.claims[role]": "customer"}
    assert binding.subjects[1].namespaces == ("prod",)
    assert binding.subjects[1].not_ips == ("10.0.0.0/8",)
    assert binding.role_ref.kind == "ServiceRole"
    assert binding.role_ref.name == "viewer"
    assert binding.mode == "PERMISSIVE"


def test_binding_with_inline_actions_or_role() -> None:
    spec, r = load(ServiceRoleBinding, """
        subjects: [{names: [cluster.local/ns/default/sa/a]}]
        actions: [{services: ["*"], methods: [GET]}]
    """)
    assert r.issues == []
    assert spec.role_ref is None
    assert spec.actions[0].methods == ("GET",)
    spec, r = load(ServiceRoleBinding, "subjects: [{user: a}]\nrole: viewer\n")
    assert r.issues == []
    assert spec.role == "viewer"


def test_subject_group_is_deprecated() -> None:
    spec, r = load(ServiceRoleBinding, "subjects: [{group: admins}]\nroleRef: {kind: ServiceRole, name: r}\n")
    assert errors(r) == []
    assert spec.subjects[0].group == "admins"
    assert [p for p, _ in warnings(r)] == ["spec.subjects[0].group"]


# -- config.istio.io (Mixer): decoded values -----------------------------------------------------------


def test_listchecker_values_and_durations() -> None:
    spec, r = load(ListcheckerParams, """
        providerUrl: https://lists.example.com/allowed
        refreshInterval: 60s
        ttl: 300s
        cachingInterval: 1.5s
        cachingUseCount: 10
        overrides: ["10.57.0.0/16", "10.1.2.3", "2001:db8::1"]
        entryType: IP_ADDRESSES
        blacklist: true
    """)
    assert r.issues == []
    assert (spec.refresh_interval, spec.ttl, spec.caching_interval) == (60.0, 300.0, 1.5)
    assert spec.caching_use_count == 10
    assert spec.entry_type == "IP_ADDRESSES"
    assert spec.blacklist is True
    assert spec.overrides == ("10.57.0.0/16", "10.1.2.3", "2001:db8::1")


def test_listchecker_defaults() -> None:
    spec, r = load(ListcheckerParams, "{}")
    assert r.issues == []
    assert spec == ListcheckerParams()
    assert spec.entry_type == "STRINGS"
    assert spec.blacklist is False
    assert spec.refresh_interval == 0.0


def test_denier_values() -> None:
    spec, r = load(DenierParams, """
        status: {code: 7, message: Not allowed}
        validDuration: 5s
        validUseCount: 100
    """)
    assert r.issues == []
    assert spec.status.code == 7
    assert spec.status.message == "Not allowed"
    assert spec.valid_duration == 5.0
    assert spec.valid_use_count == 100


def test_denier_unknown_status_code_warns() -> None:
    _, r = load(DenierParams, "status: {code: 99}\n")
    assert errors(r) == []
    assert [p for p, _ in warnings(r)] == ["spec.status.code"]


def test_checknothing_and_listentry() -> None:
    spec, r = load(CheckNothing, "{}")
    assert r.issues == []
    assert spec == CheckNothing()
    spec, r = load(ListEntry, 'value: source.ip | ip("0.0.0.0")\n')
    assert r.issues == []
    assert spec.value == 'source.ip | ip("0.0.0.0")'


def test_handler_compiled_params_are_typed() -> None:
    spec, r = load(Handler, """
        compiledAdapter: listchecker
        params: {overrides: [v1, v2], refreshInterval: 2s, entryType: CASE_INSENSITIVE_STRINGS}
    """)
    assert r.issues == []
    assert spec.params == {"overrides": ["v1", "v2"], "refreshInterval": "2s", "entryType": "CASE_INSENSITIVE_STRINGS"}
    typed = spec.compiled_params
    assert isinstance(typed, ListcheckerParams)
    assert typed.overrides == ("v1", "v2")
    assert typed.refresh_interval == 2.0
    assert typed.entry_type == "CASE_INSENSITIVE_STRINGS"

    spec, r = load(Handler, "compiledAdapter: denier\nparams: {status: {code: 7, message: denied}}\n")
    assert r.issues == []
    assert spec.compiled_params == DenierParams(status=Status(code=7, message="denied"))


def test_handler_params_findings_point_at_their_line() -> None:
    # params are plain data on the model, but a compiled adapter's params are checked
    # on their own YAML nodes, so findings keep their path, line and column.
    _, r = load(Handler, "compiledAdapter: denier\nparams:\n  status:\n    message: no\n")
    assert errors(r) == [("spec.params.status.message", "YAML reads no as a boolean; quote it ('no') for the string")]
    assert (r.issues[0].line, r.issues[0].column) == (4, 14)


def test_handler_other_adapter_keeps_json_params() -> None:
    spec, r = load(Handler, """
        compiledAdapter: memquota
        params:
          quotas:
          - name: requestcount.quota.istio-system
            maxAmount: 5000
            validDuration: 1s
    """)
    assert r.issues == []
    assert spec.compiled_params is None
    assert spec.params["quotas"][0] == {"name": "requestcount.quota.istio-system", "maxAmount": 5000,
                                        "validDuration": "1s"}


def test_instance_compiled_params_are_typed() -> None:
    spec, r = load(Instance, "compiledTemplate: listentry\nparams: {value: 'source.labels[\"app\"]'}\n")
    assert r.issues == []
    assert spec.compiled_params == ListEntry(value='source.labels["app"]')
    spec, r = load(Instance, "compiledTemplate: checknothing\n")
    assert r.issues == []
    assert spec.params is None
    assert spec.compiled_params == CheckNothing()
    spec, r = load(Instance, "compiledTemplate: metric\nparams: {value: '1', dimensions: {a: b}}\n")
    assert r.issues == []
    assert spec.compiled_params is None
    assert spec.params["dimensions"] == {"a": "b"}


def test_rule_values() -> None:
    spec, r = load(Rule, """
        match: destination.labels["app"] == "ratings"
        actions:
        - handler: whitelist.listchecker
          instances: [appversion.listentry]
          name: check
        requestHeaderOperations:
        - name: x-user
          values: [request.auth.principal]
        responseHeaderOperations:
        - {name: x-debug, operation: REMOVE}
        sampling:
          random: {percentSampled: {numerator: 5, denominator: TEN_THOUSAND}}
          rateLimit: {samplingDuration: 10s, maxUnsampledEntries: 100}
    """)
    assert r.issues == []
    assert spec.match == 'destination.labels["app"] == "ratings"'
    action = spec.actions[0]
    assert action.handler == "whitelist.listchecker"
    assert action.instances == ("appversion.listentry",)
    assert action.name == "check"
    assert spec.request_header_operations[0].operation == "REPLACE"
    assert spec.response_header_operations[0].operation == "REMOVE"
    assert spec.sampling.random.percent_sampled.numerator == 5
    assert spec.sampling.random.percent_sampled.denominator == "TEN_THOUSAND"
    assert spec.sampling.rate_limit.sampling_duration == 10.0


def test_rule_without_match_always_applies() -> None:
    spec, r = load(Rule, "actions: [{handler: handler.memquota, instances: [requestcount.quota]}]\n")
    assert r.issues == []
    assert spec.match == ""


# -- invalid input ---------------------------------------------------------------------------------------

JWT = "origins:\n- jwt:\n    issuer: a@example.com\n"
PORTS = "targets:\n- name: reviews\n  ports:\n"

INVALID_CASES: list[tuple[str, type[Any], str, str, str, str]] = [
    # (id, model, metadata.name, yaml, first error path, part of the message)
    ("authn-target-not-label", Policy, "p", "targets: [{name: bad.target}]\n",
     "spec.targets[0].name", "target name 'bad.target' must be a valid label"),
    ("authn-target-missing-name", Policy, "p", "targets: [{ports: [{number: 80}]}]\n",
     "spec.targets[0].name", "must be a valid label"),
    ("authn-port-zero", Policy, "p", PORTS + "  - number: 0\n",
     "spec.targets[0].ports[0]", "port selector needs a number"),
    ("authn-port-range", Policy, "p", PORTS + "  - number: 70000\n",
     "spec.targets[0].ports[0].number", "out of range 1..65535"),
    ("authn-port-name", Policy, "p", PORTS + "  - name: HTTP_1\n",
     "spec.targets[0].ports[0].name", "not a DNS-1123 label"),
    ("authn-port-both", Policy, "p", PORTS + "  - {number: 80, name: http}\n",
     "spec.targets[0].ports[0].name", "either number or name"),
    ("authn-issuer-required", Policy, "p", "targets: [{name: a}]\norigins: [{jwt: {jwksUri: 'https://x/j'}}]\n",
     "spec.origins[0].jwt.issuer", "issuer must be set"),
    ("authn-empty-audience", Policy, "default", JWT + "    audiences: [a, '']\n",
     "spec.origins[0].jwt.audiences[1]", "audience must be non-empty string"),
    ("authn-empty-jwt-header", Policy, "default", JWT + "    jwtHeaders: ['']\n",
     "spec.origins[0].jwt.jwtHeaders[0]", "location header must be non-empty string"),
    ("authn-empty-jwt-param", Policy, "default", JWT + "    jwtParams: ['']\n",
     "spec.origins[0].jwt.jwtParams[0]", "location query must be non-empty string"),
    ("authn-jwks-uri-scheme", Policy, "default", JWT + "    jwksUri: ftp://example.com/jwks\n",
     "spec.origins[0].jwt.jwksUri", "URI scheme 'ftp' is not supported"),
    ("authn-jwks-uri-port", Policy, "default", JWT + "    jwksUri: 'https://example.com:http/jwks'\n",
     "spec.origins[0].jwt.jwksUri", "invalid jwksUri"),
    ("authn-duplicate-issuer", Policy, "default", JWT + "- jwt: {issuer: a@example.com}\n",
     "spec.origins[1].jwt.issuer", "jwt with issuer 'a@example.com' already defined"),
    ("authn-peer-origin-same-issuer", Policy, "default",
     "peers: [{jwt: {issuer: i}}]\norigins: [{jwt: {issuer: i}}]\n",
     "spec.origins[0].jwt.issuer", "already defined"),
    ("authn-origin-without-jwt", Policy, "default", "origins: [{}]\n",
     "spec.origins[0].jwt", "jwt cannot be empty"),
    ("authn-trigger-regex", Policy, "default", JWT + "    triggerRules: [{includedPaths: [{regex: '('}]}]\n",
     "spec.origins[0].jwt.triggerRules[0].includedPaths[0].regex", "invalid RE2 regex"),
    ("authn-string-match-two", Policy, "default",
     JWT + "    trigger_rules: [{excluded_paths: [{exact: /a, prefix: /b}]}]\n",
     "spec.origins[0].jwt.triggerRules[0].excludedPaths[0].prefix", "set only one of exact, prefix"),
    ("authn-peer-both-methods", Policy, "default", "peers: [{mtls: {}, jwt: {issuer: i}}]\n",
     "spec.peers[0].jwt", "either mtls or jwt"),
    ("authn-mtls-mode", Policy, "default", "peers: [{mtls: {mode: DISABLE}}]\n",
     "spec.peers[0].mtls.mode", "'DISABLE' is not one of STRICT, PERMISSIVE"),
    ("authn-principal-binding", Policy, "default", "principalBinding: USE_BOTH\n",
     "spec.principalBinding", "is not one of USE_PEER, USE_ORIGIN"),
    ("authn-namespace-policy-name", Policy, "my-policy", "peers: [{mtls: {}}]\n",
     "spec", "authentication policy with no target rules must be named 'default', found 'my-policy'"),
    ("authn-default-with-targets", Policy, "default", "targets: [{name: reviews}]\n",
     "spec.targets", "authentication policy with name 'default' must not have any target rules"),
    ("authn-mesh-policy-name", MeshPolicy, "global", "peers: [{mtls: {}}]\n",
     "spec", "cluster-scoped authentication policy name must be 'default', found 'global'"),
    ("authn-mesh-policy-targets", MeshPolicy, "default", "targets: [{name: reviews}]\n",
     "spec.targets", "cluster-scoped authentication policy must not have targets"),
    ("authn-unknown-field", Policy, "default", "peer: [{mtls: {}}]\n",
     "spec.peer", "unknown field 'peer' (did you mean 'peers'?)"),
    ("rbac-role-no-rules", ServiceRole, "r", "rules:\n",
     "spec.rules", "at least 1 rule must be specified"),
    ("rbac-rule-no-services", ServiceRole, "r", "rules: [{methods: [GET]}]\n",
     "spec.rules[0].services", "at least 1 service must be specified"),
    ("rbac-constraint-key", ServiceRole, "r", "rules: [{services: ['*'], constraints: [{values: [a]}]}]\n",
     "spec.rules[0].constraints[0].key", "key cannot be empty"),
    ("rbac-constraint-values", ServiceRole, "r", "rules: [{services: ['*'], constraints: [{key: k}]}]\n",
     "spec.rules[0].constraints[0].values", "at least 1 value must be specified"),
    ("rbac-methods-and-not-methods", ServiceRole, "r",
     "rules: [{services: ['*'], methods: [GET], notMethods: [POST]}]\n",
     "spec.rules[0].notMethods", "cannot have both regular and *not* attributes"),
    ("rbac-port-range", ServiceRole, "r", "rules: [{services: ['*'], ports: [70000]}]\n",
     "spec.rules[0].ports[0]", "not in the range of [0, 65535]"),
    ("rbac-port-constraint-clash", ServiceRole, "r",
     "rules: [{services: ['*'], ports: [80], constraints: [{key: destination.port, values: ['80']}]}]\n",
     "spec.rules[0].constraints[0].key", "cannot define destination.port"),
    ("rbac-binding-no-subjects", ServiceRoleBinding, "b", "subjects: []\nroleRef: {kind: ServiceRole, name: r}\n",
     "spec.subjects", "at least 1 subject must be specified"),
    ("rbac-empty-subject", ServiceRoleBinding, "b", "subjects: [{}]\nroleRef: {kind: ServiceRole, name: r}\n",
     "spec.subjects[0]", "empty subjects are not allowed"),
    ("rbac-roleref-missing", ServiceRoleBinding, "b", "subjects: [{user: a}]\n",
     "spec.roleRef", "roleRef must be specified"),
    ("rbac-roleref-kind", ServiceRoleBinding, "b", "subjects: [{user: a}]\nroleRef: {kind: Role, name: r}\n",
     "spec.roleRef.kind", "kind set to 'Role', currently the only supported value is 'ServiceRole'"),
    ("rbac-roleref-name", ServiceRoleBinding, "b", "subjects: [{user: a}]\nroleRef: {kind: ServiceRole}\n",
     "spec.roleRef.name", "name cannot be empty"),
    ("rbac-roleref-and-role", ServiceRoleBinding, "b",
     "subjects: [{user: a}]\nroleRef: {kind: ServiceRole, name: r}\nrole: r\n",
     "spec.role", "exactly one of roleRef, role, or actions"),
    ("rbac-role-slash", ServiceRoleBinding, "b", "subjects: [{user: a}]\nrole: /\n",
     "spec.role", "role cannot have an empty ServiceRole name"),
    ("rbac-actions-need-services", ServiceRoleBinding, "b", "subjects: [{user: a}]\nactions: [{methods: [GET]}]\n",
     "spec.actions[0].services", "at least 1 service must be specified"),
    ("rbac-star-in-names", ServiceRoleBinding, "b", "subjects: [{names: ['*']}]\nrole: r\n",
     "spec.subjects[0].names[0]", "do not use * in names"),
    ("rbac-property-clash", ServiceRoleBinding, "b",
     "subjects: [{ips: [10.0.0.1], properties: {source.ip: 10.0.0.2}}]\nrole: r\n",
     "spec.subjects[0].properties['source.ip']", "cannot define source.ip in properties"),
    ("rbac-config-name", ClusterRbacConfig, "rbac", "mode: 'OFF'\n",
     "spec", "ClusterRbacConfig has invalid name 'rbac', name must be 'default'"),
    ("rbac-config-inclusion", ClusterRbacConfig, "default", "mode: ON_WITH_INCLUSION\n",
     "spec.inclusion", "inclusion cannot be null (use 'inclusion: {}' for none)"),
    ("rbac-config-exclusion", RbacConfig, "default", "mode: ON_WITH_EXCLUSION\ninclusion: {}\n",
     "spec.exclusion", "exclusion cannot be null (use 'exclusion: {}' for none)"),
    ("rbac-config-unquoted-on", ClusterRbacConfig, "default", "mode: ON\n",
     "spec.mode", "YAML reads ON as a boolean"),
    ("rbac-config-enforcement-mode", ClusterRbacConfig, "default", "enforcementMode: DRY_RUN\n",
     "spec.enforcementMode", "is not one of ENFORCED, PERMISSIVE"),
    ("mixer-listchecker-bad-field", ListcheckerParams, "l", "badField: foo\n",
     "spec.badField", "unknown field 'badField'"),
    ("mixer-listentry-bad-field", ListEntry, "l", "badField: foo\n",
     "spec.badField", "unknown field 'badField'"),
    ("mixer-rule-bad-field", Rule, "r", "badField: foo\nactions: [{handler: h, instances: [i]}]\n",
     "spec.badField", "unknown field 'badField'"),
    ("mixer-provider-url", ListcheckerParams, "l", "providerUrl: lists.example.com/x\nrefreshInterval: 1s\nttl: 2s\n",
     "spec.providerUrl", "URL scheme and host cannot be empty"),
    ("mixer-refresh-interval", ListcheckerParams, "l",
     "providerUrl: https://example.com/l\nrefreshInterval: 500ms\nttl: 10s\n",
     "spec.refreshInterval", "refresh interval must be at least 1 second, it is 0.5s"),
    ("mixer-ttl", ListcheckerParams, "l", "providerUrl: https://example.com/l\nrefreshInterval: 60s\nttl: 30s\n",
     "spec.ttl", "ttl must not be shorter than refreshInterval"),
    ("mixer-caching-use-count", ListcheckerParams, "l", "cachingUseCount: -1\n",
     "spec.cachingUseCount", "caching use count must be >= 0, it is -1"),
    ("mixer-negative-duration", ListcheckerParams, "l", "cachingInterval: -1s\n",
     "spec.cachingInterval", "negative duration"),
    ("mixer-ip-override", ListcheckerParams, "l", "entryType: IP_ADDRESSES\noverrides: [10.0.0.0/8, 10.0.0.300]\n",
     "spec.overrides[1]", "could not parse ip address override '10.0.0.300'"),
    ("mixer-regex-override", ListcheckerParams, "l", "entryType: REGEX\noverrides: ['v(1']\n",
     "spec.overrides[0]", "could not parse regex override"),
    ("mixer-entry-type", ListcheckerParams, "l", "entryType: IPS\n",
     "spec.entryType", "is not one of STRINGS, CASE_INSENSITIVE_STRINGS, IP_ADDRESSES, REGEX"),
    ("mixer-denier-duration", DenierParams, "d", "validDuration: 1x\n",
     "spec.validDuration", "invalid duration '1x'"),
    ("mixer-denier-code-type", DenierParams, "d", "status: {code: seven}\n",
     "spec.status.code", "expected an integer"),
    ("mixer-handler-params-bad-field", Handler, "h", "compiledAdapter: listchecker\nparams: {badField: foo}\n",
     "spec.params.badField", "unknown field 'badField'"),
    ("mixer-handler-params-checked", Handler, "h",
     "compiledAdapter: listchecker\nparams: {entryType: IP_ADDRESSES, overrides: [nope]}\n",
     "spec.params.overrides[0]", "could not parse ip address override 'nope'"),
    ("mixer-handler-denier-params", Handler, "h", "compiledAdapter: denier\nparams: {status: {code: seven}}\n",
     "spec.params.status.code", "expected an integer"),
    ("mixer-handler-no-adapter", Handler, "h", "params: {a: b}\n",
     "spec.compiledAdapter", "handler must name its adapter"),
    ("mixer-handler-params-not-mapping", Handler, "h", "compiledAdapter: prometheus\nparams: [a]\n",
     "spec.params", "params must be a mapping"),
    ("mixer-handler-connection-auth", Handler, "h",
     "adapter: my-adapter\nconnection: {address: 'x:1', authentication: {tls: {}, mutual: {}}}\n",
     "spec.connection.authentication.mutual", "set either tls or mutual"),
    ("mixer-instance-params-typo", Instance, "i", "compiledTemplate: listentry\nparams: {valu: source.ip}\n",
     "spec.params.valu", "unknown field 'valu' (did you mean 'value'?)"),
    ("mixer-instance-no-template", Instance, "i", "params: {value: source.ip}\n",
     "spec.compiledTemplate", "missing compiled template"),
    ("mixer-rule-no-actions", Rule, "r", "match: 'true'\n",
     "spec.actions", "no valid actions found in rule"),
    ("mixer-action-no-instances", Rule, "r", "actions: [{handler: h.denier}]\n",
     "spec.actions[0].instances", "action needs at least one instance"),
    ("mixer-action-no-handler", Rule, "r", "actions: [{instances: [i.checknothing]}]\n",
     "spec.actions[0].handler", "action needs a handler"),
    ("mixer-action-duplicate-instance", Rule, "r", "actions: [{handler: h, instances: [i, i]}]\n",
     "spec.actions[0].instances[1]", "action specified the same instance multiple times"),
    ("mixer-header-op-name", Rule, "r", "requestHeaderOperations: [{values: [a]}]\n",
     "spec.requestHeaderOperations[0].name", "header operation needs a header name"),
]


@pytest.mark.parametrize(
    ("model", "name", "text", "path", "message"),
    [case[1:] for case in INVALID_CASES],
    ids=[case[0] for case in INVALID_CASES],
)
def test_invalid(model: type[Any], name: str, text: str, path: str, message: str) -> None:
    namespace = "" if model in (MeshPolicy, ClusterRbacConfig) else "default"
    _, r = load(model, text, name=name, namespace=namespace)
    assert r.failed
    first_path, first_message = errors(r)[0]
    assert first_path == path
    assert message in first_message


WARNING_CASES: list[tuple[str, type[Any], str, str, str]] = [
    ("authn-target-labels", Policy, "targets: [{name: a, labels: {app: a}}]\n",
     "spec.targets[0].labels", "never implemented"),
    ("authn-empty-string-match", Policy, JWT + "    triggerRules: [{includedPaths: [{}]}]\n",
     "spec.origins[0].jwt.triggerRules[0].includedPaths[0]", "matches no path"),
    ("rbac-workload-selectors", ClusterRbacConfig,
     "mode: ON_WITH_INCLUSION\ninclusion: {workloadSelectors: [{labels: {app: a}}]}\n",
     "spec.inclusion.workloadSelectors", "never implemented"),
]


@pytest.mark.parametrize(
    ("model", "text", "path", "message"),
    [case[1:] for case in WARNING_CASES],
    ids=[case[0] for case in WARNING_CASES],
)
def test_warning(model: type[Any], text: str, path: str, message: str) -> None:
    _, r = load(model, text, name="default" if "targets" not in text else "p")
    assert errors(r) == []
    ((warn_path, warn_message),) = warnings(r)
    assert warn_path == path
    assert message in warn_message


def test_invalid_spec_is_not_returned() -> None:
    spec, r = load(ListcheckerParams, "badField: foo\n")
    assert spec is INVALID
    assert r.failed


# -- the conformance corpus --------------------------------------------------------------------------


def _documents(paths: list[Path]) -> list[tuple[str, int, str, str, str, str, yaml.Node | None]]:
    """(file, index, group, kind, name, namespace, spec node) for each document of a legacy kind."""
    out = []
    for path in paths:
        for i, doc in enumerate(yaml.compose_all(path.read_text())):
            if not isinstance(doc, yaml.MappingNode):
                continue
            top = {k.value: v for k, v in doc.value}
            api, kind = top.get("apiVersion"), top.get("kind")
            if api is None or kind is None:
                continue
            group = api.value.rpartition("/")[0]
            if (group, kind.value) not in SPECS:
                continue
            meta = {k.value: v.value for k, v in top["metadata"].value}
            namespace = "" if kind.value in CLUSTER_SCOPED else meta.get("namespace", "default")
            rel = str(path.relative_to(CORPUS))
            out.append((rel, i, group, kind.value, meta.get("name", ""), namespace, top.get("spec")))
    return out


def _decode(group: str, kind: str, name: str, namespace: str, spec: yaml.Node | None) -> tuple[Any, Report]:
    r = Report("corpus", 0)
    r.name, r.namespace = name, namespace
    if spec is None or (isinstance(spec, yaml.ScalarNode) and spec.tag == "tag:yaml.org,2002:null"):
        spec = yaml.MappingNode("tag:yaml.org,2002:map", [])
    if isinstance(spec, yaml.MappingNode):  # drop Istio's expected-error hint, if any
        spec.value = [(k, v) for k, v in spec.value if k.value != "_err"]
    return decode(SPECS[(group, kind)], spec, r, ("spec",)), r


VALID_DOCS = _documents(
    sorted((CORPUS / "legacy").glob("*.y*ml"))
    + sorted((CORPUS / "istio-tutorial").glob("*.y*ml"))
    + sorted((CORPUS / "bookinfo").glob("*.y*ml"))
    + sorted((CORPUS / "validation").glob("*-valid.yaml"))
)
INVALID_FILES = [
    p for p in sorted((CORPUS / "validation").glob("*-invalid.yaml"))
    if p.name.startswith(("authentication-v1alpha1-", "rbac-v1alpha1-", "config-v1alpha2-"))
]


def test_corpus_has_legacy_documents() -> None:
    kinds = {d[3] for d in VALID_DOCS}
    assert len(VALID_DOCS) >= 80
    assert {"Policy", "MeshPolicy", "RbacConfig", "ClusterRbacConfig", "ServiceRole", "ServiceRoleBinding", "rule",
            "handler", "instance", "listchecker", "listentry", "denier", "checknothing"} <= kinds
    assert len(INVALID_FILES) == 6


@pytest.mark.parametrize("doc", VALID_DOCS, ids=[f"{d[0]}#{d[1]}-{d[3]}" for d in VALID_DOCS])
def test_corpus_document_loads(doc: tuple[str, int, str, str, str, str, yaml.Node | None]) -> None:
    _, _, group, kind, name, namespace, spec = doc
    value, r = _decode(group, kind, name, namespace, spec)
    assert errors(r) == []
    assert value is not INVALID
    if kind == "handler":
        assert (value.compiled_params is None) is (value.compiled_adapter not in COMPILED_ADAPTERS)
    if kind == "instance":
        assert (value.compiled_params is None) is (value.compiled_template not in COMPILED_TEMPLATES)


@pytest.mark.parametrize("path", INVALID_FILES, ids=[p.name for p in INVALID_FILES])
def test_corpus_invalid_file_is_rejected(path: Path) -> None:
    # The file is named <group>-<version>-<Kind>-invalid.yaml; helper documents of other
    # kinds in it (the denier and checknothing a rule points at) are valid.
    subject = path.name.split("-")[2]
    docs = _documents([path])
    assert any(d[3] == subject for d in docs)
    for _, _, group, kind, name, namespace, spec in docs:
        _, r = _decode(group, kind, name, namespace, spec)
        assert r.failed is (kind == subject), (kind, r.issues)


def test_corpus_samples_decode_as_istio_meant() -> None:
    mesh = next(d for d in VALID_DOCS if d[0] == "legacy/istio-1.1.17__global-mtls.yaml")
    spec, _ = _decode(*mesh[2:])
    assert spec.peers[0].effective_mtls == MutualTls(mode="STRICT")
    jwt = next(d for d in VALID_DOCS if d[0] == "legacy/istio-1.1.17__authn-policy-jwt.yaml")
    spec, _ = _decode(*jwt[2:])
    assert spec.origins[0].jwt.trigger_rules[0].excluded_paths[1].exact == "/jwt2"
    assert spec.origins[1].jwt.trigger_rules[0].included_paths[0].exact == "/jwt2"
    assert spec.targets[1].ports[0].number == 80
    assert spec.principal_binding == "USE_ORIGIN"
    ip = next(d for d in VALID_DOCS if d[0] == "legacy/istio-1.1.17__mixer-rule-deny-ip.yaml" and d[3] == "handler")
    spec, _ = _decode(*ip[2:])
    assert spec.compiled_params == ListcheckerParams(overrides=("10.57.0.0/16",), entry_type="IP_ADDRESSES")
    permissive = next(d for d in VALID_DOCS if d[0] == "legacy/istio-1.1.17__rbac-config-on-permissive.yaml")
    spec, _ = _decode(*permissive[2:])
    assert spec.enforcement_mode == "PERMISSIVE"
    assert spec.inclusion.namespaces == ("default",)
