"""Decoding YAML node trees into frozen dataclass models.

Models are ``@dataclass(frozen=True, slots=True, kw_only=True)`` classes whose attribute
names are the protobuf field names (``per_try_timeout``); the YAML spelling is the
protobuf-JSON lowerCamel name (``perTryTimeout``), and the snake_case spelling is accepted
too, as protobuf JSON parsers do. The decoder works from nodes rather than constructed
Python objects so that every finding carries its line and column, and it keeps going
after a problem so that one load reports all of them.

Types a model field may have: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]`` of
strings, ``tuple[T, ...]``, ``Mapping[str, T]``, another model, ``T | None``, ``Json``
(any value, kept as plain Python), and ``Annotated[T, constraint, ...]`` where each
constraint is a callable that returns the (possibly converted) value or raises
``Invalid``. A model may define ``_check(self, v: Checker)`` for rules that span fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import yaml

from pymesh.config.guard import Limits, measure, render_path
from pymesh.errors import Issue, Severity

__all__ = [
    "INVALID",
    "Checker",
    "Invalid",
    "Json",
    "Parse",
    "Report",
    "decode",
    "field",
    "render_path",
    "wire_name",
]

T = TypeVar("T")
PathPart = str | int
Path = tuple[PathPart, ...]


class _Json:
    """Marker type: any YAML value, kept as plain Python data."""


Json = typing.Annotated[Any, _Json]


class Parse:
    """``Annotated`` marker: decode the node as ``source``, then convert with ``fn``.

    ``Duration = Annotated[float, Parse(str, parse_duration)]`` reads ``"1.5s"`` and
    stores ``1.5``; ``fn`` raises ``Invalid`` for a bad value.
    """

    __slots__ = ("fn", "source")

    def __init__(self, source: type, fn: Callable[[Any], Any]) -> None:
        self.source = source
        self.fn = fn

    def __call__(self, value: Any) -> Any:
        return self.fn(value)


class _InvalidType:
    def __repr__(self) -> str:
        return "INVALID"


INVALID: Final = _InvalidType()


class Invalid(Exception):
    """Raised by a constraint: the value is wrong, and ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Report:
    """The findings for one document, with what identifies it."""

    __slots__ = ("column_offset", "file", "index", "issues", "kind", "line_offset", "name", "namespace", "pin")

    def __init__(self, file: str, index: int | None, line_offset: int = 0, column_offset: int = 0) -> None:
        self.file = file
        self.index = index
        self.line_offset = line_offset
        self.column_offset = column_offset  # for text embedded in an indented block scalar
        self.pin: yaml.Mark | None = None  # report every finding here (text embedded in a quoted string)
        self.kind = ""
        self.namespace = ""
        self.name = ""
        self.issues: list[Issue] = []

    def add(self, severity: Severity, path: Path, node: yaml.Node | None, message: str) -> None:
        mark = None if node is None else node.start_mark
        line_offset, column_offset = self.line_offset, self.column_offset
        if self.pin is not None:
            mark, line_offset, column_offset = self.pin, 0, 0
        self.issues.append(
            Issue(
                severity=severity,
                message=message,
                file=self.file,
                document=self.index,
                kind=self.kind,
                namespace=self.namespace,
                name=self.name,
                path=render_path(path),
                line=None if mark is None else mark.line + 1 + line_offset,
                column=None if mark is None else mark.column + 1 + column_offset,
            )
        )

    @property
    def failed(self) -> bool:
        return any(i.severity == "error" for i in self.issues)


def _norm(key: str) -> str:
    return key.replace("_", "").lower()


class Checker:
    """Lets a model's ``_check`` report at paths relative to itself."""

    __slots__ = ("_node", "_path", "report")

    def __init__(self, report: Report, node: yaml.Node, path: Path) -> None:
        self.report = report
        self._node = node
        self._path = path

    @property
    def namespace(self) -> str:
        return self.report.namespace

    @property
    def path(self) -> Path:
        return self._path

    @property
    def node(self) -> yaml.Node:
        """The YAML node of the object being checked (for re-decoding free-form parts)."""
        return self._node

    def at(self, *rel: PathPart) -> Checker:
        return Checker(self.report, self._locate(rel), self._path + rel)

    def error(self, message: str, *rel: PathPart) -> None:
        self.report.add("error", self._path + rel, self._locate(rel), message)

    def warn(self, message: str, *rel: PathPart) -> None:
        self.report.add("warning", self._path + rel, self._locate(rel), message)

    def _locate(self, rel: Path) -> yaml.Node:
        node = self._node
        for part in rel:
            nxt: yaml.Node | None = None
            if isinstance(part, int) and isinstance(node, yaml.SequenceNode):
                if 0 <= part < len(node.value):
                    nxt = node.value[part]
            elif isinstance(part, str) and isinstance(node, yaml.MappingNode):
                want = _norm(part)
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and (k.value == part or _norm(k.value) == want):
                        nxt = v
                        break
            if nxt is None:
                break
            node = nxt
        return node


