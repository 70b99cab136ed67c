"""Write docs/configuration.md from the config models and the support table.

    python tools/gen_config_reference.py          # (re)write docs/configuration.md
    python tools/gen_config_reference.py --check  # exit 1 if the file is out of date

Every kind in ``pymesh.config.kinds.KINDS`` is walked field by field, through
``Annotated``, optional, list, map and nested message types, the way the decoder reads
them; each field's support status comes from ``pymesh.config.support``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from pymesh.config import types as scalars  # noqa: E402
from pymesh.config.decode import Json, Parse, wire_name  # noqa: E402
from pymesh.config.kinds import KINDS  # noqa: E402
from pymesh.config.networking import _netcheck, destinationrule, vs_http  # noqa: E402
from pymesh.config.resource import KindSpec, ObjectMeta  # noqa: E402
from pymesh.config.support import METADATA, SUPPORT, lookup, parse_pattern, support_for  # noqa: E402

__all__ = ["OUTPUT", "Row", "field_paths", "main", "render", "render_type", "stale_patterns", "walk"]

OUTPUT = ROOT / "docs" / "configuration.md"
MAP_KEY = "<key>"

# Named aliases from pymesh.config.types and the models, rendered by what they mean.
_ALIASES: tuple[tuple[Any, str], ...] = (
    (scalars.Duration, "duration"),
    (scalars.DurationOrZero, "duration (0s allowed)"),
    (scalars.Port, "port"),
    (vs_http.OptionalPort, "port (0: unset)"),
    (scalars.NonNegInt, "int (>= 0)"),
    (destinationrule.Int32, "int (>= 0)"),
    (destinationrule.UInt32, "int (>= 0)"),
    (scalars.NonEmptyStr, "string (not empty)"),
    (scalars.RE2Regex, "string (RE2 regex)"),
    (scalars.Labels, "labels (map of string to string)"),
    (_netcheck.ServiceProtocol, "protocol (" + ", ".join(f"`{p}`" for p in _netcheck.PROTOCOLS) + ")"),
    (_netcheck.GatewayProtocol, "protocol (" + ", ".join(f"`{p}`" for p in _netcheck.PROTOCOLS) + ")"),
)
_SCALARS: Mapping[Any, str] = {str: "string", int: "int", float: "number", bool: "bool", bytes: "bytes (base64)"}


@dataclass(frozen=True, slots=True)
class Row:
    """One field of a kind, at its path below ``spec``."""

    path: str
    type_label: str
    required: bool
    default: str  # rendered for the notes; "" when the default is "unset"
    deprecated: str | None
    message: type | None  # the model, when the field holds a message (or a list or map of them)
    recursive: bool = False  # the message is already open higher up the path: not walked again


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _alias(tp: Any) -> str | None:
    for alias, label in _ALIASES:
        if tp == alias:
            return label
    return None


def _is_json(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Annotated and any(m is typing.get_args(Json)[1] for m in tp.__metadata__)


def _range_label(constraints: tuple[Any, ...]) -> str:
    """``ranged(lo, hi)`` constraints, read from their closure: ``0..100``, ``>= 1``."""
    for fn in constraints:
        if getattr(fn, "__name__", "") != "check_range":
            continue
        code, cells = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
        if code is None or cells is None:
            continue
        bound = dict(zip(code.co_freevars, (c.cell_contents for c in cells), strict=True))
        lo, hi = bound.get("lo"), bound.get("hi")
        if lo is not None and hi is not None:
            return f"{lo:g}..{hi:g}"
        if lo is not None:
            return f">= {lo:g}"
        if hi is not None:
            return f"<= {hi:g}"
    return ""


def render_type(tp: Any) -> str:
    """A field type as a reader says it: ``list of HTTPRoute``, ``map of string to int``, ``duration``."""
    tp = _strip_optional(tp)
    label = _alias(tp)
    if label is not None:
        return label
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        if _is_json(tp):
            return "any (kept as given)"
        base, *meta = typing.get_args(tp)
        text = render_type(base)
        bounds = _range_label(tuple(meta))
        if base is int and bounds == "1..65535":
            return "port"
        return f"{text} ({bounds})" if bounds else text
    if tp in _SCALARS:
        return _SCALARS[tp]
    if origin is typing.Literal:
        return "enum: " + ", ".join(f"`{v}`" for v in typing.get_args(tp))
    if origin is tuple:
        return "list of " + render_type(typing.get_args(tp)[0])
    if origin in (Mapping, dict):
        key, value = typing.get_args(tp)
        return f"map of {render_type(key)} to {render_type(value)}"
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp.__qualname__
    raise TypeError(f"cannot render {tp!r}")


def _message(tp: Any) -> tuple[type, bool] | None:
    """The model a field holds (through Annotated, optional, list and map), and whether a map leads to it."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        if _is_json(tp):
            return None
        base, *meta = typing.get_args(tp)
        parsed = next((m for m in meta if isinstance(m, Parse)), None)
        return _message(parsed.source if parsed is not None else base)
    if origin is tuple:
        return _message(typing.get_args(tp)[0])
    if origin in (Mapping, dict):
        inner = _message(typing.get_args(tp)[1])
        return None if inner is None else (inner[0], True)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp, False
    return None


