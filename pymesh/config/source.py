"""Reading config text into YAML node trees, safely.

Only the composer runs here: nodes keep the parser's marks (line and column) so every
later finding can point at its line, and nothing is constructed before the guards have
measured the tree. PyYAML composes an alias bomb in microseconds and only explodes when
something walks the expanded structure, so the walk that measures it memoises shared
nodes and stops at the bound, before anything large is built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from pymesh.config.guard import Limits, measure
from pymesh.errors import Issue

__all__ = ["Document", "Limits", "discover", "peek_identity", "read_file", "read_text"]

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader with its implicit-tag resolver memoised.

    The C parser calls the pure-Python resolver once per scalar; config repeats the same
    keys and values thousands of times, so a bounded cache saves most of the load time.
    """

    _tags: dict[tuple[str, tuple[bool, bool]], str] = {}

    # No path resolvers are registered, so the parser's per-node bookkeeping calls do nothing.
    def descend_resolver(self, current_node: object, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: str | None, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and not implicit[0]:
            return "tag:yaml.org,2002:str"  # quoted: never resolved implicitly
        if kind is yaml.ScalarNode and value is not None and len(value) < 64:
            key = (value, implicit)
            tag = self._tags.get(key)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._tags) < 50_000:
                    self._tags[key] = tag
            return tag
        if kind is yaml.MappingNode:
            return "tag:yaml.org,2002:map"
        if kind is yaml.SequenceNode:
            return "tag:yaml.org,2002:seq"
        resolved: str = super().resolve(kind, value, implicit)
        return resolved
_SUFFIXES = (".yaml", ".yml", ".json")
# An anchor starts a node: after a space, a line start, "[", "{" or ",". A false positive
# (an "&" that opens a word inside a quoted string) only costs the full measuring walk.
_ANCHOR = re.compile(r"(?:^|[\s\[{,])&[^\s,\]}]", re.MULTILINE)


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
    # No anchor, no alias: nothing to expand, and the decoder checks duplicate keys itself.
    may_alias = "&" in text and _ANCHOR.search(text) is not None
    try:
        for node in yaml.compose_all(text, Loader=_Loader):
            if node is not None and not _empty(node):
                problem = measure(node, limits, line_offset) if may_alias else None
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
