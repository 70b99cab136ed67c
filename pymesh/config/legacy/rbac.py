"""rbac.istio.io/v1alpha1: ``ClusterRbacConfig``/``RbacConfig``, ``ServiceRole``, ``ServiceRoleBinding``.

Fields follow istio/api ``rbac/v1alpha1/rbac.proto`` up to its last revision (Istio 1.5),
so 1.0 and 1.1 files and the later ``not*``/``ports``/``role``/``actions`` fields load.
Validation follows Istio 1.1's ``pilot/pkg/model/validation.go``, with the checks Istio
1.4 added for the later fields (``pkg/config/validation/validation.go``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pymesh.config.decode import Checker, field
from pymesh.config.resource import KindSpec

__all__ = [
    "KINDS",
    "AccessRule",
    "ClusterRbacConfig",
    "Constraint",
    "RbacConfig",
    "RbacTarget",
    "RbacWorkloadSelector",
    "RoleRef",
    "ServiceRole",
    "ServiceRoleBinding",
    "Subject",
]

DEFAULT_RBAC_CONFIG_NAME = "default"
EnforcementMode = Literal["ENFORCED", "PERMISSIVE"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Constraint:
    """An extra condition of a rule: the attribute ``key`` has one of ``values``."""

    key: str = ""
    values: tuple[str, ...] = ()

    def _check(self, v: Checker) -> None:
        if not self.key:
            v.error("key cannot be empty for a constraint", "key")
        if not self.values:
            v.error("at least 1 value must be specified for a constraint", "values")


def _check_ports(v: Checker, ports: tuple[int, ...], wire: str) -> None:
    for i, port in enumerate(ports):
        if not 0 <= port <= 65535:
            v.error(f"port {port} is not in the range of [0, 65535]", wire, i)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRule:
    """What a role allows: services, and optionally methods, paths, ports and constraints."""

    services: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    constraints: tuple[Constraint, ...] = ()

    def _check(self, v: Checker) -> None:
        if not self.services:
            v.error("at least 1 service must be specified for a rule", "services")
        if self.methods and self.not_methods:
            v.error("cannot have both regular and *not* attributes for the same kind "
                    "(i.e. methods and notMethods)", "notMethods")
        if self.ports and self.not_ports:
            v.error("cannot have both regular and *not* attributes for the same kind "
                    "(i.e. ports and notPorts)", "notPorts")
        _check_ports(v, self.ports, "ports")
        _check_ports(v, self.not_ports, "notPorts")
        for i, constraint in enumerate(self.constraints):
            if constraint.key == "destination.port" and (self.ports or self.not_ports):
                v.error("cannot define destination.port as a constraint when ports or notPorts is set",
                        "constraints", i, "key")


def _check_rules(v: Checker, rules: tuple[AccessRule, ...], wire: str) -> None:
    if not rules:
        v.error("at least 1 rule must be specified", wire)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRole:
    """A named set of access rules, granted by ServiceRoleBindings in the same namespace."""

    rules: tuple[AccessRule, ...] = ()

    def _check(self, v: Checker) -> None:
        _check_rules(v, self.rules, "rules")


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """Who a binding grants the role to; set fields are ANDed, subjects are ORed."""

    user: str = ""  # source.principal; "*" is anyone
    names: tuple[str, ...] = ()
    not_names: tuple[str, ...] = ()
    group: str = field(default="", deprecated="subject group is deprecated: use groups")
    groups: tuple[str, ...] = ()
    not_groups: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    not_ips: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.user or self.group or self.properties or self.names or self.not_names
                    or self.groups or self.not_groups or self.namespaces or self.not_namespaces
                    or self.ips or self.not_ips)

    def _check(self, v: Checker) -> None:
        if self.is_empty:
            v.error("empty subjects are not allowed: set user, names, namespaces, ips, groups or properties")
        first_class = {
            "source.principal": self.names,
            "request.auth.claims[groups]": self.groups,
            "source.namespace": self.namespaces,
            "source.ip": self.ips,
        }
        for key in self.properties:
            if first_class.get(key):
                v.error(f"cannot define {key} in properties because a similar first-class field is set",
                        "properties", key)
        for wire, values in (("names", self.names), ("notNames", self.not_names)):
            if "*" in values:
                v.error(f"do not use * in {wire} (use user: '*' for anyone)", wire, values.index("*"))


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleRef:
    """The ServiceRole a binding grants, in the binding's namespace."""

    kind: str = ""
    name: str = ""

    def _check(self, v: Checker) -> None:
        if self.kind != "ServiceRole":
            v.error(f"kind set to {self.kind!r}, currently the only supported value is 'ServiceRole'", "kind")
        if not self.name:
            v.error("name cannot be empty", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRoleBinding:
    """Grants a role (``roleRef``, ``role`` or inline ``actions``) to subjects."""

    subjects: tuple[Subject, ...] = ()
    role_ref: RoleRef | None = None
    mode: EnforcementMode = "ENFORCED"
    # Later Istio (1.3+) alternatives to roleRef.
    actions: tuple[AccessRule, ...] = ()
    role: str = ""

    def _check(self, v: Checker) -> None:
        if not self.subjects:
            v.error("at least 1 subject must be specified", "subjects")
        given = sum((self.role_ref is not None, bool(self.actions), bool(self.role)))
        if given == 0:
            v.error("roleRef must be specified (or, since Istio 1.3, role or actions)", "roleRef")
        elif given > 1:
            v.error("exactly one of roleRef, role, or actions must be specified",
                    "role" if self.role else "actions")
        if self.role == "/":
            v.error("role cannot have an empty ServiceRole name", "role")


@dataclass(frozen=True, slots=True, kw_only=True)
class RbacWorkloadSelector:
    """Istio 1.1's hidden workload selector of an RBAC target: pod labels."""

    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RbacTarget:
    """The services and namespaces that ON_WITH_INCLUSION / ON_WITH_EXCLUSION name."""

    services: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    # Istio 1.1 field, hidden and never implemented, removed later; accepted so 1.1 files load.
    workload_selectors: tuple[RbacWorkloadSelector, ...] = field(
        default=(),
        deprecated="workloadSelectors in an RBAC target were never implemented by Istio and are ignored",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterRbacConfig:
    """Where RBAC is enforced: the mesh-wide singleton named ``default``."""

    mode: Literal["OFF", "ON", "ON_WITH_INCLUSION", "ON_WITH_EXCLUSION"] = "OFF"
    inclusion: RbacTarget | None = None
    exclusion: RbacTarget | None = None
    enforcement_mode: EnforcementMode = "ENFORCED"

    def _check(self, v: Checker) -> None:
        kind = type(self).__name__
        name = v.report.name
        if name and name != DEFAULT_RBAC_CONFIG_NAME:
            v.error(f"{kind} has invalid name {name!r}, name must be {DEFAULT_RBAC_CONFIG_NAME!r}")
        if self.mode == "ON_WITH_INCLUSION" and self.inclusion is None:
            v.error("inclusion cannot be null (use 'inclusion: {}' for none)", "inclusion")
        if self.mode == "ON_WITH_EXCLUSION" and self.exclusion is None:
            v.error("exclusion cannot be null (use 'exclusion: {}' for none)", "exclusion")


@dataclass(frozen=True, slots=True, kw_only=True)
class RbacConfig(ClusterRbacConfig):
    """The Istio 1.0 spelling of ClusterRbacConfig, same schema; deprecated from Istio 1.1."""

    def _check(self, v: Checker) -> None:
        ClusterRbacConfig._check(self, v)
        v.warn("RbacConfig is deprecated, use ClusterRbacConfig instead")


_GROUP = "rbac.istio.io"

KINDS: tuple[KindSpec, ...] = (
    KindSpec(_GROUP, "ClusterRbacConfig", ("v1alpha1",), ClusterRbacConfig, legacy=True, namespaced=False),
    KindSpec(_GROUP, "RbacConfig", ("v1alpha1",), RbacConfig, legacy=True),  # namespaced CRD in 1.0
    KindSpec(_GROUP, "ServiceRole", ("v1alpha1",), ServiceRole, legacy=True),
    KindSpec(_GROUP, "ServiceRoleBinding", ("v1alpha1",), ServiceRoleBinding, legacy=True),
)
