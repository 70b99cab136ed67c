"""Mixer's configuration expression language (CEXL) of Istio 1.0/1.1: parsed once, evaluated purely.

Rule ``match`` predicates and instance params (``listentry`` ``value``) are CEXL: a subset
of Go expression syntax over typed attributes. :func:`parse` turns the text into a frozen,
type-checked :class:`Expression` at load time; :func:`evaluate` computes its value from a
mapping of attribute name to value and does no I/O.

Syntax (Go precedence, lowest first): ``||``; ``&&``; ``== != < <= > >=``; ``+`` and
``|``; then unary ``!``; then ``a.b.c`` attribute paths, ``m["k"]`` map indexing and calls,
``f(x)`` or ``x.m(y)``. Literals: decimal integers, floats, ``"Go strings"`` (escapes as in
Go), raw ```strings```, ``true``/``false`` (any case). A string literal that reads as a Go
duration (``"10s"``, ``"1.5ms"``, ``"0"``) is a DURATION constant, as in Mixer.

Types (Mixer's ``ValueType``): every attribute has the type of the Istio 1.0/1.1 attribute
manifests (:data:`ATTRIBUTES`); an unknown attribute, an operand of the wrong type, or a
predicate that is not BOOL is a config error. ``==``/``!=`` compare two values of one type
(not DURATION or STRING_MAP; IP addresses compare as Go's ``net.IP.Equal``, DNS names and the
domain of e-mails case-insensitively, ignoring one trailing dot); ``< <= > >=`` take
STRING, INT64, DOUBLE or TIMESTAMP; ``+`` adds INT64/DOUBLE or joins STRINGs; ``&&``, ``||``
and ``!`` take BOOL. Functions: ``match(s, "glob")`` (a ``*`` at the end is a prefix match, at
the start a suffix match, otherwise equality), the methods ``s.startsWith(p)``,
``s.endsWith(p)`` and ``"re".matches(s)`` (the regex is the receiver; RE2, unanchored),
``ip(s)``, ``ip_equal(a, b)``, ``timestamp(s)`` (RFC 3339), ``dnsName(s)``, ``email(s)``,
``uri(s)``, ``emptyStringMap()``, ``conditional(c, a, b)``, ``conditionalString(c, a, b)``,
``toLower(s)`` and ``size(s)`` (bytes).

Evaluation follows Mixer's interpreter. A missing attribute (or a missing map key) is an
evaluation error, :class:`EvaluationError`, unless the default operator supplies a value:
``a | b | "unknown"`` is the first operand that is present, trying attribute and index
operands in order (other operands are evaluated normally). ``&&``, ``||`` and
``conditional`` evaluate left to right and stop early, so ``x == "a" && y == "b"`` with
``x`` absent is an error but with ``x`` present and not ``"a"`` is plainly false. As a rule
match an error counts as "no match" (:func:`evaluate_match`): a comparison on a missing
attribute is never true, and neither is its negation (``x != "a"``, ``!(x == "a")``).

Attribute values are given as Python values: ``str`` (STRING, and DNS_NAME, EMAIL_ADDRESS,
URI), ``int`` (INT64), ``float`` (DOUBLE), ``bool``, a ``Mapping[str, str]`` (STRING_MAP;
header names lower case, as Envoy sends them), an IP as ``str``, ``bytes`` or
:mod:`ipaddress` object, ``datetime`` (TIMESTAMP) and ``timedelta`` or seconds (DURATION).
``None`` counts as absent.

Deviations from Mixer 1.1, chosen on purpose: ``!`` is accepted (Mixer's checker had no
NOT function and rejected it); ``ip_equal`` may be called directly; extra call arguments
are rejected (Mixer ignored them); a method may follow an index (``m["k"].startsWith("a")``,
which Mixer's parser refused without parentheses); invalid constant arguments of ``ip``,
``timestamp``, ``dnsName``, ``email``, ``uri`` and constant regexes are load errors (Mixer
failed each request instead); newlines count as spaces.
"""

from __future__ import annotations

import datetime as dt
import difflib
import email.utils
import ipaddress
import operator
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeAlias, cast