# -- field declarations -------------------------------------------------------------


def wire_name(attr: str) -> str:
    """``per_try_timeout`` -> ``perTryTimeout``; a trailing ``_`` (``from_``) is dropped."""
    head, *rest = attr.rstrip("_").split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def field(
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    wire: str | None = None,
    deprecated: str | None = None,
) -> Any:
    """A model field with pymesh metadata (wire spelling, deprecation warning)."""
    meta: dict[str, Any] = {}
    if wire is not None:
        meta["wire"] = wire
    if deprecated is not None:
        meta["deprecated"] = deprecated
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


# -- the decoder ---------------------------------------------------------------------

Decoder = Callable[[yaml.Node, Report, Path], Any]

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_DECIMAL_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_DECIMAL_FLOAT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return {
        _INT: "the number",
        _FLOAT: "the number",
        _BOOL: "the boolean",
        _NULL: "null",
        _STR: "the string",
    }.get(node.tag, "the value") + ("" if node.tag == _NULL else f" {node.value!r}")


def _decode_str(node: yaml.Node, report: Report, path: Path) -> Any:
    if isinstance(node, yaml.ScalarNode):
        if node.tag in (_STR, _TIMESTAMP):
            return node.value
        if node.tag == _BOOL:
            report.add("error", path, node,
                       f"YAML reads {node.value} as a boolean; quote it ('{node.value}') for the string")
            return INVALID
        if node.tag == _INT and not _DECIMAL_INT.fullmatch(node.value):
            report.add("error", path, node,
                       f"YAML 1.1 reads {node.value} as a number (octal, hex or base 60); quote it for the string")
            return INVALID
    report.add("error", path, node, f"expected a string, got {_describe(node)}")
    return INVALID


def _decode_int(node: yaml.Node, report: Report, path: Path) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag == _INT:
        if _DECIMAL_INT.fullmatch(node.value):
            return int(node.value)
        report.add("error", path, node,
                   f"{node.value} is not a plain decimal integer (no leading 0, hex, base-60 or '_'; "
                   "YAML 1.1 would read it as another number)")
        return INVALID
    report.add("error", path, node, f"expected an integer, got {_describe(node)}")
    return INVALID


def _decode_float(node: yaml.Node, report: Report, path: Path) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag in (_INT, _FLOAT) and _DECIMAL_FLOAT.fullmatch(node.value):
        return float(node.value)
    report.add("error", path, node, f"expected a number, got {_describe(node)}")
    return INVALID


def _decode_bool(node: yaml.Node, report: Report, path: Path) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL:
        low = node.value.lower()
        if low in ("true", "false"):
            return low == "true"
        report.add("error", path, node, f"write true or false, not {node.value!r} (a YAML 1.1 boolean)")
        return INVALID
    report.add("error", path, node, f"expected true or false, got {_describe(node)}")
    return INVALID


def to_python(node: yaml.Node) -> Any:
    """Plain Python data for a node (already measured, so aliases cannot explode)."""
    constructor = yaml.constructor.SafeConstructor()
    return constructor.construct_object(node, deep=True)


def _duplicate(seen: dict[str, yaml.Node], key: yaml.ScalarNode, report: Report, path: Path) -> bool:
    """Report a key given twice in one mapping (PyYAML would silently keep the last)."""
    first = seen.get(key.value)
    if first is None:
        seen[key.value] = key
        return False
    line = first.start_mark.line + 1 + report.line_offset
    report.add("error", (*path, key.value), key, f"duplicate key {key.value!r} (first at line {line})")
    return True


