"""config.istio.io/v1alpha2 Mixer policy kinds pymesh acts on (Istio 1.0 / 1.1).

``rule`` (istio/api ``policy/v1beta1/cfg.proto``); the adapters ``listchecker``
(``mixer/adapter/list/config/config.proto``) and ``denier``
(``mixer/adapter/denier/config/config.proto``); the templates ``listentry`` and
``checknothing``. Istio 1.0 writes each adapter and template as its own kind; Istio 1.1
also writes them as the generic ``handler`` (``compiledAdapter``) and ``instance``
(``compiledTemplate``) kinds, whose ``params`` are checked against the same models here
and kept as plain data for every other adapter (memquota, prometheus, ...).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

import yaml

from pymesh.config.decode import INVALID, Checker, Invalid, Json, Report, decode, field
from pymesh.config.legacy.expr import ExpressionError, parse, parse_match
from pymesh.config.resource import KindSpec
from pymesh.config.types import Duration, DurationOrZero, compile_re2, fetch_target_warning

__all__ = [
    "COMPILED_ADAPTERS",
    "COMPILED_TEMPLATES",
    "KINDS",
    "Action",
    "CheckNothing",
    "Connection",
    "ConnectionAuthentication",
    "DenierParams",
    "FractionalPercent",
    "Handler",
    "HeaderOperationTemplate",
    "Instance",
    "ListEntry",
    "ListcheckerParams",
    "Mutual",
    "OAuth",
    "RandomSampling",
    "RateLimitSampling",
    "Rule",
    "Sampling",
    "Status",
    "Tls",
]

T = TypeVar("T")

# -- adapters and templates ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ListcheckerParams:
    """The ``list`` adapter: is a value on a (white or black) list?"""

    provider_url: str = ""
    refresh_interval: DurationOrZero = 0.0
    ttl: DurationOrZero = 0.0
    caching_interval: DurationOrZero = 0.0
    caching_use_count: int = 0
    overrides: tuple[str, ...] = ()
    entry_type: Literal["STRINGS", "CASE_INSENSITIVE_STRINGS", "IP_ADDRESSES", "REGEX"] = "STRINGS"
    blacklist: bool = False

    def _check(self, v: Checker) -> None:
        if self.provider_url:
            try:
                url = urlsplit(self.provider_url)
                ok = bool(url.scheme and url.hostname)
            except ValueError:
                ok = False
            if not ok:
                v.error(f"providerUrl {self.provider_url!r}: URL scheme and host cannot be empty", "providerUrl")
            internal = fetch_target_warning(self.provider_url, "providerUrl")
            if internal is not None:
                v.warn(internal, "providerUrl")
            if self.refresh_interval < 1.0:
                v.error(f"refresh interval must be at least 1 second, it is {self.refresh_interval:g}s",
                        "refreshInterval")
            elif self.ttl < self.refresh_interval:
                v.error(f"ttl must not be shorter than refreshInterval, ttl is {self.ttl:g}s "
                        f"and refreshInterval is {self.refresh_interval:g}s", "ttl")
        if self.caching_use_count < 0:
            v.error(f"caching use count must be >= 0, it is {self.caching_use_count}", "cachingUseCount")
        for i, entry in enumerate(self.overrides):
            if self.entry_type == "IP_ADDRESSES":
                try:  # as Mixer: a bare address is a /32 prefix
                    ipaddress.ip_network(entry if "/" in entry else f"{entry}/32", strict=False)
                except ValueError:
                    v.error(f"could not parse ip address override {entry!r}", "overrides", i)
            elif self.entry_type == "REGEX":
                try:
                    compile_re2(entry)
                except Invalid as exc:
                    v.error(f"could not parse regex override: {exc.message}", "overrides", i)


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """``google.rpc.Status``: a gRPC code (7 = PERMISSION_DENIED), a message, details."""

    code: int = 0
    message: str = ""
    details: tuple[Json, ...] = ()

    def _check(self, v: Checker) -> None:
        if not 0 <= self.code <= 16:
            v.warn(f"status code {self.code} is not a gRPC code (0..16): it is answered as HTTP 500", "code")


@dataclass(frozen=True, slots=True, kw_only=True)
class DenierParams:
    """The ``denier`` adapter: answer every check with ``status``."""

    status: Status = Status()
    valid_duration: DurationOrZero = 0.0
    valid_use_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ListEntry:
    """The ``listentry`` template: the expression whose value a listchecker looks up."""

    value: str = ""  # e.g. source.labels["app"], source.ip | ip("0.0.0.0")

    def _check(self, v: Checker) -> None:
        if not self.value:
            v.warn("listentry value is empty: every list check answers INVALID_ARGUMENT", "value")
            return
        try:
            expr = parse(self.value)
        except ExpressionError as exc:
            v.error(f"invalid value expression: {exc}", "value")
            return
        if expr.type not in ("STRING", "IP_ADDRESS"):
            v.warn(f"value is a {expr.type} expression; a list checker looks up only a STRING or an "
                   "IP_ADDRESS and answers INVALID_ARGUMENT otherwise", "value")


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckNothing:
    """The ``checknothing`` template: a check that carries no data (used with denier)."""


AdapterParams = ListcheckerParams | DenierParams
TemplateParams = ListEntry | CheckNothing

COMPILED_ADAPTERS: Mapping[str, type[AdapterParams]] = {"listchecker": ListcheckerParams, "denier": DenierParams}
COMPILED_TEMPLATES: Mapping[str, type[TemplateParams]] = {"listentry": ListEntry, "checknothing": CheckNothing}


# -- handler and instance (Istio 1.1) ------------------------------------------------------


def _check_params(v: Checker, params: Any, model: type[Any] | None) -> None:
    if params is None:
        return
    if not isinstance(params, dict):
        v.error("params must be a mapping", "params")
        return
    if model is not None:
        # decode.Checker has no public accessor for the node it points at; decoding the
        # params node itself keeps each finding's path, line and column.
        node: yaml.Node = v.at("params").node
        decode(model, node, v.report, (*v.path, "params"))


def _params_as(model: type[T], params: Any) -> T:
    """``params``, already validated by ``_check``, as ``model``."""
    node = yaml.compose(yaml.safe_dump({} if params is None else params), Loader=yaml.SafeLoader)
    assert node is not None  # a dumped value composes to a node
    report = Report("<params>", None)
    value = decode(model, node, report, ("params",))
    if value is INVALID:
        raise ValueError("; ".join(f"{i.path}: {i.message}" for i in report.issues))
    return cast(T, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuth:
    """OAuth client credentials an out-of-process adapter connection fetches a token with."""

    client_id: str = ""
    client_secret: str = ""
    token_url: str = ""
    scopes: tuple[str, ...] = ()
    endpoint_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tls:
    """Server-side TLS plus a token to an out-of-process adapter."""

    ca_certificates: str = ""
    token_path: str = ""
    oauth: OAuth | None = None
    auth_header: Literal["PLAIN", "BEARER"] | None = None
    custom_header: str = ""
    server_name: str = ""

    def _check(self, v: Checker) -> None:
        if self.token_path and self.oauth is not None:
            v.error("set either tokenPath or oauth, not both", "oauth")
        if self.auth_header is not None and self.custom_header:
            v.error("set either authHeader or customHeader, not both", "customHeader")


@dataclass(frozen=True, slots=True, kw_only=True)
class Mutual:
    """Mutual TLS to an out-of-process adapter."""

    private_key: str = ""
    client_certificate: str = ""
    ca_certificates: str = ""
    server_name: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionAuthentication:
    """``Authentication`` of a handler connection: tls or mutual."""

    tls: Tls | None = None
    mutual: Mutual | None = None

    def _check(self, v: Checker) -> None:
        if self.tls is not None and self.mutual is not None:
            v.error("set either tls or mutual, not both", "mutual")


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """Where an out-of-process adapter listens."""

    address: str = ""
    timeout: Duration | None = None
    authentication: ConnectionAuthentication | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Handler:
    """A configured adapter. ``params`` stays plain data; see :attr:`compiled_params`."""

    name: str = ""
    compiled_adapter: str = ""
    adapter: str = ""  # an out-of-process adapter
    params: Json = None
    connection: Connection | None = None

    @property
    def compiled_params(self) -> AdapterParams | None:
        """``params`` as the listchecker or denier model, None for other adapters."""
        model = COMPILED_ADAPTERS.get(self.compiled_adapter)
        return None if model is None else _params_as(model, self.params)

    def _check(self, v: Checker) -> None:
        if not self.compiled_adapter and not self.adapter:
            v.error("handler must name its adapter in compiledAdapter (or adapter, for an out-of-process one)",
                    "compiledAdapter")
        _check_params(v, self.params, COMPILED_ADAPTERS.get(self.compiled_adapter))


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """A template filled from request attributes. ``params`` stays plain data."""

    name: str = ""
    compiled_template: str = ""
    template: str = ""  # a template of an out-of-process adapter
    params: Json = None
    attribute_bindings: Mapping[str, str] = field(default_factory=dict)

    @property
    def compiled_params(self) -> TemplateParams | None:
        """``params`` as the listentry or checknothing model, None for other templates."""
        model = COMPILED_TEMPLATES.get(self.compiled_template)
        return None if model is None else _params_as(model, self.params)

    def _check(self, v: Checker) -> None:
        if not self.compiled_template and not self.template:
            v.error("missing compiled template: set compiledTemplate (or template)", "compiledTemplate")
        _check_params(v, self.params, COMPILED_TEMPLATES.get(self.compiled_template))


# -- rule --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderOperationTemplate:
    """A request or response header change; ``values`` are expressions."""

    name: str = ""
    values: tuple[str, ...] = ()
    operation: Literal["REPLACE", "REMOVE", "APPEND"] = "REPLACE"

    def _check(self, v: Checker) -> None:
        if not self.name:
            v.error("header operation needs a header name", "name")


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """Send the named instances to the named handler.

    References are ``<name>[.<namespace>]`` for handler/instance kinds and
    ``<name>.<kind>[.<namespace>]`` for the Istio 1.0 per-adapter kinds.
    """

    handler: str = ""
    instances: tuple[str, ...] = ()
    name: str = ""

    def _check(self, v: Checker) -> None:
        if not self.handler:
            v.error("action needs a handler", "handler")
        if not self.instances:
            v.error("action needs at least one instance (No valid instances found)", "instances")
        seen: set[str] = set()
        for i, ref in enumerate(self.instances):
            if ref in seen:
                v.error(f"action specified the same instance multiple times: instance={ref!r}", "instances", i)
            seen.add(ref)


@dataclass(frozen=True, slots=True, kw_only=True)
class FractionalPercent:
    numerator: int = 0
    denominator: Literal["HUNDRED", "TEN_THOUSAND"] = "HUNDRED"

    def _check(self, v: Checker) -> None:
        if self.numerator < 0:
            v.error(f"numerator {self.numerator} must be >= 0", "numerator")


@dataclass(frozen=True, slots=True, kw_only=True)
class RandomSampling:
    """Sample a fraction of requests (telemetry rules)."""

    attribute_expression: str = ""
    percent_sampled: FractionalPercent | None = None
    use_independent_randomness: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSampling:
    """Sample at most ``maxUnsampledEntries`` per ``samplingDuration`` (telemetry rules)."""

    sampling_duration: DurationOrZero = 0.0
    max_unsampled_entries: int = 0
    sampling_rate: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampling:
    random: RandomSampling | None = None
    rate_limit: RateLimitSampling | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """When ``match`` (a CEXL predicate; empty = always) holds, run the actions."""

    match: str = ""
    actions: tuple[Action, ...] = ()
    request_header_operations: tuple[HeaderOperationTemplate, ...] = ()
    response_header_operations: tuple[HeaderOperationTemplate, ...] = ()
    sampling: Sampling | None = None

    def _check(self, v: Checker) -> None:
        try:
            parse_match(self.match)
        except ExpressionError as exc:
            v.error(f"invalid match expression: {exc}", "match")
        if not (self.actions or self.request_header_operations or self.response_header_operations):
            v.error("no valid actions found in rule: set actions or header operations", "actions")


_GROUP = "config.istio.io"
_V = ("v1alpha2",)

KINDS: tuple[KindSpec, ...] = (
    KindSpec(_GROUP, "rule", _V, Rule, legacy=True),
    KindSpec(_GROUP, "handler", _V, Handler, legacy=True),
    KindSpec(_GROUP, "instance", _V, Instance, legacy=True),
    KindSpec(_GROUP, "listchecker", _V, ListcheckerParams, legacy=True),
    KindSpec(_GROUP, "denier", _V, DenierParams, legacy=True),
    KindSpec(_GROUP, "listentry", _V, ListEntry, legacy=True),
    KindSpec(_GROUP, "checknothing", _V, CheckNothing, legacy=True),
)