from pymesh.config.decode import Invalid
from pymesh.config.types import compile_re2

__all__ = [
    "ATTRIBUTES",
    "Attribute",
    "Binary",
    "Call",
    "Constant",
    "DnsName",
    "EmailAddress",
    "EvaluationError",
    "Expression",
    "ExpressionError",
    "Index",
    "Node",
    "Not",
    "Uri",
    "Value",
    "ValueType",
    "evaluate",
    "evaluate_match",
    "parse",
    "parse_match",
]

ValueType = Literal[
    "STRING", "INT64", "DOUBLE", "BOOL", "TIMESTAMP", "DURATION", "IP_ADDRESS",
    "EMAIL_ADDRESS", "DNS_NAME", "URI", "STRING_MAP",
]

_S: ValueType = "STRING"
_I: ValueType = "INT64"
_B: ValueType = "BOOL"
_M: ValueType = "STRING_MAP"
_IP: ValueType = "IP_ADDRESS"
_T: ValueType = "TIMESTAMP"
_D: ValueType = "DURATION"


def _vocabulary() -> Mapping[str, ValueType]:
    # The istioproxy and kubernetes attribute manifests of Istio 1.0.0 and 1.1.17
    # (install/kubernetes/helm/istio/charts/mixer/templates/config.yaml), merged.
    by_type: dict[ValueType, str] = {
        _S: "origin.uid origin.user request.id request.host request.method request.path request.url_path "
            "request.reason request.referer request.scheme request.useragent response.grpc_status "
            "response.grpc_message source.uid source.user source.principal destination.uid "
            "destination.principal connection.event connection.id connection.requested_server_name "
            "context.protocol context.proxy_error_code context.reporter.kind context.reporter.uid "
            "api.service api.version api.operation api.protocol request.auth.principal "
            "request.auth.audiences request.auth.presenter request.auth.raw_claims request.api_key "
            "rbac.permissive.response_code rbac.permissive.effective_policy_id check.error_message "
            "source.name source.namespace source.owner source.service source.serviceAccount "
            "source.services source.workload.uid source.workload.name source.workload.namespace "
            "destination.owner destination.name destination.container.name destination.namespace "
            "destination.service destination.service.uid destination.service.name "
            "destination.service.namespace destination.service.host destination.serviceAccount "
            "destination.workload.uid destination.workload.name destination.workload.namespace",
        _I: "request.total_size request.size response.code response.total_size response.size "
            "destination.port connection.received.bytes connection.received.bytes_total "
            "connection.sent.bytes connection.sent.bytes_total check.error_code",
        _B: "connection.mtls context.reporter.local check.cache_hit quota.cache_hit",
        _M: "request.headers request.query_params response.headers request.auth.claims source.labels "
            "source.metadata destination.labels destination.metadata",
        _IP: "origin.ip source.ip destination.ip",
        _T: "request.time response.time context.timestamp context.time",
        _D: "response.duration connection.duration",
    }
    return MappingProxyType({name: t for t, names in by_type.items() for name in names.split()})


ATTRIBUTES: Mapping[str, ValueType] = _vocabulary()
"""The attribute vocabulary expressions are checked against: name -> type."""


# -- values ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsName:
    """A DNS_NAME value (``dnsName("www.istio.io")``)."""

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """An EMAIL_ADDRESS value (``email("a@istio.io")``)."""

    value: str

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Uri:
    """A URI value (``uri("http://istio.io")``)."""

    value: str

    def __str__(self) -> str:
        return self.value


IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Value: TypeAlias = (
    str | int | float | bool | Mapping[str, str] | IPAddress | dt.datetime | dt.timedelta
    | DnsName | EmailAddress | Uri
)


class ExpressionError(ValueError):
    """The text is not a valid expression: a syntax or type error, with its 1-based column."""

    def __init__(self, message: str, column: int | None = None) -> None:
        super().__init__(message if column is None else f"{message} (column {column})")
        self.message = message
        self.column = column


class EvaluationError(Exception):
    """An expression could not be evaluated, e.g. it reads a missing attribute."""