def _decode_json(node: yaml.Node, report: Report, path: Path) -> Any:
    # Free-form values are the one place the decoder does not walk itself: guard them here.
    problem = measure(node, Limits(), report.line_offset)
    if problem is not None:
        message, mark, where = problem
        rel = tuple(p for p in where.replace("[", ".").replace("]", "").split(".") if p)
        report.add("error", path + rel, yaml.ScalarNode("", "", mark, mark), message)
        return INVALID
    try:
        return to_python(node)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # An explicit tag the safe constructor refuses or cannot read (!foo, !!int abc).
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        report.add("error", path, node, f"cannot read this value: {first}")
        return INVALID


def _literal(choices: tuple[str, ...]) -> Decoder:
    allowed = frozenset(choices)
    folded = {c.lower(): c for c in choices}
    listing = ", ".join(choices)

    def decode_literal(node: yaml.Node, report: Report, path: Path) -> Any:
        value = _decode_str(node, report, path)
        if value is INVALID or value in allowed:
            return value
        hint = folded.get(value.lower()) or next(iter(difflib.get_close_matches(value, choices, 1, 0.6)), None)
        more = f" (did you mean {hint!r}?)" if hint else ""
        report.add("error", path, node, f"{value!r} is not one of {listing}{more}")
        return INVALID

    return decode_literal


def _sequence(item: Decoder) -> Decoder:
    def decode_sequence(node: yaml.Node, report: Report, path: Path) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            report.add("error", path, node, f"expected a list, got {_describe(node)}")
            return INVALID
        out = []
        ok = True
        for i, child in enumerate(node.value):
            if is_null(child):
                report.add("error", (*path, i), child, "list item is null")
                ok = False
                continue
            value = item(child, report, (*path, i))
            if value is INVALID:
                ok = False
            else:
                out.append(value)
        return tuple(out) if ok else INVALID

    return decode_sequence


def _mapping(value_decoder: Decoder) -> Decoder:
    def decode_mapping(node: yaml.Node, report: Report, path: Path) -> Any:
        if not isinstance(node, yaml.MappingNode):
            report.add("error", path, node, f"expected a mapping, got {_describe(node)}")
            return INVALID
        out: dict[str, Any] = {}
        ok = True
        seen: dict[str, yaml.Node] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                report.add("error", path, k, "a mapping key must be a plain value")
                ok = False
                continue
            if _duplicate(seen, k, report, path):
                ok = False
                continue
            value = value_decoder(v, report, (*path, k.value))
            if value is INVALID:
                ok = False
            else:
                out[k.value] = value
        return out if ok else INVALID

    return decode_mapping


def _annotated(base: Decoder, constraints: tuple[Callable[[Any], Any], ...]) -> Decoder:
    def decode_annotated(node: yaml.Node, report: Report, path: Path) -> Any:
        value = base(node, report, path)
        if value is INVALID:
            return value
        for constraint in constraints:
            try:
                value = constraint(value)
            except Invalid as exc:
                report.add("error", path, node, exc.message)
                return INVALID
        return value

    return decode_annotated


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldPlan:
    attr: str
    wire: str
    decoder: Decoder
    required: bool
    deprecated: str | None


