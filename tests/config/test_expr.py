"""Mixer expression language: parsing, type checking, evaluation, and the rule/listentry checks."""

from __future__ import annotations

import datetime as dt
import ipaddress
import textwrap
from typing import Any

import pytest
import yaml

from pymesh.config.decode import Report, decode
from pymesh.config.legacy.expr import (
    ATTRIBUTES,
    Attribute,
    Binary,
    Constant,
    DnsName,
    EvaluationError,
    ExpressionError,
    Index,
    evaluate,
    evaluate_match,
    parse,
    parse_match,
)
from pymesh.config.legacy.mixer import Instance, ListEntry, Rule
from tests.conftest import shared_dir

# -- parsing and types -----------------------------------------------------------------------------

VALID = [
    ("label-eq", 'destination.labels["app"] == "ratings"', "BOOL", {"destination.labels"}),
    ("and-chain", 'destination.labels["app"] == "ratings" && source.labels["app"]=="reviews" '
                  '&& source.labels["version"] == "v3"', "BOOL", {"destination.labels", "source.labels"}),
    ("source-user", 'source.user == "cluster.local/ns/default/sa/bookinfo-productpage"', "BOOL", {"source.user"}),
    ("header", 'request.headers["x-user"] == "john"', "BOOL", {"request.headers"}),
    ("ip-default", 'source.ip | ip("0.0.0.0")', "IP_ADDRESS", {"source.ip"}),
    ("default-chain", 'source.labels["app"] | source.service | "unknown"', "STRING",
     {"source.labels", "source.service"}),
    ("bool-literal", "true", "BOOL", set()),
    ("bool-any-case", "TRUE || False", "BOOL", set()),
    ("not", '!(request.method == "GET")', "BOOL", {"request.method"}),
    ("neq-or", 'request.auth.principal != "admin" || connection.mtls', "BOOL",
     {"request.auth.principal", "connection.mtls"}),
    ("glob", 'match(destination.service, "*.ns1.svc.cluster.local")', "BOOL", {"destination.service"}),
    ("method-starts", 'request.path.startsWith("/api")', "BOOL", {"request.path"}),
    ("method-on-index", 'request.headers["user-agent"].endsWith("Firefox")', "BOOL", {"request.headers"}),
    ("regex-receiver", '"svc.*".matches(destination.service)', "BOOL", {"destination.service"}),
    ("duration-default", 'response.duration | "0ms"', "DURATION", {"response.duration"}),
    ("conditional", 'conditional(connection.mtls, "mtls", "plain")', "STRING", {"connection.mtls"}),
    ("conditional-string", 'conditionalString(connection.mtls, "a", "b")', "STRING", {"connection.mtls"}),
    ("int-compare", "request.size + 1 > 10", "BOOL", {"request.size"}),
    ("ip-eq", 'source.ip == ip("10.0.0.1")', "BOOL", {"source.ip"}),
    ("ip-equal-fn", 'ip_equal(source.ip, ip("10.0.0.1"))', "BOOL", {"source.ip"}),
    ("to-lower", 'toLower(request.headers["x"]) == "abc"', "BOOL", {"request.headers"}),
    ("size", "size(request.path) >= 3", "BOOL", {"request.path"}),
    ("string-add", 'request.host + request.path == "a/b"', "BOOL", {"request.host", "request.path"}),
    ("claims", 'request.auth.claims["groups"] == "admin"', "BOOL", {"request.auth.claims"}),
    ("empty-map", 'source.labels | emptyStringMap()', "STRING_MAP", {"source.labels"}),
    ("dns-email-uri", 'dnsName("a.istio.io") == dnsName("A.istio.io.") && email("a@istio.io") == email("a@ISTIO.io") '
                      '&& uri("http://istio.io/x") == uri("HTTP://Istio.io/x")', "BOOL", set()),
    ("timestamp", 'request.time < timestamp("2015-01-02T15:04:35Z")', "BOOL", {"request.time"}),
    ("raw-string", r'request.path == `/a\b`', "BOOL", {"request.path"}),
    ("double", "1.5 == 1.5", "BOOL", set()),
    ("parens", '((request.method == "GET"))', "BOOL", {"request.method"}),
]


@pytest.mark.parametrize(("text", "kind", "attrs"), [v[1:] for v in VALID], ids=[v[0] for v in VALID])
def test_valid_expressions_parse_with_their_type(text: str, kind: str, attrs: set[str]) -> None:
    expr = parse(text)
    assert expr.type == kind
    assert expr.attributes == attrs
    assert expr.text == text