_UNSET_ENUMS = frozenset({"UNSPECIFIED", "UNSET", "DEFAULT"})  # enum zero values that mean "not set"


def _format_seconds(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _default(f: dataclasses.Field[Any], tp: Any) -> str:
    value = f.default
    if value is dataclasses.MISSING or value is None or value in ("", (), 0, False) or isinstance(value, Mapping):
        return ""
    if dataclasses.is_dataclass(value):
        return ""
    base = _strip_optional(tp)
    if base in (scalars.Duration, scalars.DurationOrZero) and isinstance(value, float):
        return _format_seconds(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value in _UNSET_ENUMS:
        return ""
    return str(value)


def walk(model: type) -> list[Row]:
    """Every field of ``model`` and of the messages under it, depth first in declaration order."""
    rows: list[Row] = []
    _walk(model, "", rows, (model,))
    return rows


def _walk(model: type, prefix: str, rows: list[Row], open_: tuple[type, ...]) -> None:
    hints = typing.get_type_hints(model, include_extras=True)
    for f in dataclasses.fields(model):
        tp = hints[f.name]
        path = prefix + (f.metadata.get("wire") or wire_name(f.name))
        held = _message(tp)
        recursive = held is not None and held[0] in open_
        rows.append(Row(
            path=path,
            type_label=render_type(tp),
            required=f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            default=_default(f, tp),
            deprecated=f.metadata.get("deprecated"),
            message=held[0] if held is not None else None,
            recursive=recursive,
        ))
        if held is not None and not recursive:
            sub, via_map = held
            _walk(sub, f"{path}.{MAP_KEY}." if via_map else f"{path}.", rows, (*open_, sub))


def field_paths(kind: str) -> set[str]:
    """The field paths of ``kind`` (or of the ``metadata`` pseudo-kind)."""
    return {row.path for row in walk(_model(kind))}


def _model(kind: str) -> type:
    if kind == METADATA:
        return ObjectMeta
    for spec in KINDS.values():
        if spec.kind == kind:
            return spec.spec
    raise KeyError(kind)


# -- rendering ---------------------------------------------------------------------------------

_RST_LITERAL = re.compile(r"``([^`]+)``")
_SPHINX_ROLE = re.compile(r":[a-z]+:`([^`]+)`")
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z`])")


def _summary(model: type) -> str:
    """The first sentence of a model's own docstring ("" for the one dataclass generates)."""
    doc = model.__doc__ or ""
    if not doc or doc.startswith(model.__name__ + "("):
        return ""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    sentence = _SENTENCE_END.split(paragraph, maxsplit=1)[0]
    return _SPHINX_ROLE.sub(r"`\1`", _RST_LITERAL.sub(r"`\1`", sentence))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _notes(kind: str, row: Row, described: set[type]) -> str:
    parts: list[str] = []
    if row.message is not None and row.message not in described:
        described.add(row.message)  # say what a message is where it first appears in the table
        summary = _summary(row.message)
        if summary:
            parts.append(_sentence(summary))
    if row.recursive and row.message is not None:
        parts.append(f"Recursive: `{row.message.__qualname__}` is described above.")
    if row.required:
        parts.append("Required.")
    if row.default:
        parts.append(f"Default `{row.default}`.")
    pattern, support = lookup(kind, row.path)
    # A note belongs to the row its pattern names; the rows under it inherit only the status.
    repeated = bool(row.deprecated) and support.note.lower() in (row.deprecated or "").lower()
    if support.note and parse_pattern(pattern)[1] == row.path and not repeated:
        parts.append(_sentence(support.note))
    if row.deprecated:
        parts.append("Deprecated: " + _sentence(row.deprecated))
    return " ".join(parts)


def _table(kind: str, rows: list[Row]) -> list[str]:
    out = ["| field path | type | support | notes |", "|---|---|---|---|"]
    described: set[type] = set()
    for row in rows:
        support = support_for(kind, row.path)
        out.append(f"| `{row.path}` | {_cell(row.type_label)} | {support} | {_cell(_notes(kind, row, described))} |")
    return out


def _counts(kind: str, rows: list[Row]) -> dict[str, int]:
    counts = dict.fromkeys(("enforced", "accepted", "ignored", "rejected"), 0)
    for row in rows:
        counts[support_for(kind, row.path).status] += 1
    return counts


def _groups() -> dict[str, list[KindSpec]]:
    groups: dict[str, list[KindSpec]] = {}
    for spec in KINDS.values():
        groups.setdefault(spec.group, []).append(spec)
    return groups


_GROUP_TITLES: Mapping[str, str] = {
    "networking.istio.io": "Traffic management",
    "security.istio.io": "Security",
    "authentication.istio.io": "Istio 1.0/1.1 authentication",
    "rbac.istio.io": "Istio 1.0/1.1 RBAC",
    "config.istio.io": "Istio 1.0/1.1 Mixer policy",
    "pymesh": "Mesh-wide settings",
}

_KIND_EXTRA: Mapping[str, str] = {
    "MeshConfig": (
        "Given either as Istio's own ConfigMap (`kind: ConfigMap`, "
        "`metadata.name: istio`, the settings as YAML under `data.mesh`) or as a document "
        "`apiVersion: pymesh/v1`, `kind: MeshConfig` with the settings under `spec`. When several are "
        "loaded, the last one applies (with a warning). Fields of Istio's MeshConfig that pymesh does not "
        "type are read as free-form values, so a real `istio` ConfigMap loads unchanged."
    ),
}

_INTRO = """\
# Configuration reference

<!-- Generated by tools/gen_config_reference.py from the models in pymesh/config/ and the support
table in pymesh/config/support.py. Do not edit: run `python tools/gen_config_reference.py`. -->

Every kind and field pymesh reads, its type, and what pymesh does with it. Where pymesh
knowingly behaves differently from Istio, see [Differences from Istio](differences.md).

## How to read the tables

- **field path** is relative to the document's `spec`. List items add nothing to the path:
  `http.route.destination.host` is `spec.http[i].route[j].destination.host`. A map value adds
  `<key>`: `http.match.headers.<key>.exact`.
- **type**: `string`, `int`, `number`, `bool`; `duration` (see below); `port` (1..65535);
  `enum:` lists the allowed values; `list of X`; `map of string to X`; `labels` (Kubernetes label
  keys and values); a name such as `HTTPRoute` is a message whose fields follow on the next rows;
  `any` is free-form YAML, kept as given. Ranges are inclusive.
- **support**:
  - `enforced`: pymesh acts on it.
  - `accepted (<area>)`: validated and loaded, not acted on yet; `<area>` is the work that will act on it.
  - `ignored`: accepted and validated, with no effect by design; the notes say why.
  - `rejected`: pymesh refuses it on purpose (a load error); the notes say why.
- **notes**: what a message is, `Required.`, non-trivial defaults, and deprecation warnings
  (a deprecated field loads, with its warning).

## How pymesh reads YAML

- A document has `apiVersion`, `kind`, `metadata` and `spec` (`status` is ignored); any other
  top-level key is an error. `metadata.name` is required; without `metadata.namespace` a
  document takes the namespace the loader was given, as `kubectl apply -n` does.
- Field names are Istio's lowerCamel spellings (`perTryTimeout`). The snake_case spelling
  (`per_try_timeout`) is accepted too, as protobuf JSON parsers accept it; giving both in one
  object is an error.
- Unknown fields are errors, with a "did you mean" hint; so are enum values not in the list
  (enum values are case-sensitive; protocol names are not).
- `null` means unset, as in protobuf JSON. A required field must not be null, nor may a list item.
- Durations are Go/protobuf duration strings: `1s`, `500ms`, `1.5s`, `2m`, `1h30m` (units `ns`,
  `us`, `ms`, `s`, `m`, `h`). As in Istio they must be at least 1ms and whole milliseconds;
  `duration (0s allowed)` also takes `0s`.
- YAML 1.1 surprises are refused rather than guessed at: `yes`/`no`/`on`/`off` where a string or
  a boolean is expected (write `true`/`false`, or quote the string), numbers with a leading `0`
  (octal), hex or base-60 where a string or an integer is expected, and merge keys (`<<`).
  Duplicate keys are errors. Unquoted IPv6 addresses in flow lists (`[10.0.0.1, 2001:db8::]`)
  are read as strings, as YAML 1.2 and Kubernetes read them.
- The Istio 1.0/1.1 APIs current Istio removed are still read (`legacy` below), with one warning
  per kind; fields old Istio versions had are accepted with a deprecation warning.
- Documents of other kinds (`Deployment`, `Service`, `EnvoyFilter`, Mixer adapters, ...) are
  skipped with a warning. A kind no Istio CRD has in an Istio API group (`security.istio.io`
  `AuthorisationPolicy`) is an error, as the API server would refuse it: skipping it could
  silently drop a misspelt DENY policy. An error anywhere fails the whole load; nothing
  half-applies.
- Values Istio accepts but that cannot mean what they seem to are warnings: an
  AuthorizationPolicy path with a `*` in the middle (matched as a plain `*`), a principal
  written with `spiffe://` (never matches), a plain-`http` `jwksUri`, a `jwksUri` or
  `providerUrl` aimed at cloud instance metadata. A DENY policy using one would fail open.
"""


def _anchor(title: str) -> str:
    """GitHub's heading anchor."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return slug.replace(" ", "-")


def _kind_section(spec: KindSpec, rows: list[Row]) -> list[str]:
    versions = ", ".join(f"`{spec.group}/{v}`" for v in spec.versions)
    facts = [f"apiVersion: {versions}.", "Namespaced." if spec.namespaced else "Cluster-scoped."]
    if spec.legacy:
        facts.append("Legacy: removed from Istio; pymesh still reads it.")
    lines = [f"### {spec.kind}", "", " ".join(facts), ""]
    about = " ".join(p for p in (_sentence(_summary(spec.spec)) if _summary(spec.spec) else "",
                                 _KIND_EXTRA.get(spec.kind, "")) if p)
    if about:
        lines += [about, ""]
    default = support_for(spec.kind)
    line = f"Support: {default}, unless a row says otherwise."
    lines += [f"{line} {_sentence(default.note)}" if default.note else line, ""]
    if not rows:
        return [*lines, "The spec has no fields: write `spec: {}` or leave it out.", ""]
    return [*lines, *_table(spec.kind, rows), ""]


def render() -> str:
    """The whole of docs/configuration.md."""
    walked = {spec.kind: walk(spec.spec) for spec in KINDS.values()}
    lines = [_INTRO, "## Kinds", "",
             "Fields per support status, counting every row of the kind's table.", "",
             "| kind | API group | versions | legacy | enforced | accepted | ignored | rejected |",
             "|---|---|---|---|---|---|---|---|"]
    for spec in KINDS.values():
        counts = _counts(spec.kind, walked[spec.kind])
        lines.append(
            f"| [{spec.kind}](#{_anchor(spec.kind)}) | `{spec.group}` | {', '.join(spec.versions)} | "
            f"{'yes' if spec.legacy else ''} | "
            + " | ".join(str(counts[s]) for s in ("enforced", "accepted", "ignored", "rejected")) + " |"
        )
    lines += ["", "## metadata", "",
              "Kubernetes `metadata`, the same for every kind; what `kubectl get -o yaml` writes is accepted.",
              "", *_table(METADATA, walk(ObjectMeta)), ""]
    for group, specs in _groups().items():
        lines += [f"## {_GROUP_TITLES.get(group, group)} (`{group}`)", ""]
        for spec in specs:
            lines += _kind_section(spec, walked[spec.kind])
    return "\n".join(lines).rstrip("\n") + "\n"


def stale_patterns() -> list[str]:
    """Patterns in the support table that name no kind or no field (empty when the table is true)."""
    kinds = {spec.kind for spec in KINDS.values()} | {METADATA}
    stale: list[str] = []
    paths: dict[str, set[str]] = {}
    for pattern in SUPPORT:
        kind, path, _ = parse_pattern(pattern)
        if kind not in kinds:
            stale.append(pattern)
            continue
        known = paths.get(kind)
        if known is None:
            known = paths[kind] = field_paths(kind)
        if path and path not in known:
            stale.append(pattern)
    return stale


def _display(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None, write: Callable[[str], object] = sys.stdout.write) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    stale = stale_patterns()
    if stale:
        write(f"pymesh/config/support.py names fields that do not exist: {', '.join(stale)}\n")
        return 1
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            write(f"{_display(OUTPUT)} is out of date; run: python tools/gen_config_reference.py\n")
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    write(f"wrote {_display(OUTPUT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
