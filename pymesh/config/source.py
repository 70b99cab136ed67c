"""Reading config text into YAML node trees, safely.

Only the composer runs here: nodes keep the parser's marks (line and column) so every
later finding can point at its line, and nothing is constructed before the guards have
measured the tree. PyYAML composes an alias bomb in microseconds and only explodes when
something walks the expanded structure, so the walk that measures it memoises shared
nodes and stops at the bound, before anything large is built.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pymesh.config.decode import render_path
from pymesh.errors import Issue

__all__ = ["Document", "Limits", "discover", "peek_identity", "read_file", "read_text"]

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on what one source may ask of the loader."""

    max_file_bytes: int = 16 * 1024 * 1024
    max_document_nodes: int = 200_000  # after alias expansion
    max_depth: int = 64  # Istio's deepest schema path is about 12 levels


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document of a source, as a node tree with marks."""

    file: str
    index: int
    node: yaml.Node
    line_offset: int = 0  # for documents embedded in a string (ConfigMap data.mesh)
    text: str = ""  # the whole text the document was composed from (shared, not copied)


def _issue(file: str, message: str, mark: yaml.Mark | None = None, index: int | None = None,
           line_offset: int = 0, *, path: str = "", identity: tuple[str, str, str] = ("", "", "")) -> Issue:
    kind, namespace, name = identity
    return Issue(
        severity="error",
        message=message,
        file=file,
        document=index,
        kind=kind,
        namespace=namespace,
        name=name,
        path=path,
        line=None if mark is None else mark.line + 1 + line_offset,
        column=None if mark is None else mark.column + 1,
    )


def _scalar_at(node: yaml.Node, *keys: str) -> str:
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return ""
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                node = v
                break
        else:
            return ""
    return node.value if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:null" else ""


def peek_identity(node: yaml.Node) -> tuple[str, str, str]:
    """(kind, namespace, name) as a document states them, read without decoding it."""
    return (_scalar_at(node, "kind"), _scalar_at(node, "metadata", "namespace"), _scalar_at(node, "metadata", "name"))


def discover(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Issue]]:
    """Expand files and folders (recursively, ``*.yaml``/``*.yml``/``*.json``) in a stable order."""
    found: list[Path] = []
    issues: list[Issue] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            issues.append(_issue(str(p), "no such file or folder"))
    return found, issues


def read_file(path: Path, limits: Limits) -> tuple[list[Document], list[Issue]]:
    name = str(path)
    try:
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            return [], [_issue(name, f"file is {size} bytes, over the limit of {limits.max_file_bytes}")]
        data = path.read_bytes()
    except OSError as exc:
        return [], [_issue(name, f"cannot read: {exc.strerror or exc}")]
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [_issue(name, f"not UTF-8 text (byte {exc.start})")]
    return read_text(text, name, limits)


def read_text(text: str, file: str, limits: Limits, line_offset: int = 0) -> tuple[list[Document], list[Issue]]:
    """Compose every document in ``text``; a syntax error ends the file there."""
    if len(text.encode("utf-8", "surrogatepass")) > limits.max_file_bytes:
        return [], [_issue(file, f"text is over the limit of {limits.max_file_bytes} bytes")]
    for _ in range(_MAX_FLOW_COLON_FIXES):
        docs, issues, retry = _compose(text, file, limits, line_offset)
        if retry is None:
            return docs, issues
        text = retry
    return docs, issues


# YAML 1.2 (and the Go parser Kubernetes uses) reads `[1.2.3.4, 001:db8::]` as two strings;
# PyYAML's 1.1 scanner refuses the colons. Quote such a scalar and compose again.
_MAX_FLOW_COLON_FIXES = 32
_FLOW_END = frozenset(",]}\n")


def _quote_flow_scalar(text: str, exc: yaml.MarkedYAMLError) -> str | None:
    start: yaml.Mark | None = exc.context_mark
    if (
        exc.context != "while scanning a plain scalar"
        or exc.problem != "found unexpected ':'"
        or start is None
        or not 0 <= start.index < len(text)
    ):
        return None
    end = start.index
    while end < len(text) and text[end] not in _FLOW_END:
        end += 1
    scalar = text[start.index:end].rstrip()
    if not scalar or '"' in scalar or "\\" in scalar:
        return None
    return text[: start.index] + '"' + scalar + '"' + text[start.index + len(scalar):]


def _clamp(mark: yaml.Mark | None, text: str) -> yaml.Mark | None:
    # At an unexpected end of text libyaml's mark can sit one line past the last one.
    if mark is None:
        return None
    last = max(text.count("\n") - (1 if text.endswith("\n") else 0), 0)
    if mark.line <= last:
        return mark
    start = text.rfind("\n", 0, len(text.rstrip("\n"))) + 1
    return yaml.Mark(mark.name, len(text), last, len(text.rstrip("\n")) - start, None, 0)


def _position(text: str, index: int) -> yaml.Mark:
    line = text.count("\n", 0, index)
    return yaml.Mark("", index, line, index - (text.rfind("\n", 0, index) + 1), None, 0)


def _compose(text: str, file: str, limits: Limits, line_offset: int) -> tuple[list[Document], list[Issue], str | None]:
    docs: list[Document] = []
    issues: list[Issue] = []
    index = 0
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if node is not None and not _empty(node):
                problem = _measure(node, limits, line_offset)
                if problem is not None:
                    message, mark, path = problem
                    issues.append(_issue(file, message, mark, index, line_offset, path=path,
                                         identity=peek_identity(node)))
                else:
                    docs.append(Document(file, index, node, line_offset, text))
            index += 1
    except yaml.MarkedYAMLError as exc:
        fixed = _quote_flow_scalar(text, exc)
        if fixed is not None:
            return [], [], fixed
        syntax_mark = _clamp(exc.problem_mark or exc.context_mark, text)
        reason = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        issues.append(_issue(file, f"YAML syntax: {reason}", syntax_mark, index, line_offset))
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        where = _position(text, exc.position) if 0 <= exc.position <= len(text) else None
        issues.append(_issue(file, f"YAML syntax: the character #x{char:04x} is not allowed in YAML text",
                             where, index, line_offset))
    except UnicodeError:
        issues.append(_issue(file, "text holds characters that are not valid Unicode (a lone surrogate?)",
                             None, index, line_offset))
    except (yaml.YAMLError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        issues.append(_issue(file, f"YAML syntax: {first}", None, index, line_offset))
    return docs, issues, None


def _empty(node: yaml.Node) -> bool:
    # A bare `---` or a comment-only document composes to an empty null scalar; kubectl skips those.
    null = isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"
    return null and node.value in ("", "~", "null")


def _measure(root: yaml.Node, limits: Limits, line_offset: int = 0) -> tuple[str, yaml.Mark, str] | None:
    """Check size after alias expansion, depth and duplicate keys, without expanding.

    Returns (reason, mark, field path) for the first problem found.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    active: set[int] = set()

    def walk(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            if depth + known[1] > limits.max_depth:
                raise _Refused(f"nesting deeper than {limits.max_depth} levels", node.start_mark)
            return known
        if key in active:
            raise _Refused("recursive alias: a node contains itself", node.start_mark)
        if depth > limits.max_depth:
            raise _Refused(f"nesting deeper than {limits.max_depth} levels", node.start_mark)
        active.add(key)
        total, height = 1, 0
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen and k.tag != "tag:yaml.org,2002:merge":
                        line = seen[k.value].start_mark.line + 1 + line_offset
                        raise _Refused(f"duplicate key {k.value!r} (first at line {line})", k.start_mark,
                                       _path_to(root, k))
                    seen[k.value] = k
                for child in (k, v):
                    n, h = walk(child, depth + 1)
                    total += n
                    height = max(height, h)
        elif isinstance(node, yaml.SequenceNode):
            for child in node.value:
                n, h = walk(child, depth + 1)
                total += n
                height = max(height, h)
        active.discard(key)
        if total > limits.max_document_nodes:
            raise _Refused(
                f"document expands to more than {limits.max_document_nodes} nodes (alias expansion bomb?)",
                node.start_mark,
            )
        sizes[key] = (total, height + 1)
        return total, height + 1

    try:
        walk(root, 0)
    except _Refused as refused:
        return refused.message, refused.mark, refused.path
    return None


def _path_to(root: yaml.Node, target: yaml.Node) -> str:
    """The field path of a mapping key (duplicates are found before any path is tracked)."""
    def search(node: yaml.Node, path: tuple[str | int, ...], depth: int) -> tuple[str | int, ...] | None:
        if depth > 64:
            return None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k is target:
                    return (*path, k.value)
                found = search(v, (*path, str(k.value)), depth + 1)
                if found is not None:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                found = search(child, (*path, i), depth + 1)
                if found is not None:
                    return found
        return None

    found = search(root, (), 0)
    return render_path(found) if found else ""


class _Refused(Exception):
    def __init__(self, message: str, mark: yaml.Mark, path: str = "") -> None:
        self.message = message
        self.mark = mark
        self.path = path