def test_ast_shape_and_precedence() -> None:
    # `|` binds tighter than `==`, as Go's `|`; `a | b | c` associates to the left.
    root = parse('source.labels["app"] | "x" == "y"').root
    assert isinstance(root, Binary)
    assert root.op == "=="
    assert isinstance(root.left, Binary)
    assert root.left.op == "|"
    assert root.left.left == Index(Attribute("source.labels", "STRING_MAP"), Constant("app", "STRING"))
    chain = parse('source.name | source.uid | "u"').root
    assert isinstance(chain, Binary)
    assert isinstance(chain.left, Binary)
    assert chain.right == Constant("u", "STRING")
    # && binds tighter than ||
    mixed = parse("true || false && false").root
    assert isinstance(mixed, Binary)
    assert mixed.op == "||"


def test_literals_are_typed_and_folded() -> None:
    assert parse('"10s"').root == Constant(dt.timedelta(seconds=10), "DURATION")
    assert parse('"1h30m"').root == Constant(dt.timedelta(minutes=90), "DURATION")
    assert parse('"0"').root == Constant(dt.timedelta(0), "DURATION")  # Go reads "0" as a duration
    assert parse('"ten"').root == Constant("ten", "STRING")
    assert parse(r'"a\tb\x41\u00e9"').root == Constant("a\tbAé", "STRING")
    assert parse("'x'").root == Constant("x", "STRING")
    assert parse('ip("10.1.2.3")').root == Constant(ipaddress.ip_address("10.1.2.3"), "IP_ADDRESS")
    assert parse('dnsName("www.istio.io")').root == Constant(DnsName("www.istio.io"), "DNS_NAME")
    assert parse("007").root == Constant(7, "INT64")  # Mixer parsed integers in base 10


INVALID = [
    ("syntax-dangling", 'request.path == ', "unexpected end of expression"),
    ("syntax-paren", '(request.path == "a"', "expected ')'"),
    ("syntax-trailing", 'request.path == "a" "b"', "unexpected '\"b\"'"),
    ("empty", "", "expression is empty"),
    ("unknown-attr", 'source.lables["app"] == "a"',
     "unknown attribute 'source.lables' (did you mean 'source.labels'?)"),
    ("type-mismatch", 'source.labels["app"] == 3', "== needs operands of one type, got STRING and INT64"),
    ("duration-literal", 'request.headers["x"] == "1s"', "a string literal that reads as a duration is a DURATION"),
    ("and-non-bool", 'request.path && true', "&& needs operands of one type"),
    ("or-strings", 'request.path || request.host', "|| needs BOOL operands, got STRING"),
    ("not-string", '!request.path', "! needs a BOOL operand, got STRING"),
    ("map-equality", "source.labels == destination.labels", "== is not supported for STRING_MAP values"),
    ("duration-order", 'response.duration < "1s"', "< is not supported for DURATION values"),
    ("index-non-map", 'request.path["a"]', "only a STRING_MAP can be indexed, got STRING"),
    ("index-int-key", "source.labels[1]", "a map key must be a STRING, got INT64"),
    ("method-as-function", 'startsWith(request.path, "/a")', "startsWith is a method: write x.startsWith(...)"),
    ("function-as-method", "request.path.size()", "size is a function, not a method: write size(...)"),
    ("unknown-function", "lower(request.path)", "unknown function 'lower'"),
    ("arity", "match(request.path)", "match takes 2 argument(s), got 1"),
    ("extra-args", 'match(request.path, "a", "b")', "match takes 2 argument(s), got 3"),
    ("arg-type", "match(request.size, \"a\")", "match argument 1 must be STRING, got INT64"),
    ("unary-minus", "request.size == -1", "unary operator '-' is not supported"),
    ("multiply", "request.size * 2 == 4", "operator '*' is not supported"),
    ("hex", "request.size == 0x10", "only decimal integers are supported"),
    ("bad-ip", 'source.ip == ip("10.0.0.300")', "could not convert 10.0.0.300 to IP_ADDRESS"),
    ("bad-regex", '"[".matches(request.path)', "invalid RE2 regex"),
    ("bad-timestamp", 'timestamp("yesterday")', "could not convert 'yesterday' to TIMESTAMP"),
    ("selector-on-call", 'ip("1.2.3.4").x', "only a method call may follow '.' here"),
    ("keyword", "request.type == \"a\"", "unexpected keyword 'type'"),
    ("bad-escape", r'"\q" == request.path', "unknown escape sequence \\q"),
    ("conditional-branches", 'conditional(connection.mtls, "a", 1)',
     "conditional argument 3 must be STRING, got INT64"),
]


@pytest.mark.parametrize(("text", "message"), [v[1:] for v in INVALID], ids=[v[0] for v in INVALID])
def test_invalid_expressions_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as err:
        parse(text)
    assert message in str(err.value)


def test_errors_report_the_column() -> None:
    with pytest.raises(ExpressionError) as err:
        parse('destination.labels["app"] == 3')
    assert err.value.column == 27
    assert str(err.value).endswith("(column 27)")


