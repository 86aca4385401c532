"""An answer's items are found as the exact text the source wrote, wherever the network cuts it, in
memory bounded by the largest item; anything that is not the JSON the paths describe is refused."""

from __future__ import annotations

import contextlib
import json
import tracemalloc

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.json_items import JsonItems, JsonItemsError, json_value_text

MAX_ITEM = 1 << 23

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)
layouts = st.fixed_dictionaries(
    {"ensure_ascii": st.booleans(), "indent": st.none() | st.integers(0, 3), "tight": st.booleans()}
)


def dumps(value: object, layout: dict) -> str:
    separators = (",", ":") if layout["tight"] else (", ", ": ")
    return json.dumps(value, ensure_ascii=layout["ensure_ascii"], indent=layout["indent"], separators=separators)


def walk(text: str, path: str = "", captures: dict[str, str] | None = None, cuts: list[int] = ()) -> JsonItems:
    """Feeds `text` cut at `cuts`; the scanner, its items in `found`."""
    scanner = JsonItems(path, captures or {}, MAX_ITEM)
    found, start = [], 0
    for cut in sorted({min(max(cut, 0), len(text)) for cut in cuts}):
        found += scanner.feed(text[start:cut])
        start = cut
    found += scanner.feed(text[start:])
    found += scanner.end()
    if scanner.error is not None:  # the items before it were given: the fault is said now
        raise scanner.error
    scanner.found = found
    return scanner


def compact(value: object, ensure_ascii: bool) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, separators=(",", ":"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(json_values, max_size=8), layout=layouts, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_each_item_is_found_as_its_exact_compact_text_however_the_answer_is_cut(items, layout, cuts):
    scanner = walk(dumps(items, layout), cuts=cuts)

    assert scanner.found == [compact(item, layout["ensure_ascii"]) for item in items]
    assert not any("\n" in text or "\r" in text for text in scanner.found)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(json_values, max_size=6),
    cursor=st.none() | st.text(max_size=20) | st.integers(),
    noise=st.dictionaries(st.sampled_from(["meta", "total", "z"]), json_values, max_size=3),
    layout=layouts,
    cuts=st.lists(st.integers(0, 2000), max_size=8),
    cursor_first=st.booleans(),
)
def test_items_and_the_cursor_are_found_where_their_paths_say(items, cursor, noise, layout, cuts, cursor_first):
    fields = {"paging": {"next": cursor}, **noise, "data": [{"id": item, "other": 1} for item in items]}
    if cursor_first is False:
        fields = {"data": fields.pop("data"), **fields}
    scanner = walk(dumps(fields, layout), "data[].id", {"cursor": "paging.next"}, cuts)

    assert scanner.found == [compact(item, layout["ensure_ascii"]) for item in items]
    assert {name: json.loads(text) for name, text in scanner.captured.items()} == {"cursor": cursor}


@pytest.mark.parametrize(
    ("text", "path", "error"),
    [
        ('{"data": "x"}', "data", "must hold a JSON array at SOURCE_ITEMS_PATH='data', got a string"),
        ('{"other": []}', "data", "the response has no 'data' where SOURCE_ITEMS_PATH='data' expects it"),
        ('{"items": []}', "", "must answer a JSON array, got b'{"),
        ('["a"]', "data", "must answer a JSON object (SOURCE_ITEMS_PATH='data')"),
        ('{"data": [{"id": 1}, {"no": 2}]}', "data[].id", "has no 'id' where SOURCE_ITEMS_PATH='data[].id'"),
        ('{"data": [1, "x"]}', "data[].id", "has no 'id' where SOURCE_ITEMS_PATH='data[].id' expects it"),
        ("<html><body>busy</body></html>", "", "must answer a JSON array, got b'<html>"),
    ],
)
def test_an_answer_of_another_shape_is_refused_with_the_setting_to_check(text, path, error):
    with pytest.raises(JsonItemsError, match=error.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        walk(text, path)


@pytest.mark.parametrize(
    "text",
    ["[1,]", "[,1]", '["a" "b"]', "[1] x", '["\\x"]', "[NaN]", "[-Infinity]", "[01]", "[tru]", "[1.]", '["\t"]',
     '{"data": [1], }', "[{]", "[1 2]"],
)  # fmt: skip
def test_text_that_is_not_json_is_refused(text):
    with pytest.raises(JsonItemsError) as refused:
        walk(text, cuts=[1, 2, 3, 5, 8])
    assert not refused.value.cut_short


@settings(max_examples=200, deadline=None)
@given(items=st.lists(json_values, min_size=1, max_size=6), layout=layouts, data=st.data())
def test_an_answer_cut_short_is_told_apart_so_that_it_is_read_again(items, layout, data):
    text = dumps(items, layout)
    cut = data.draw(st.integers(0, len(text) - 1))
    with pytest.raises(JsonItemsError) as refused:
        walk(text[:cut], cuts=data.draw(st.lists(st.integers(0, cut), max_size=5)))
    assert refused.value.cut_short


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet='[]{},:"\\ 0123456789.eE+-truefalsn\nu"', max_size=30), cuts=st.lists(st.integers(0, 30)))
def test_whatever_the_text_the_scanner_accepts_only_json_and_raises_nothing_else(text, cuts):
    try:
        expected = json.loads(text, parse_constant=lambda name: 1 / 0, parse_int=str)
    except (ValueError, ZeroDivisionError, RecursionError):
        expected = None
    try:
        found = walk(text, cuts=cuts).found
    except JsonItemsError:
        found = None
    if not isinstance(expected, list) or "\\ud" in text.lower():
        assert found is None or isinstance(expected, list)
    else:
        assert found is not None and [json.loads(item, parse_int=str) for item in found] == expected


