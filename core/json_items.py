"""Finds the items of a JSON answer as its text arrives, each as the exact text the source wrote; and checks
that a chunk line is one JSON value. One scanner for both ends of the chunk contract (core/contract.py).

No item is turned into Python values: an ID is kept as written (`0.10000000000000000001`, `1e400`,
`"caf\\u00e9"`), and memory is bounded by the largest item, not by the answer, however many items it
holds. Items of up to `_SMALL` characters are measured and checked by the standard library's C scanner
on a window of that size; a bigger one by a token loop that holds nothing but its nesting. Only the
item's insignificant whitespace is dropped (a chunk holds one item a line). Also found on the way:
the values at the `captures` paths (a next cursor or link), as text, each at most `_MAX_CAPTURE` long.

Paths are those of SOURCE_ITEMS_PATH: dotted keys, `[]` for every element of an array; empty, the body
is the array:

    ""            [ "id1", "id2" ]
    "data"        { "data": [ … ] }
    "data[].id"   { "data": [ {"id": "id1"}, {"id": "id2"} ] }   → "id1", "id2"

The items path ends in every element of the array it names, unless it says `[]` itself somewhere; a
next link's or cursor's path is keys only. No library does this: ijson yields values, not their text,
and `json.JSONDecoder.raw_decode` builds every value of an item.
`JsonItems` is fed text in order and answers the items each feed completed; `end()` says whether the
document was whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

_SPACE = re.compile(r"[ \t\n\r]*")
_STRING = r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*"'
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
# An item that is a string, a number, a literal or empty, and the comma or bracket after it: the common case.
_SIMPLE_ITEM = re.compile(rf"[ \t\n\r]*({_STRING}|{_NUMBER}|true|false|null|\{{\}}|\[\])[ \t\n\r]*([,\]])")
_DELIMITER = re.compile(r"[ \t\n\r]*([,\]])")
_KEY = re.compile(rf"({_STRING})[ \t\n\r]*:")
_TOKEN = re.compile(rf"[ \t\n\r]*(?:({_STRING})|({_NUMBER}|true|false|null)|([\[\]{{}},:]))")
# The start of a string that goes on past the text at hand, every escape in it whole so far.
_OPEN_STRING = r'"[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*(?:\\u?[0-9a-fA-F]{0,3})?'
_PARTIAL_TOKEN = r"(?:t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?|-?[0-9]*(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?)"
# What may stand at the end of the text at hand and go on in the next read: a string or key not yet
# closed (every escape in it whole so far), a key without its colon yet, the start of a number or literal.
_MAY_GO_ON = re.compile(rf"[ \t\n\r]*(?:{_OPEN_STRING}|{_STRING}[ \t\n\r]*|{_PARTIAL_TOKEN})\Z")
_CUT_SCALAR = re.compile(rf"{_PARTIAL_TOKEN}\Z")
_SURROGATE_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u([dD][89a-fA-F][0-9a-fA-F]{2})")
_STRINGS_AND_NOT_SPACE = re.compile(rf'{_STRING}|[^ \t\n\r"]+')  # an item's text, but its insignificant spaces
_SHORT = 256  # characters: the window in which the items loop tries an array or object item first
_SMALL = 4096  # characters: an item this short is checked by the C scanner, its values built and dropped
_MAX_CAPTURE = 65_536  # characters a captured value (a cursor, a next link) may take


Step = tuple[str, str]  # ("each", ""): every element of an array; ("key", name): an object's key
EACH: Step = ("each", "")


def route_of(path: str, *, items: bool = True) -> tuple[Step, ...]:
    """The steps from the top of a response to the items (`items`), or to a next link or cursor."""
    segments = path.split(".") if path else []
    if not items:
        return tuple(("key", segment) for segment in segments)
    steps: list[Step] = []
    for segment in segments:
        steps.append(("key", segment.removesuffix("[]")))
        if segment.endswith("[]"):
            steps.append(EACH)
    if EACH not in steps:
        steps.append(EACH)
    return tuple(steps)


def json_value_text(text: str) -> str:
    """`text` as one JSON value's compact text (it must be just that, a lone surrogate in no string);
    JsonItemsError otherwise. Memory is bounded by the text, whatever it holds."""
    if len(text) <= _SMALL and text[:1] not in ("", " ", "\t", "\n", "\r"):
        try:
            end = int(_scan(text, 0)[1])
        except (StopIteration, ValueError, RecursionError) as exc:
            raise JsonItemsError(_reason(exc)) from None
        if end == len(text) and not ("\\u" in text and _lone_surrogate(text)):
            return text if text[0] not in "[{" or not _has_space(text) else _compact(text)
    scanner = JsonItems("", {}, len(text))
    found = scanner.feed("[") + scanner.feed(text) + scanner.feed("]") + scanner.end()
    if len(found) != 1:
        raise JsonItemsError(f"{len(found)} JSON values, where one was expected")
    return found[0]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_scan = json.JSONDecoder(parse_constant=_refuse_constant).scan_once  # type: ignore[attr-defined]


class JsonItemsError(Exception):
    """The answer is not what the paths say, not JSON, or holds an item no queue message can carry.

    `cut_short`: it ended before its document did (a body cut short: worth another try)."""

    def __init__(self, reason: str, *, cut_short: bool = False) -> None:
        super().__init__(reason)
        self.cut_short = cut_short


@dataclass(frozen=True)
class _Route:
    """What is still to walk from a node: to the items (`name` None) or to a captured value."""

    steps: tuple[Step, ...]
    name: str | None

    def after(self, step: Step) -> _Route | None:
        return _Route(self.steps[1:], self.name) if self.steps and self.steps[0] == step else None


class JsonItems:
    """`items_path`: where the items are; `captures`: a name for each path whose value is wanted;
    `max_item_chars`: the longest item held, which reasons call `limit`."""

    def __init__(
        self, items_path: str, captures: Mapping[str, str], max_item_chars: int, limit: str | None = None
    ) -> None:
        self._items_path = items_path
        self._max_item_chars = max_item_chars
        self._limit = limit or f"{max_item_chars:,} characters"  # what the bound is called in a reason
        self._text = ""
        self._pos = 0  # where the walk stands in `_text`: everything before it is done with
        self._pending: list[str] = []
        self._pending_chars = 0
        self._wanted = 0  # characters past `_pos` the walk waits for before it goes on
        self._ended = False
        self._found: list[str] = []
        self.error: JsonItemsError | None = None  # once found: raised when no item before it is left to give
        self.items = 0  # found so far, in this answer
        self.captured: dict[str, str] = {}  # the JSON text of the value at each capture path found
        routes = [_Route(route_of(items_path), None)]
        routes += [_Route(route_of(path, items=False), name) for name, path in captures.items() if path]
        self._walk = self._document(routes)
        self._step()

    def feed(self, text: str) -> list[str]:
        """The items this text completes, in order (each as its chunk line's text). JsonItemsError once the
        answer is found wrong, after the items before the wrong part have been given."""
        self._pending.append(text)
        self._pending_chars += len(text)
        if len(self._text) - self._pos + self._pending_chars >= self._wanted:
            self._step()
        return self._given()

    def end(self) -> list[str]:
        """The items the end of the answer completes; JsonItemsError if its document is not whole."""
        self._ended = True
        self._step()
        return self._given()

    def _given(self) -> list[str]:
        found, self._found = self._found, []
        if self.error is not None and not found:
            raise self.error
        return found

    def _step(self) -> None:
        if self.error is not None:
            return
        if self._pending:
            self._text = self._text[self._pos :] + "".join(self._pending)
            self._pos, self._pending, self._pending_chars = 0, [], 0
        try:
            next(self._walk)
        except StopIteration:  # the walk is over: only what follows the document is left
            pass
        except JsonItemsError as exc:  # said once the items before it are given
            self.error = exc

    def _more(self, beyond: int = 1) -> Generator[None]:
        """Waits until at least `beyond` characters stand past `_pos` (or the answer ended: then the
        document is cut short, as the caller needs more)."""
        if self._ended:
            raise JsonItemsError(f"the answer ended after {self.items} items, before its JSON did", cut_short=True)
        self._wanted = beyond
        yield
        self._wanted = 0

    def _peek(self) -> Generator[None, None, str]:
        """The next character past whitespace; `_pos` moves to it."""
        char = yield from self._peek_or_end()
        if char is None:
            yield from self._more()  # raises: the answer ended mid-document
        return char or ""

    def _peek_or_end(self) -> Generator[None, None, str | None]:
        """`_peek`, or None at the end of the answer."""
        while True:
            self._pos = _SPACE.match(self._text, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._text):
                return self._text[self._pos]
            if self._ended:
                return None
            yield from self._more()

    def _expect(self, allowed: str, where: str) -> Generator[None, None, str]:
        char = yield from self._peek()
        if char not in allowed:
            shown = " or ".join(repr(c) for c in allowed)
            raise JsonItemsError(f"invalid JSON {where}: expected {shown}, got {self._excerpt()}")
        self._pos += 1
        return char

    def _document(self, routes: list[_Route]) -> Generator[None]:
        char = yield from self._peek_or_end()
        if char is None:
            raise JsonItemsError("the answer is empty: no JSON in it", cut_short=True)
        if not self._items_path and char != "[":
            raise JsonItemsError(f"must answer a JSON array, got {self._excerpt()}")
        if self._items_path and char != "{":
            raise JsonItemsError(f"must answer a JSON object (SOURCE_ITEMS_PATH={self._items_path!r}), "
                                 f"got {self._excerpt()}")  # fmt: skip
        yield from self._value(routes)
        if (yield from self._peek_or_end()) is not None:
            raise JsonItemsError(f"holds more after its JSON document: {self._excerpt()}")

    def _value(self, routes: list[_Route]) -> Generator[None]:
        """Walks the value at `_pos`: an item, a captured value, a container routes go on into, or a value
        to step over."""
        char = yield from self._peek()
        done = [route for route in routes if not route.steps]
        if done:
            end = yield from self._value_end()
            text = self._text[self._pos : end]
            for route in done:
                if route.name is None:
                    self._take(text)
                else:
                    self._capture(route.name, text)
            self._pos = end
            return
        if routes and char == "{":
            yield from self._object(routes)
        elif routes and char == "[":
            yield from self._array(routes)
        else:
            self._mismatch(routes, char)
            self._pos = yield from self._value_end()

    def _object(self, routes: list[_Route]) -> Generator[None]:
        self._mismatch([route for route in routes if route.steps[0] == EACH], "{")
        self._pos += 1
        missing = {route.steps[0][1] for route in routes if route.name is None and route.steps[0][0] == "key"}
        if (yield from self._peek()) == "}":
            self._pos += 1
        else:
            while True:
                yield from self._peek()
                key = yield from self._key()
                missing.discard(key)  # only the keys the items path wants are kept: an object may have millions
                inner = [route for route in (r.after(("key", key)) for r in routes) if route is not None]
                yield from self._value(inner)
                if (yield from self._expect(",}", "in an object")) == "}":
                    break
        if missing:
            raise JsonItemsError(
                f"the response has no {min(missing)!r} where SOURCE_ITEMS_PATH={self._items_path!r} expects it"
            )

    def _key(self) -> Generator[None, None, str]:
        while (match := _KEY.match(self._text, self._pos)) is None:
            if not _MAY_GO_ON.match(self._text, self._pos):
                raise JsonItemsError(f"invalid JSON in an object: expected a key, got {self._excerpt()}")
            if len(self._text) - self._pos > _MAX_CAPTURE:
                raise JsonItemsError(f"the response has a key over {_MAX_CAPTURE:,} characters long")
            yield from self._more(2 * (len(self._text) - self._pos) + 1)
        self._pos = match.end()
        return str(json.loads(match.group(1)))

    def _array(self, routes: list[_Route]) -> Generator[None]:
        self._pos += 1
        inner = [route for route in (r.after(EACH) for r in routes) if route is not None]
        self._mismatch([route for route in routes if route.steps[0] != EACH], "[")
        if inner == [_Route((), None)]:
            yield from self._items()
            return
        if (yield from self._peek()) == "]":
            self._pos += 1
            return
        while True:
            yield from self._value(inner)
            if (yield from self._expect(",]", "in an array")) == "]":
                return

    def _items(self) -> Generator[None]:
        """The items array, after its `[`. The items at hand are taken in a tight loop (`_items_at_hand`);
        the walk waits, or checks what the loop could not take, only between them."""
        after_comma = False
        while True:
            at_hand = self._items_at_hand()
            if at_hand is not None:
                if not at_hand:
                    return
                after_comma = True
            char = yield from self._peek()
            if char == "]" and not after_comma:
                self._pos += 1
                return
            if char in ",]}:":
                raise JsonItemsError(f"invalid JSON in the items array: expected an item, got {self._excerpt()}")
            end = yield from self._value_end()
            self._take(self._text[self._pos : end])
            self._pos = end
            after_comma = (yield from self._expect(",]", "in the items array")) == ","
            if not after_comma:
                return

    def _items_at_hand(self) -> bool | None:
        """Takes the whole items, each followed by its comma or `]`, that stand in the text from `_pos`:
        a string, number or literal by one regular expression, a short array or object by the C scanner.
        Returns None when it took none, True after a comma, False after the closing `]`."""
        text, at, took = self._text, self._pos, None
        while True:
            if (match := _SIMPLE_ITEM.match(text, at)) is not None:
                self._take(match.group(1))
            else:
                start = _SPACE.match(text, at).end()  # type: ignore[union-attr]
                if start == len(text) or text[start] not in "[{":
                    break
                try:
                    end = start + int(_scan(text[start : start + _SHORT], 0)[1])
                except (StopIteration, ValueError, RecursionError):
                    break
                if (match := _DELIMITER.match(text, end)) is None:
                    break
                self._take(text[start:end])
            at, took = match.end(), match.group(match.lastindex or 0) == ","
            if not took:
                break
        self._pos = at
        return took

    def _value_end(self) -> Generator[None, None, int]:
        """Where the JSON value at `_pos` ends, once it is all there and checked."""
        while True:
            window = self._text[self._pos : self._pos + _SMALL]
            try:
                end = int(_scan(window, 0)[1])
            except (StopIteration, ValueError, RecursionError) as exc:
                if len(window) == _SMALL:
                    return (yield from self._big_value_end())
                cut = _may_be_cut(exc, window)
                if self._ended or not cut:
                    raise JsonItemsError(f"invalid JSON: {_reason(exc)} in {self._excerpt()}", cut_short=cut) from None
                yield from self._more(len(window) + 1)
                continue
            if window[end - 1] not in ']}"':  # a number or literal: it may go on past the window or the read
                if len(window) == _SMALL and end > _SMALL - 32:  # `1…1` cut before its `e5` or `.5`
                    return (yield from self._big_value_end())
                if _CUT_SCALAR.match(self._text, self._pos) and self._pos + end < len(self._text):
                    yield from self._more(len(window) + 1)  # raises if the answer ended: `1.` is cut short
                    continue
                if not self._ended and self._pos + end == len(self._text):
                    yield from self._more(len(window) + 1)
                    continue
            return self._pos + end

    def _big_value_end(self) -> Generator[None, None, int]:
        """`_value_end` for a value longer than `_SMALL`: token by token, holding only its nesting."""
        stack: list[str] = []
        expect = "value"
        at = self._pos
        while True:
            match = _TOKEN.match(self._text, at)
            at_end = match is None or (match.end() == len(self._text) and match.group(2) is not None)
            cut = at_end and (match is not None or _MAY_GO_ON.match(self._text, at) is not None)
            if cut and not self._ended:
                if len(self._text) - self._pos > self._max_item_chars:
                    raise JsonItemsError(f"an item goes on past the {self._limit} a chunk holds")
                offset = at - self._pos
                yield from self._more(2 * (len(self._text) - self._pos))
                at = self._pos + offset
                continue
            if match is None:
                raise JsonItemsError(f"invalid JSON in an item: {self._excerpt(at)}", cut_short=cut)
            at = match.end()
            string, scalar, mark = match.groups()
            if (string or scalar) and expect in ("value", "value-or-end"):
                expect = "comma-or-end"
            elif string and expect in ("key", "key-or-end"):
                expect = "colon"
            elif mark in "[{" and expect in ("value", "value-or-end"):
                stack.append(mark)
                expect = "value-or-end" if mark == "[" else "key-or-end"
            elif (
                mark in "]}"
                and stack
                and stack[-1] == "[{"["]}".index(mark)]
                and (expect == "comma-or-end" or expect == ("value-or-end" if mark == "]" else "key-or-end"))
            ):
                stack.pop()
                expect = "comma-or-end"
            elif mark == "," and expect == "comma-or-end" and stack:
                expect = "value" if stack[-1] == "[" else "key"
            elif mark == ":" and expect == "colon":
                expect = "value"
            else:
                raise JsonItemsError(f"invalid JSON in an item: {self._excerpt(match.start())}")
            if not stack and expect == "comma-or-end":
                return at

    def _take(self, text: str) -> None:
        self.items += 1
        if "\\u" in text and (lone := _lone_surrogate(text)):
            raise JsonItemsError(
                f"item {self.items} ({text[:80]!r}) holds the lone surrogate \\u{lone}, which UTF-8, and so a queue "
                "message, cannot carry; the source must send a valid Unicode string"
            )
        if len(text) > self._max_item_chars:
            raise JsonItemsError(
                f"item {self.items} is {len(text):,} characters long: it does not fit in a chunk of {self._limit}"
            )
        if text[0] in "[{" and _has_space(text):
            text = _compact(text)
        self._found.append(text)

    def _capture(self, name: str, text: str) -> None:
        if len(text) > _MAX_CAPTURE:
            raise JsonItemsError(f"the {name} is {len(text):,} characters long, over {_MAX_CAPTURE:,}")
        self.captured[name] = text

    def _mismatch(self, routes: list[_Route], char: str | None) -> None:
        """The items route cannot go on into a value of this kind: the answer is of another shape."""
        for route in routes:
            if route.name is None:
                kind = kind_of(char or "")
                if route.steps[0] == EACH:
                    where = f"at SOURCE_ITEMS_PATH={self._items_path!r}" if self._items_path else "at the top level"
                    raise JsonItemsError(f"the response must hold a JSON array {where}, got {kind}")
                raise JsonItemsError(
                    f"the response has no {route.steps[0][1]!r} where SOURCE_ITEMS_PATH={self._items_path!r} "
                    f"expects it (found {kind})"
                )

    def _excerpt(self, at: int | None = None) -> str:
        start = self._pos if at is None else at
        return repr(self._text[start : start + 60].encode("utf-8", "backslashreplace"))


def kind_of(text: str) -> str:
    """What kind of JSON value `text` (or its first character) is, as a reason names it."""
    kinds = {"{": "an object", "[": "an array", '"': "a string", "t": "a boolean", "f": "a boolean", "n": "null"}
    return kinds.get(text[:1], "a number")


def _compact(text: str) -> str:
    return "".join(_STRINGS_AND_NOT_SPACE.findall(text))


def _has_space(text: str) -> bool:
    return " " in text or "\n" in text or "\t" in text or "\r" in text


def _may_be_cut(exc: BaseException, window: str) -> bool:
    """Whether the C scanner's complaint may be about a value the end of `window` cut, not one that is
    wrong: a string left open, or from where it complains to the end, the start of a token."""
    if isinstance(exc, json.JSONDecodeError):
        if exc.msg.startswith("Unterminated string"):
            return True
        if exc.msg.startswith("Invalid \\uXXXX"):
            return len(window) - exc.pos <= 5
        return _CUT_SCALAR.match(window, exc.pos) is not None
    if isinstance(exc, StopIteration):  # no value starts at this index
        return _CUT_SCALAR.match(window, int(exc.value)) is not None
    return False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, StopIteration):
        return "expected a value"
    return str(exc)


def _lone_surrogate(text: str) -> str | None:
    """The first `\\uD800`-`\\uDFFF` escape in `text` that is not half of a high-low pair, as 4 hex digits."""
    pending_high = None
    last_end = -1
    for match in _SURROGATE_ESCAPE.finditer(text):
        digits = match.group(1)
        high = digits[1].lower() in "89ab"
        escape_start = match.end() - 6
        if pending_high is not None:
            if not high and escape_start == last_end:
                pending_high = None
                last_end = match.end()
                continue
            return pending_high
        if not high:
            return digits
        pending_high, last_end = digits, match.end()
    return pending_high