# -- the AST ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Constant:
    value: Value
    type: ValueType


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: ValueType


@dataclass(frozen=True, slots=True)
class Index:
    """``target[key]`` on a STRING_MAP."""

    target: Node
    key: Node
    type: ValueType = "STRING"


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node
    type: ValueType = "BOOL"


BinaryOp = Literal["||", "&&", "==", "!=", "<", "<=", ">", ">=", "+", "|"]


@dataclass(frozen=True, slots=True)
class Binary:
    """An operator; ``|`` is the default operator (first present operand)."""

    op: BinaryOp
    left: Node
    right: Node
    type: ValueType


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; for a method (``x.startsWith(p)``) the receiver is ``args[0]``."""

    function: str
    args: tuple[Node, ...]
    type: ValueType
    regex: re.Pattern[str] | None = None  # ``"re".matches(x)`` with a constant regex, compiled


Node: TypeAlias = Constant | Attribute | Index | Not | Binary | Call


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed, type-checked expression and the text it came from."""

    text: str
    root: Node

    @property
    def type(self) -> ValueType:
        return self.root.type

    @property
    def attributes(self) -> frozenset[str]:
        """The attributes the expression may read."""
        out: set[str] = set()
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Attribute):
                out.add(node.name)
            elif isinstance(node, Index):
                stack += (node.target, node.key)
            elif isinstance(node, Not):
                stack.append(node.operand)
            elif isinstance(node, Binary):
                stack += (node.left, node.right)
            elif isinstance(node, Call):
                stack.extend(node.args)
        return frozenset(out)

    def __str__(self) -> str:
        return self.text


# -- conversions shared by constant folding and evaluation -----------------------------------------


def _to_ip(text: str) -> IPAddress:
    if "%" not in text:  # Go's net.ParseIP takes no IPv6 zone
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            pass
    raise EvaluationError(f"could not convert {text} to IP_ADDRESS")


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _to_timestamp(text: str) -> dt.datetime:
    if _RFC3339.fullmatch(text):
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            pass
    raise EvaluationError(f"could not convert '{text}' to TIMESTAMP. expected format: RFC 3339")


_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _dns_problem(text: str) -> str | None:
    name = text[:-1] if text.endswith(".") else text
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        return str(exc)
    if not ascii_name or len(ascii_name) > 253:
        return "a DNS name has 1 to 253 characters"
    for label in ascii_name.split("."):
        if not _LABEL.fullmatch(label):
            return f"invalid label {label!r}"
    return None


def _to_dns(text: str) -> DnsName:
    problem = _dns_problem(text)
    if problem is not None:
        raise EvaluationError(f"error converting '{text}' to dns name: {problem}")
    return DnsName(text)


def _to_email(text: str) -> EmailAddress:
    display, address = email.utils.parseaddr(text)
    local, at, domain = address.rpartition("@")
    if display or not at or not local or address != text.strip() or _dns_problem(domain) is not None:
        raise EvaluationError(f"error converting '{text}' to e-mail")
    return EmailAddress(text)


def _to_uri(text: str) -> Uri:
    if not text:
        raise EvaluationError("error converting string to uri: empty string")
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port
    except ValueError as exc:
        raise EvaluationError(f"error converting string to uri '{text}': {exc}") from None
    if text.startswith(":") or any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise EvaluationError(f"error converting string to uri '{text}'")
    return Uri(text)


_CONVERSIONS: Mapping[str, Callable[[str], Value]] = {
    "ip": _to_ip, "timestamp": _to_timestamp, "dnsName": _to_dns, "email": _to_email, "uri": _to_uri,
}

_DURATION = re.compile(r"[-+]?(0|((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+)")  # Go time.ParseDuration
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _as_duration(text: str) -> dt.timedelta | None:
    if not _DURATION.fullmatch(text):
        return None
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return dt.timedelta(seconds=-seconds if text.startswith("-") else seconds)


# -- functions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signature:
    args: tuple[ValueType | None, ...]  # None: the type of the first such argument
    result: ValueType | None  # None: that same type
    method: bool = False  # called as receiver.name(args[1:])