def test_match_must_be_bool_and_empty_means_always() -> None:
    assert parse_match("") is None
    with pytest.raises(ExpressionError, match="expression evaluated to type STRING, expected type BOOL"):
        parse_match("request.path")


def test_vocabulary_has_both_eras() -> None:
    assert ATTRIBUTES["source.labels"] == "STRING_MAP"
    assert ATTRIBUTES["source.ip"] == "IP_ADDRESS"
    assert ATTRIBUTES["connection.mtls"] == "BOOL"
    assert ATTRIBUTES["destination.service"] == "STRING"  # Istio 1.0 only
    assert ATTRIBUTES["request.url_path"] == "STRING"  # Istio 1.1 only


# -- evaluation ------------------------------------------------------------------------------------

REVIEWS_V3 = {"source.labels": {"app": "reviews", "version": "v3"}, "destination.labels": {"app": "ratings"}}

EVALUATE: list[tuple[str, str, dict[str, Any], Any]] = [
    ("and-true", 'destination.labels["app"] == "ratings" && source.labels["version"] == "v3"', REVIEWS_V3, True),
    ("and-false", 'destination.labels["app"] == "ratings" && source.labels["version"] == "v2"', REVIEWS_V3, False),
    ("default-present", 'source.labels["app"] | "unknown"', REVIEWS_V3, "reviews"),
    ("default-missing-key", 'source.labels["team"] | "unknown"', REVIEWS_V3, "unknown"),
    ("default-missing-map", 'request.headers["x"] | "none"', {}, "none"),
    ("default-chain", 'source.labels["app"] | source.service | "u"', {"source.service": "svc"}, "svc"),
    ("ip-fallback", 'source.ip | ip("0.0.0.0")', {}, ipaddress.ip_address("0.0.0.0")),
    ("ip-from-str", 'source.ip | ip("0.0.0.0")', {"source.ip": "10.57.1.2"}, ipaddress.ip_address("10.57.1.2")),
    ("ip-from-bytes", 'source.ip == ip("10.0.0.1")', {"source.ip": bytes([10, 0, 0, 1])}, True),
    ("ip-mapped-equal", 'source.ip == ip("10.0.0.1")', {"source.ip": "::ffff:10.0.0.1"}, True),
    ("glob-suffix", 'match(destination.service, "*.ns1.svc.cluster.local")',
     {"destination.service": "a.ns1.svc.cluster.local"}, True),
    ("glob-prefix", 'match(destination.service, "svc1.*")', {"destination.service": "svc2.ns"}, False),
    ("glob-exact", 'match(request.path, "/a")', {"request.path": "/a"}, True),
    ("regex-unanchored", '"abc".matches(request.path)', {"request.path": "/xabcx"}, True),
    ("starts", 'request.path.startsWith("/api")', {"request.path": "/api/v1"}, True),
    ("ends-on-index", 'request.headers["user-agent"].endsWith("Firefox")',
     {"request.headers": {"user-agent": "Mozilla Firefox"}}, True),
    ("not", '!(request.method == "GET")', {"request.method": "POST"}, True),
    ("neq", 'request.method != "GET"', {"request.method": "GET"}, False),
    ("conditional", 'conditional(connection.mtls, "mtls", "plain")', {"connection.mtls": False}, "plain"),
    ("add-int", "request.size + 1", {"request.size": 41}, 42),
    ("add-string", "request.host + request.path", {"request.host": "h", "request.path": "/p"}, "h/p"),
    ("lower", 'toLower(request.headers["x"])', {"request.headers": {"x": "AbC"}}, "abc"),
    ("size-bytes", "size(request.path)", {"request.path": "é"}, 2),
    ("order", "response.code >= 500", {"response.code": 503}, True),
    ("timestamp", 'request.time < timestamp("2015-01-02T15:04:35Z")',
     {"request.time": dt.datetime(2014, 1, 1, tzinfo=dt.UTC)}, True),
    ("duration", 'response.duration | "0ms"', {"response.duration": 1.5}, dt.timedelta(seconds=1.5)),
    ("dns-equal", 'dnsName("Www.Istio.io.") == dnsName("www.istio.io")', {}, True),
    ("email-equal", 'email("a@ISTIO.io") == email("a@istio.io")', {}, True),
    ("email-local-case", 'email("A@istio.io") == email("a@istio.io")', {}, False),
    ("uri-equal", 'uri("HTTP://Istio.io:80/x") == uri("http://istio.io:80/x")', {}, True),
    ("short-circuit-and", 'request.method == "GET" && request.headers["x"] == "1"', {"request.method": "POST"}, False),
    ("short-circuit-or", 'request.method == "GET" || request.headers["x"] == "1"', {"request.method": "GET"}, True),
]


