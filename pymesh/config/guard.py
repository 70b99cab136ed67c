"""Guards on YAML node trees: size after alias expansion, depth, duplicate keys.

PyYAML composes an alias bomb in microseconds and only explodes when something walks
the expanded structure, so ``measure`` memoises shared nodes and stops at the bound,
before anything large is built. Text with no anchor (``&``) cannot hold an alias, so
the reader skips the walk for it and the decoder checks duplicate keys as it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

__all__ = ["Limits", "Refused", "measure", "render_path"]

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Bounds on what one source may ask of the loader."""

    max_file_bytes: int = 16 * 1024 * 1024
    max_document_nodes: int = 200_000  # after alias expansion
    max_depth: int = 64  # Istio's deepest schema path is about 12 levels


def render_path(path: Path) -> str:
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            out.append(f"[{part!r}]")
        else:
            out.append(f".{part}" if out else part)
    return "".join(out)


def measure(root: yaml.Node, limits: Limits, line_offset: int = 0) -> tuple[str, yaml.Mark, str] | None:
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
                raise Refused(f"nesting deeper than {limits.max_depth} levels", node.start_mark)
            return known
        if key in active:
            raise Refused("recursive alias: a node contains itself", node.start_mark)
        if depth > limits.max_depth:
            raise Refused(f"nesting deeper than {limits.max_depth} levels", node.start_mark)
        active.add(key)
        total, height = 1, 0
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    if k.value in seen and k.tag != "tag:yaml.org,2002:merge":
                        line = seen[k.value].start_mark.line + 1 + line_offset
                        raise Refused(f"duplicate key {k.value!r} (first at line {line})", k.start_mark,
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
            raise Refused(
                f"document expands to more than {limits.max_document_nodes} nodes (alias expansion bomb?)",
                node.start_mark,
            )
        sizes[key] = (total, height + 1)
        return total, height + 1

    try:
        walk(root, 0)
    except Refused as refused:
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


class Refused(Exception):
    def __init__(self, message: str, mark: yaml.Mark, path: str = "") -> None:
        self.message = message
        self.mark = mark
        self.path = path