@pytest.mark.parametrize(
    ("text", "lone"),
    [
        ('["x\\udc00"]', "dc00"),
        ('["\\ud800"]', "d800"),
        ('["\\ud800 \\udc00"]', "d800"),
        ('["\\udc00\\ud800"]', "dc00"),
        ('[{"id": ["\\uDBFF"]}]', "DBFF"),
        ('["' + "y" * 5000 + '\\ud800"]', "d800"),
    ],
)
def test_a_lone_surrogate_is_refused_by_name(text, lone):
    with pytest.raises(JsonItemsError, match=rf"item 1 .* holds the lone surrogate \\u{lone}"):
        walk(text, cuts=[7, 100, 4097])


def test_the_items_before_a_refused_one_are_given_before_the_refusal():
    scanner = JsonItems("", {}, MAX_ITEM)
    assert scanner.feed('["a", 1, "x\\udc00", "b"]') == ['"a"', "1"]
    with pytest.raises(JsonItemsError, match="item 3"):
        scanner.end()


def test_surrogate_pairs_and_escaped_backslashes_are_ids_like_any_other():
    scanner = walk('["\\ud83d\\ude00", "\\\\ud800", "\\\\\\ud83d\\ude00"]')
    assert [json.loads(text) for text in scanner.found] == ["\U0001f600", "\\ud800", "\\\U0001f600"]


def test_numbers_and_escapes_are_kept_as_the_source_wrote_them():
    scanner = walk('[0.1, 0.10000000000000000001, 1e400, -0, 1E+2, 12345678901234567890123, "caf\\u00e9"]')
    assert scanner.found == [
        "0.1", "0.10000000000000000001", "1e400", "-0", "1E+2", "12345678901234567890123", '"caf\\u00e9"'
    ]  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(
    item=st.sampled_from(["string", "nested", "objects", "number"]),
    size=st.integers(5_000, 60_000),
    cuts=st.lists(st.integers(0, 70_000), max_size=20),
)
def test_items_longer_than_the_scanner_window_are_checked_token_by_token(item, size, cuts):
    value = {
        "string": "é" * size,
        "nested": [[i, {"k": [str(i)]}] for i in range(size // 20)],
        "objects": {"a": [{} for _ in range(size // 3)]},
        "number": int("7" * (size // 20)),
    }[item]
    text = json.dumps(["before", value, "after"], ensure_ascii=False)
    if item == "number":
        text = text.replace("7" * (size // 20), "7" * size)  # a number too long for int() in one piece
    scanner = walk(text, cuts=cuts)

    assert len(scanner.found) == 3 and scanner.found[0] == '"before"' and scanner.found[2] == '"after"'
    assert scanner.found[1] == text[len('["before", ') : -len(', "after"]')].replace(", ", ",").replace(": ", ":")


def test_an_item_past_the_limit_is_refused_before_it_is_held_whole():
    scanner = JsonItems("", {}, 10_000)
    with pytest.raises(JsonItemsError, match=r"(goes on past|does not fit).*10,000 characters"):
        scanner.feed("[" + json.dumps(["x" * 100] * 1000))


@pytest.mark.parametrize(
    "answer",
    [
        "[" + ",".join(["{}"] * 300_000) + "]",  # 900 KB of empty objects: 300,000 items
        "[" + "[" + ",".join(["[]"] * 300_000) + "]" + "]",  # one item of 900 KB holding 300,000 arrays
        '[{"a": [' + ",".join(["{}"] * 300_000) + "]}]",  # one object item holding 300,000 objects
    ],
    ids=["many-empty-objects", "one-item-of-empty-arrays", "one-item-of-empty-objects"],
)
def test_memory_is_bounded_by_the_largest_item_not_by_what_it_holds(answer):
    scanner = JsonItems("", {}, MAX_ITEM)
    tracemalloc.start()
    try:
        for start in range(0, len(answer), 65_536):
            scanner.feed(answer[start : start + 65_536])
        scanner.end()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5 * len(answer) + 1_000_000  # the text (up to a few copies of the item), never its values


def test_a_key_or_a_cursor_without_end_is_refused():
    with pytest.raises(JsonItemsError, match="key over"):
        JsonItems("data", {}, MAX_ITEM).feed('{"' + "k" * 70_000)
    scanner = JsonItems("data", {"cursor": "next"}, MAX_ITEM)
    with pytest.raises(JsonItemsError, match="the cursor is 70,002 characters long"):
        scanner.feed('{"data": [], "next": "' + "c" * 70_000 + '"}')
        scanner.end()


def test_an_empty_answer_is_cut_short():
    with pytest.raises(JsonItemsError) as refused:
        walk("  ")
    assert refused.value.cut_short


@given(st.text(max_size=3))
def test_short_texts_never_raise_anything_but_the_scanners_error(text):
    assume(text)
    with contextlib.suppress(JsonItemsError):
        walk(text, "data", {"cursor": "next"})


@settings(max_examples=60, deadline=None)
@given(
    digits=st.integers(4000, 4200),
    tail=st.sampled_from(["", ".5", "e5", "E-7", ".25e+3"]),
    lead=st.integers(0, 120),
    cuts=st.lists(st.integers(0, 4400), max_size=4),
)
def test_a_number_cut_by_the_scanners_window_is_kept_whole(digits, tail, lead, cuts):
    """A number reaching past the C scanner's window is measured token by token, not cut short there."""
    number = "1" * digits + tail
    scanner = walk(f'["{"p" * lead}", {number}, "after"]', cuts=cuts)

    assert scanner.found[1] == number
    assert json_value_text(number) == number  # and the chunk line is taken back whole