@pytest.mark.parametrize(("text", "attrs", "want"), [e[1:] for e in EVALUATE], ids=[e[0] for e in EVALUATE])
def test_evaluate(text: str, attrs: dict[str, Any], want: Any) -> None:
    assert evaluate(parse(text), attrs) == want


MISSING = [
    ("attribute", 'source.user == "x"', {}),
    ("map-key", 'source.labels["app"] == "x"', {"source.labels": {}}),
    ("map", 'request.headers["x"] == "y"', {}),
    ("left-of-or", 'request.headers["x"] == "1" || request.method == "GET"', {"request.method": "GET"}),
    ("inside-function", 'match(request.path, "/a*")', {}),
    ("none-value", "connection.mtls", {"connection.mtls": None}),
    ("last-default", "source.name | source.uid", {}),
]


@pytest.mark.parametrize(("text", "attrs"), [m[1:] for m in MISSING], ids=[m[0] for m in MISSING])
def test_missing_attributes_fail_evaluation(text: str, attrs: dict[str, Any]) -> None:
    with pytest.raises(EvaluationError):
        evaluate(parse(text), attrs)


def test_evaluate_match_treats_failure_as_no_match() -> None:
    expr = parse_match('source.labels["version"] != "v3"')
    assert evaluate_match(expr, {"source.labels": {"version": "v2"}}) is True
    assert evaluate_match(expr, {"source.labels": {}}) is False  # neither == nor != holds for a missing key
    negated = parse_match('!(source.labels["version"] == "v3")')
    assert evaluate_match(negated, {}) is False
    assert evaluate_match(None, {}) is True


def test_wrong_attribute_type_is_an_evaluation_error() -> None:
    with pytest.raises(EvaluationError, match="expected INT64"):
        evaluate(parse("response.code == 200"), {"response.code": "200"})
    with pytest.raises(EvaluationError, match="could not convert nope to IP_ADDRESS"):
        evaluate(parse('source.ip == ip("1.2.3.4")'), {"source.ip": "nope"})


# -- the rule and listentry checks in mixer.py -----------------------------------------------------


def _decode(tp: type[Any], text: str) -> Report:
    r = Report("t.yaml", 0)
    node = yaml.compose(textwrap.dedent(text))
    assert node is not None
    decode(tp, node, r, ("spec",))
    return r


MODEL_ERRORS = [
    ("rule-syntax", Rule, 'match: destination.labels["app" == "x"\nactions: [{handler: h, instances: [i]}]\n',
     "spec.match", "invalid match expression: expected ']'"),
    ("rule-not-bool", Rule, "match: request.path\nactions: [{handler: h, instances: [i]}]\n",
     "spec.match", "expected type BOOL"),
    ("rule-unknown-attr", Rule, 'match: source.app == "x"\nactions: [{handler: h, instances: [i]}]\n',
     "spec.match", "unknown attribute 'source.app'"),
    ("listentry-syntax", ListEntry, 'value: source.labels["app"\n', "spec.value", "invalid value expression"),
    ("instance-listentry", Instance, "compiledTemplate: listentry\nparams: {value: 'source.ip | ip(\"x\")'}\n",
     "spec.params.value", "could not convert x to IP_ADDRESS"),
]


@pytest.mark.parametrize(("tp", "text", "path", "message"), [m[1:] for m in MODEL_ERRORS],
                         ids=[m[0] for m in MODEL_ERRORS])
def test_models_report_bad_expressions_at_the_field(tp: type[Any], text: str, path: str, message: str) -> None:
    errors = [i for i in _decode(tp, text).issues if i.severity == "error"]
    assert errors, "expected an error"
    assert errors[0].path == path
    assert message in errors[0].message


def test_listentry_warns_about_unusable_values() -> None:
    empty = _decode(ListEntry, "value: ''\n").issues
    assert [(i.severity, i.path) for i in empty] == [("warning", "spec.value")]
    boolean = _decode(ListEntry, "value: connection.mtls\n").issues
    assert boolean[0].severity == "warning"
    assert "BOOL expression" in boolean[0].message


def test_every_corpus_expression_parses() -> None:
    corpus = shared_dir() / "conformance"
    seen = 0
    for path in sorted([*corpus.glob("legacy/*"), *corpus.glob("istio-tutorial/*"), *corpus.glob("validation/*")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or not str(doc.get("apiVersion", "")).startswith("config.istio.io"):
                continue
            spec = doc.get("spec") or {}
            if doc["kind"] == "rule" and spec.get("match"):
                assert parse_match(spec["match"]) is not None, path
                seen += 1
            value = spec.get("value") if doc["kind"] == "listentry" else (spec.get("params") or {}).get("value")
            if value and (doc["kind"] == "listentry" or spec.get("compiledTemplate") == "listentry"):
                parse(value)
                seen += 1
    assert seen >= 20
