"""Where a response keeps its items (SOURCE_ITEMS_PATH) and its next link or cursor: dotted keys,
`[]` for every element of an array. Empty: the body is the array.

    ""            [ "id1", "id2" ]
    "data"        { "data": [ … ] }
    "data[].id"   { "data": [ {"id": "id1"}, {"id": "id2"} ] }   → "id1", "id2"
"""

from __future__ import annotations

from typing import Any

from core.errors import SourceError


def _segments(path: str) -> list[str]:
    return path.split(".") if path else []


def ijson_prefix(path: str) -> str:
    """The same path as an ijson prefix, for a response parsed as it streams."""
    segments = [segment.replace("[]", ".item") for segment in _segments(path)]
    if not any(segment.endswith("[]") for segment in _segments(path)):
        segments.append("item")
    return ".".join(segments)


def items_at(document: Any, path: str) -> list[Any]:
    nodes = [document]
    for segment in _segments(path):
        key = segment.removesuffix("[]")
        nodes = [_field(node, key, path) for node in nodes]
        if segment.endswith("[]"):
            nodes = [element for node in nodes for element in _array(node, path)]
    if not any(segment.endswith("[]") for segment in _segments(path)):
        nodes = [element for node in nodes for element in _array(node, path)]
    return nodes


def value_at(document: Any, path: str) -> Any:
    """The value at a dotted path, or None where any part of it is missing."""
    node = document
    for key in _segments(path):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _field(node: Any, key: str, path: str) -> Any:
    if not isinstance(node, dict) or key not in node:
        raise SourceError(f"the response has no {key!r} where SOURCE_ITEMS_PATH={path!r} expects it")
    return node[key]


def _array(node: Any, path: str) -> list[Any]:
    if not isinstance(node, list):
        where = f"at SOURCE_ITEMS_PATH={path!r}" if path else "at the top level"
        raise SourceError(f"the response must hold a JSON array {where}, got {type(node).__name__}")
    return node
