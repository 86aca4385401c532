"""SOURCE_ITEMS_PATH and the next-link/cursor paths: where a response keeps its items."""

from __future__ import annotations

import pytest

from chunking.items_path import ijson_prefix, items_at, value_at
from core.errors import SourceError


@pytest.mark.parametrize(
    ("document", "path", "items"),
    [
        (["a", "b"], "", ["a", "b"]),
        ({"data": ["a", "b"]}, "data", ["a", "b"]),
        ({"data": [{"id": "a"}, {"id": "b"}]}, "data[].id", ["a", "b"]),
        ({"page": {"items": [1, 2]}}, "page.items", [1, 2]),
        ({"data": []}, "data", []),
    ],
)
def test_items_are_found_where_the_path_says(document, path, items):
    assert items_at(document, path) == items


@pytest.mark.parametrize(
    ("document", "path", "error"),
    [
        ({"data": "x"}, "data", "must hold a JSON array at SOURCE_ITEMS_PATH='data', got str"),
        ({"other": []}, "data", "the response has no 'data' where SOURCE_ITEMS_PATH='data' expects it"),
        ({"items": []}, "", "must hold a JSON array at the top level, got dict"),
    ],
)
def test_a_response_of_another_shape_is_refused_with_the_setting_to_check(document, path, error):
    with pytest.raises(SourceError, match=error):
        items_at(document, path)


@pytest.mark.parametrize(
    ("path", "prefix"), [("", "item"), ("data", "data.item"), ("data[].id", "data.item.id"), ("a.b", "a.b.item")]
)
def test_the_streaming_prefix_matches_the_path(path, prefix):
    assert ijson_prefix(path) == prefix


def test_a_missing_next_link_or_cursor_is_none():
    assert value_at({"links": {"next": "/p2"}}, "links.next") == "/p2"
    assert value_at({"links": None}, "links.next") is None
    assert value_at(["not", "an", "object"], "next_cursor") is None