class _ClassPlan:
    __slots__ = ("by_key", "check", "cls", "fields", "required", "wires")

    def __init__(self, cls: type) -> None:
        hints = typing.get_type_hints(cls, include_extras=True)
        self.cls = cls
        self.fields: list[_FieldPlan] = []
        self.by_key: dict[str, _FieldPlan] = {}
        for f in dataclasses.fields(cls):
            wire = f.metadata.get("wire") or wire_name(f.name)
            plan = _FieldPlan(
                attr=f.name,
                wire=wire,
                decoder=_compile(hints[f.name]),
                required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                deprecated=f.metadata.get("deprecated"),
            )
            self.fields.append(plan)
            self.by_key[wire] = plan
            self.by_key.setdefault(f.name.rstrip("_"), plan)
        self.wires = [p.wire for p in self.fields]
        self.required = tuple(p for p in self.fields if p.required)
        self.check: Callable[[Any, Checker], None] | None = getattr(cls, "_check", None)

    def decode(self, node: yaml.Node, report: Report, path: Path) -> Any:
        if not isinstance(node, yaml.MappingNode):
            report.add("error", path, node, f"expected a mapping, got {_describe(node)}")
            return INVALID
        # The hot loop of every load: kept flat, with the rare cases out of line.
        values: dict[str, Any] = {}
        given: dict[str, str] = {}  # attr -> the spelling used
        nulls: list[_FieldPlan] = []
        seen: dict[str, yaml.Node] = {}
        by_key = self.by_key
        ok = True
        for knode, vnode in node.value:
            key = knode.value
            if type(knode) is not yaml.ScalarNode or key in seen or key not in by_key:
                ok = self._odd_key(knode, seen, report, path) and ok
                continue
            seen[key] = knode
            plan = by_key[key]
            attr = plan.attr
            if attr in given:
                report.add("error", (*path, plan.wire), knode,
                           f"{key!r} repeats {given[attr]!r} (the same field in two spellings)")
                ok = False
                continue
            given[attr] = key
            if vnode.tag == _NULL and type(vnode) is yaml.ScalarNode:
                nulls.append(plan)  # protobuf JSON: null means unset
                continue
            if plan.deprecated:
                report.add("warning", (*path, plan.wire), knode, plan.deprecated)
            value = plan.decoder(vnode, report, (*path, plan.wire))
            if value is INVALID:
                ok = False
            else:
                values[attr] = value
        if nulls or any(p.attr not in given for p in self.required):
            ok = self._missing(node, given, nulls, report, path) and ok
        if not ok:
            return INVALID
        obj = self.cls(**values)
        if self.check is not None:
            self.check(obj, Checker(report, node, path))
        return obj

    def _odd_key(self, knode: yaml.Node, seen: dict[str, yaml.Node], report: Report, path: Path) -> bool:
        """A key that is not a plain known field: report why. Returns False when it is an error."""
        if not isinstance(knode, yaml.ScalarNode):
            report.add("error", path, knode, "a field name must be a plain value")
            return False
        if _duplicate(seen, knode, report, path):
            return False
        key = knode.value
        if knode.tag == "tag:yaml.org,2002:merge":
            report.add("error", path, knode, "YAML merge keys (<<) are not supported; write the fields out")
        else:
            report.add("error", (*path, key), knode, f"unknown field {key!r}{self._hint(key)}")
        return False

    def _missing(self, node: yaml.Node, given: dict[str, str], nulls: list[_FieldPlan], report: Report,
                 path: Path) -> bool:
        ok = True
        for plan in self.fields:
            if plan.required and plan.attr not in given:
                report.add("error", (*path, plan.wire), node, f"missing required field {plan.wire!r}")
                ok = False
        for plan in nulls:
            if plan.required:
                report.add("error", (*path, plan.wire), node, f"{plan.wire!r} is required and must not be null")
                ok = False
        return ok

    def _hint(self, key: str) -> str:
        folded = {_norm(w): w for w in self.wires}
        match = folded.get(_norm(key)) or next(iter(difflib.get_close_matches(key, self.wires, 1, 0.75)), None)
        return f" (did you mean {match!r}?)" if match else ""


_plans: dict[type, _ClassPlan] = {}


def _object(cls: type) -> Decoder:
    def decode_object(node: yaml.Node, report: Report, path: Path) -> Any:
        plan = _plans.get(cls)
        if plan is None:
            plan = _plans[cls] = _ClassPlan(cls)
        return plan.decode(node, report, path)

    return decode_object


_SCALARS: dict[Any, Decoder] = {
    str: _decode_str,
    int: _decode_int,
    float: _decode_float,
    bool: _decode_bool,
}


def _compile(tp: Any) -> Decoder:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(tp)
        if _Json in meta:
            return _decode_json
        if meta and isinstance(meta[0], Parse):
            base = meta[0].source
        return _annotated(_compile(base), tuple(meta))
    if tp in _SCALARS:
        return _SCALARS[tp]
    if origin is typing.Literal:
        return _literal(tuple(typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {tp!r}")
        return _compile(args[0])
    if origin is tuple:
        item, *rest = typing.get_args(tp)
        if rest != [Ellipsis]:
            raise TypeError(f"use tuple[T, ...], not {tp!r}")
        return _sequence(_compile(item))
    if origin in (Mapping, dict, typing.Mapping):
        key, value = typing.get_args(tp)
        if key is not str:
            raise TypeError(f"mapping keys must be str in {tp!r}")
        return _mapping(_compile(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _object(tp)
    raise TypeError(f"pymesh.config.decode cannot decode {tp!r}")


_compiled: dict[Any, Decoder] = {}


def decode(tp: type[T] | Any, node: yaml.Node, report: Report, path: Path = ()) -> T | Any:
    """Decode ``node`` as ``tp``; returns ``INVALID`` after reporting when it cannot."""
    decoder = _compiled.get(tp)
    if decoder is None:
        decoder = _compiled[tp] = _compile(tp)
    return decoder(node, report, path)