_FUNCTIONS: Mapping[str, _Signature] = {
    "match": _Signature((_S, _S), _B),
    "matches": _Signature((_S, _S), _B, method=True),
    "startsWith": _Signature((_S, _S), _B, method=True),
    "endsWith": _Signature((_S, _S), _B, method=True),
    "ip": _Signature((_S,), _IP),
    "ip_equal": _Signature((_IP, _IP), _B),
    "timestamp": _Signature((_S,), _T),
    "dnsName": _Signature((_S,), "DNS_NAME"),
    "email": _Signature((_S,), "EMAIL_ADDRESS"),
    "uri": _Signature((_S,), "URI"),
    "emptyStringMap": _Signature((), _M),
    "conditional": _Signature((_B, None, None), None),
    "conditionalString": _Signature((_B, _S, _S), _S),
    "toLower": _Signature((_S,), _S),
    "size": _Signature((_S,), _I),
}

_ORDER: Mapping[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_EQUALITY_TYPES = frozenset({"BOOL", "STRING", "INT64", "DOUBLE", "IP_ADDRESS", "TIMESTAMP", "DNS_NAME",
                             "EMAIL_ADDRESS", "URI"})
_ORDER_TYPES = frozenset({"STRING", "INT64", "DOUBLE", "TIMESTAMP"})
_ADD_TYPES = frozenset({"STRING", "INT64", "DOUBLE"})


# -- the parser ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<float>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
    |(?P<int>\d\w*)
    |(?P<string>"(?:[^"\\\n]|\\.)*")
    |(?P<raw>`[^`]*`)
    |(?P<char>'(?:[^'\\\n]|\\.)*')
    |(?P<ident>[^\W\d]\w*)
    |(?P<op>==|!=|<=|>=|&&|\|\||<<|>>|&\^|<-|[-+*/%&|^<>!()\[\],.:{};=~])
    """,
    re.VERBOSE,
)
_PRECEDENCE: Mapping[str, int] = {
    "||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
    "+": 4, "|": 4, "-": 4, "^": 4, "*": 5, "/": 5, "%": 5, "<<": 5, ">>": 5, "&": 5, "&^": 5,
}
_SUPPORTED_BINARY = frozenset({"||", "&&", "==", "!=", "<", "<=", ">", ">=", "+", "|"})
_GO_KEYWORDS = frozenset({
    "break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough", "for", "func", "go",
    "goto", "if", "import", "interface", "map", "package", "range", "return", "select", "struct", "switch", "type",
    "var",
})
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_ESCAPE = re.compile(r"\\(?:([abfnrtv\\'\"])|x([0-9A-Fa-f]{2})|([0-7]{3})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))")


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # float, int, string, raw, char, ident, op, end
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "ws":
            if kind == "int" and not m.group().isdigit():
                raise ExpressionError(f"invalid number {m.group()!r}: only decimal integers are supported", pos + 1)
            out.append(_Token(kind, m.group(), pos + 1))
        pos = m.end()
    out.append(_Token("end", "", len(text) + 1))
    return out


def _unquote(token: _Token) -> str:
    if token.kind == "raw":
        return token.text[1:-1].replace("\r", "")
    quote = token.text[0]

    def escape(m: re.Match[str]) -> str:
        simple, hex2, octal, u4, u8, bad = m.groups()
        if simple is not None:
            if simple in "'\"" and simple != quote:
                raise ExpressionError(f"unknown escape sequence \\{simple}", token.column)
            return _ESCAPES.get(simple, simple)
        if bad is not None:
            raise ExpressionError(f"unknown escape sequence \\{bad}", token.column)
        code = int(hex2 or u4 or u8, 16) if octal is None else int(octal, 8)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ExpressionError("escape sequence is an invalid Unicode code point", token.column)
        return chr(code)

    value = _ESCAPE.sub(escape, token.text[1:-1])
    if quote == "'" and len(value) != 1:
        raise ExpressionError("a character literal holds exactly one character", token.column)
    return value


def _describe(token: _Token) -> str:
    return "end of expression" if token.kind == "end" else repr(token.text)


class _Parser:
    __slots__ = ("_at", "_tokens", "_vocabulary")

    def __init__(self, text: str, vocabulary: Mapping[str, ValueType]) -> None:
        self._tokens = _tokens(text)
        self._at = 0
        self._vocabulary = vocabulary

    def parse(self) -> Node:
        if self._peek().kind == "end":
            raise ExpressionError("expression is empty", 1)
        node = self._binary(1)
        token = self._peek()
        if token.kind != "end":
            raise ExpressionError(f"unexpected {_describe(token)}", token.column)
        return node

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._at + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self._at += 1
        return token

    def _expect(self, text: str) -> _Token:
        token = self._next()
        if token.kind != "op" or token.text != text:
            raise ExpressionError(f"expected {text!r}, found {_describe(token)}", token.column)
        return token

    def _binary(self, min_precedence: int) -> Node:
        left = self._unary()
        while True:
            token = self._peek()
            precedence = _PRECEDENCE.get(token.text, 0) if token.kind == "op" else 0
            if precedence < min_precedence:
                return left
            self._next()
            if token.text not in _SUPPORTED_BINARY:
                raise ExpressionError(f"operator {token.text!r} is not supported", token.column)
            right = self._binary(precedence + 1)
            left = _binary_node(cast(BinaryOp, token.text), left, right, token.column)

    def _unary(self) -> Node:
        token = self._peek()
        if token.kind == "op" and token.text in ("!", "-", "+", "^", "*", "&", "<-"):
            self._next()
            if token.text != "!":
                raise ExpressionError(f"unary operator {token.text!r} is not supported", token.column)
            operand = self._unary()
            if operand.type != "BOOL":
                raise ExpressionError(f"! needs a BOOL operand, got {operand.type}", token.column)
            return Not(operand)
        return self._postfix(self._primary())

    def _primary(self) -> Node:
        token = self._next()
        if token.kind == "ident":
            return self._path(token)
        if token.kind == "int":
            value = int(token.text)
            if value >= 2**63:
                raise ExpressionError(f"integer {token.text} is out of range for INT64", token.column)
            return Constant(value, "INT64")
        if token.kind == "float":
            return Constant(float(token.text), "DOUBLE")
        if token.kind in ("string", "raw", "char"):
            text = _unquote(token)
            duration = _as_duration(text)
            return Constant(text, "STRING") if duration is None else Constant(duration, "DURATION")
        if token.kind == "op" and token.text == "(":
            node = self._binary(1)
            self._expect(")")
            return node
        raise ExpressionError(f"unexpected {_describe(token)}", token.column)

    def _path(self, first: _Token) -> Node:
        """``a.b.c`` (an attribute), ``f(...)`` or ``a.b.m(...)`` (a method of attribute ``a.b``)."""
        lowered = first.text.lower()
        if lowered in ("true", "false"):
            return Constant(lowered == "true", "BOOL")
        parts = [first]
        while self._peek().text == "." and self._peek(1).kind == "ident":
            self._next()
            parts.append(self._next())
        for part in parts:
            if part.text in _GO_KEYWORDS:
                raise ExpressionError(f"unexpected keyword {part.text!r}", part.column)
        if self._peek().text == "(":
            if len(parts) == 1:
                return self._call(first, None)
            return self._call(parts[-1], self._attribute(parts[:-1]))
        return self._attribute(parts)

    def _attribute(self, parts: list[_Token]) -> Node:
        name = ".".join(p.text for p in parts)
        kind = self._vocabulary.get(name)
        if kind is None:
            close = difflib.get_close_matches(name, list(self._vocabulary), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ExpressionError(f"unknown attribute {name!r}{hint}", parts[0].column)
        return Attribute(name, kind)

    def _postfix(self, node: Node) -> Node:
        while True:
            token = self._peek()
            if token.text == "[" and token.kind == "op":
                self._next()
                key = self._binary(1)
                self._expect("]")
                node = _index_node(node, key, token.column)
            elif token.text == "." and token.kind == "op":
                self._next()
                name = self._next()
                if name.kind != "ident" or self._peek().text != "(":
                    raise ExpressionError("only a method call may follow '.' here", token.column)
                node = self._call(name, node)
            elif token.text == "(" and token.kind == "op":
                raise ExpressionError("only a named function can be called", token.column)
            else:
                return node

    def _call(self, name: _Token, receiver: Node | None) -> Node:
        self._expect("(")
        args: list[Node] = [] if receiver is None else [receiver]
        if self._peek().text != ")":
            while True:
                args.append(self._binary(1))
                if self._peek().text != ",":
                    break
                self._next()
        self._expect(")")
        return _call_node(name.text, tuple(args), receiver is not None, name.column)


def _binary_node(op: BinaryOp, left: Node, right: Node, column: int) -> Node:
    lt, rt = left.type, right.type
    if lt != rt:
        hint = ""
        for side in (left, right):
            if isinstance(side, Constant) and side.type == "DURATION":
                hint = " (a string literal that reads as a duration is a DURATION)"
        raise ExpressionError(f"{op} needs operands of one type, got {lt} and {rt}{hint}", column)
    if op in ("&&", "||") and lt != "BOOL":
        raise ExpressionError(f"{op} needs BOOL operands, got {lt}", column)
    if op in ("==", "!=") and lt not in _EQUALITY_TYPES:
        raise ExpressionError(f"{op} is not supported for {lt} values", column)
    if op in ("<", "<=", ">", ">=") and lt not in _ORDER_TYPES:
        raise ExpressionError(f"{op} is not supported for {lt} values", column)
    if op == "+" and lt not in _ADD_TYPES:
        raise ExpressionError(f"+ is not supported for {lt} values", column)
    result: ValueType = lt if op in ("+", "|") else "BOOL"
    return Binary(op, left, right, result)


def _index_node(target: Node, key: Node, column: int) -> Node:
    if target.type != "STRING_MAP":
        raise ExpressionError(f"only a STRING_MAP can be indexed, got {target.type}", column)
    if key.type != "STRING":
        raise ExpressionError(f"a map key must be a STRING, got {key.type}", column)
    return Index(target, key)


def _call_node(name: str, args: tuple[Node, ...], as_method: bool, column: int) -> Node:
    sig = _FUNCTIONS.get(name)
    if sig is None:
        close = difflib.get_close_matches(name, list(_FUNCTIONS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ExpressionError(f"unknown function {name!r}{hint}", column)
    if sig.method and not as_method:
        raise ExpressionError(f"{name} is a method: write x.{name}(...)", column)
    if as_method and not sig.method:
        raise ExpressionError(f"{name} is a function, not a method: write {name}(...)", column)
    shown = len(sig.args) - sig.method
    if len(args) != len(sig.args):
        raise ExpressionError(f"{name} takes {shown} argument(s), got {len(args) - sig.method}", column)
    template: ValueType | None = None
    for i, (arg, want) in enumerate(zip(args, sig.args, strict=True)):
        if want is None:
            template = template or arg.type
            want = template
        if arg.type != want:
            what = "receiver" if sig.method and i == 0 else f"argument {i + 1 - sig.method}"
            raise ExpressionError(f"{name} {what} must be {want}, got {arg.type}", column)
    result = sig.result or template
    assert result is not None
    convert = _CONVERSIONS.get(name)
    if convert is not None and isinstance(args[0], Constant):
        try:
            return Constant(convert(str(args[0].value)), result)
        except EvaluationError as exc:
            raise ExpressionError(str(exc), column) from None
    regex = None
    if name == "matches" and isinstance(args[0], Constant):
        try:
            regex = compile_re2(str(args[0].value))
        except Invalid as exc:
            raise ExpressionError(exc.message, column) from None
    return Call(name, args, result, regex)


def parse(text: str, *, vocabulary: Mapping[str, ValueType] = ATTRIBUTES) -> Expression:
    """Parse and type-check ``text``; raise :class:`ExpressionError` if it is not valid CEXL."""
    return Expression(text, _Parser(text, vocabulary).parse())


def parse_match(text: str, *, vocabulary: Mapping[str, ValueType] = ATTRIBUTES) -> Expression | None:
    """A rule ``match``: None for the empty text (always true), else a BOOL expression."""
    if text == "":
        return None
    expr = parse(text, vocabulary=vocabulary)
    if expr.type != "BOOL":
        raise ExpressionError(f"expression evaluated to type {expr.type}, expected type BOOL")
    return expr


# -- evaluation ------------------------------------------------------------------------------------


class _Absent:
    __slots__ = ()


_ABSENT = _Absent()


_TYPED_STRINGS: Mapping[str, Callable[[str], DnsName | EmailAddress | Uri]] = {
    "DNS_NAME": DnsName, "EMAIL_ADDRESS": EmailAddress, "URI": Uri,
}


def _coerce(name: str, kind: ValueType, value: object) -> Value:
    ok: bool
    if kind == "STRING":
        ok = isinstance(value, str)
    elif kind in ("DNS_NAME", "EMAIL_ADDRESS", "URI"):
        wrap = _TYPED_STRINGS[kind]
        if isinstance(value, str):
            return wrap(value)
        ok = isinstance(value, DnsName | EmailAddress | Uri) and type(value) is type(wrap(""))
    elif kind == "INT64":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "DOUBLE":
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        ok = isinstance(value, float)
    elif kind == "BOOL":
        ok = isinstance(value, bool)
    elif kind == "STRING_MAP":
        ok = isinstance(value, Mapping)
    elif kind == "IP_ADDRESS":
        if isinstance(value, str):
            return _to_ip(value)
        if isinstance(value, bytes) and len(value) in (4, 16):
            return ipaddress.ip_address(value)
        ok = isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address)
    elif kind == "TIMESTAMP":
        ok = isinstance(value, dt.datetime)
    else:  # DURATION
        if isinstance(value, int | float) and not isinstance(value, bool):
            return dt.timedelta(seconds=value)
        ok = isinstance(value, dt.timedelta)
    if not ok:
        raise EvaluationError(f"attribute {name!r} is a {type(value).__name__}, expected {kind}")
    return value  # type: ignore[return-value]  # checked above


def _lookup(node: Attribute, attributes: Mapping[str, object]) -> Value | _Absent:
    value = attributes.get(node.name)
    return _ABSENT if value is None else _coerce(node.name, node.type, value)


def _index(node: Index, attributes: Mapping[str, object], lenient: bool) -> Value | _Absent:
    target = _eval_or_absent(node.target, attributes) if lenient else _eval(node.target, attributes)
    key = _eval_or_absent(node.key, attributes) if lenient else _eval(node.key, attributes)
    if isinstance(target, _Absent) or isinstance(key, _Absent):
        return _ABSENT
    assert isinstance(target, Mapping)
    assert isinstance(key, str)
    value = target.get(key)
    if value is None:
        if lenient:
            return _ABSENT
        raise EvaluationError(f"member lookup failed: {key!r}")
    if not isinstance(value, str):
        raise EvaluationError(f"map value for {key!r} is a {type(value).__name__}, expected STRING")
    return value


def _eval_or_absent(node: Node, attributes: Mapping[str, object]) -> Value | _Absent:
    """The default operator's view: an absent attribute or key is _ABSENT, not an error."""
    if isinstance(node, Attribute):
        return _lookup(node, attributes)
    if isinstance(node, Index):
        return _index(node, attributes, lenient=True)
    if isinstance(node, Binary) and node.op == "|":
        left = _eval_or_absent(node.left, attributes)
        return _eval_or_absent(node.right, attributes) if isinstance(left, _Absent) else left
    return _eval(node, attributes)


def _ip_key(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _dns_key(name: str) -> str:
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def _uri_equal(a: str, b: str) -> bool:
    ua, ub = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    if ua.scheme.lower() != ub.scheme.lower():
        return False
    if ua.scheme.lower() in ("http", "https"):
        if _dns_key(ua.hostname or "") != _dns_key(ub.hostname or "") or ua.port != ub.port:
            return False
        return (ua.path, ua.query, ua.fragment, ua.username, ua.password) == (
            ub.path, ub.query, ub.fragment, ub.username, ub.password)
    return ua._replace(scheme=ua.scheme.lower()) == ub._replace(scheme=ub.scheme.lower())


def _equal(a: Value, b: Value) -> bool:
    if isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address):
        assert isinstance(b, ipaddress.IPv4Address | ipaddress.IPv6Address)
        return _ip_key(a) == _ip_key(b)
    if isinstance(a, DnsName) and isinstance(b, DnsName):
        return _dns_key(a.value) == _dns_key(b.value)
    if isinstance(a, EmailAddress) and isinstance(b, EmailAddress):
        la, _, da = email.utils.parseaddr(a.value)[1].rpartition("@")
        lb, _, db = email.utils.parseaddr(b.value)[1].rpartition("@")
        return la == lb and _dns_key(da) == _dns_key(db)
    if isinstance(a, Uri) and isinstance(b, Uri):
        return _uri_equal(a.value, b.value)
    return a == b


def _glob(value: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _int64(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def _call(node: Call, attributes: Mapping[str, object]) -> Value:
    name = node.function
    if name == "conditional" or name == "conditionalString":
        chosen = node.args[1] if _eval(node.args[0], attributes) is True else node.args[2]
        return _eval(chosen, attributes)
    args = [_eval(a, attributes) for a in node.args]
    if name in _CONVERSIONS:
        return _CONVERSIONS[name](str(args[0]))
    if name == "match":
        return _glob(str(args[0]), str(args[1]))
    if name == "matches":
        regex = node.regex
        if regex is None:
            try:
                regex = compile_re2(str(args[0]))
            except Invalid as exc:
                raise EvaluationError(exc.message) from None
        return regex.search(str(args[1])) is not None
    if name == "startsWith":
        return str(args[0]).startswith(str(args[1]))
    if name == "endsWith":
        return str(args[0]).endswith(str(args[1]))
    if name == "ip_equal":
        return _equal(args[0], args[1])
    if name == "emptyStringMap":
        return MappingProxyType({})
    if name == "toLower":
        return str(args[0]).lower()
    assert name == "size"
    return len(str(args[0]).encode("utf-8"))


def _eval(node: Node, attributes: Mapping[str, object]) -> Value:
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, Attribute):
        value = _lookup(node, attributes)
        if isinstance(value, _Absent):
            raise EvaluationError(f"lookup failed: {node.name!r}")
        return value
    if isinstance(node, Index):
        value = _index(node, attributes, lenient=False)
        assert not isinstance(value, _Absent)
        return value
    if isinstance(node, Not):
        return _eval(node.operand, attributes) is not True
    if isinstance(node, Call):
        return _call(node, attributes)
    op = node.op
    if op == "&&":
        return _eval(node.left, attributes) is True and _eval(node.right, attributes) is True
    if op == "||":
        return _eval(node.left, attributes) is True or _eval(node.right, attributes) is True
    if op == "|":
        left = _eval_or_absent(node.left, attributes)
        return _eval(node.right, attributes) if isinstance(left, _Absent) else left
    a, b = _eval(node.left, attributes), _eval(node.right, attributes)
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op == "+":
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        if isinstance(a, int) and isinstance(b, int):
            return _int64(a + b)
        assert isinstance(a, float)
        assert isinstance(b, float)
        return a + b
    try:
        return bool(_ORDER[op](a, b))
    except TypeError as exc:  # e.g. a naive and an aware datetime
        raise EvaluationError(f"cannot compare {a!r} and {b!r}: {exc}") from None


def evaluate(expr: Expression, attributes: Mapping[str, object]) -> Value:
    """The value of ``expr``; raises :class:`EvaluationError` (e.g. for a missing attribute)."""
    return _eval(expr.root, attributes)


def evaluate_match(expr: Expression | None, attributes: Mapping[str, object]) -> bool:
    """A rule match: true for no expression, false when evaluation fails (as Mixer treats it)."""
    if expr is None:
        return True
    try:
        return evaluate(expr, attributes) is True
    except EvaluationError:
        return False
