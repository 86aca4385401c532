"""The lean sender's response parser: every framing, in pieces of any size, and clear errors."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from putmessage.http_response import ProtocolError, Response, ResponseParser

CHUNKED_HEAD = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
AZURITE_201 = (
    b"HTTP/1.1 201 Created\r\nServer: Azurite-Queue/3.37.0\r\ncontent-type: application/xml\r\n"
    b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"19\r\n<QueueMessagesList>abc</Q\r\n3;ext=1\r\nueu\r\n0\r\nX-Trailer: t\r\n\r\n"
)

CASES = [
    (AZURITE_201, Response(201, b"<QueueMessagesList>abc</Queu", keep_alive=True)),
    (b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello", Response(201, b"hello", keep_alive=True)),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\nbusy", Response(503, b"busy", True)),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", Response(204, b"", keep_alive=True)),
    (b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", Response(201, b"ok", False)),
    (b"HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\nok", Response(201, b"ok", keep_alive=False)),
    (b"HTTP/1.0 201 Created\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", Response(201, b"ok", True)),
    (
        b"HTTP/1.1 100 Continue\r\nx-ms-request-id: interim\r\n\r\nHTTP/1.1 500 Error\r\nX-MS-Request-Id: 9f2c-01\r\n"
        b"Content-Length: 1\r\n\r\nx",
        Response(500, b"x", True, request_id="9f2c-01"),
    ),
]


def parse(pieces: list[bytes], *, closed: bool = False) -> list[Response]:
    """Every response in the pieces; bytes after a response stay buffered for the next feed."""
    parser = ResponseParser()
    responses = []
    for piece in pieces:
        response = parser.feed(piece)
        while response is not None:
            responses.append(response)
            response = parser.feed(b"")
    if closed and (response := parser.end_of_stream()) is not None:
        responses.append(response)
    return responses


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_each_framing_gives_the_status_body_and_keep_alive(raw, expected):
    assert parse([raw]) == [expected]


@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_pieces_of_any_size_give_the_same_response(case, cuts):
    raw, expected = case
    assert parse(split(raw, cuts)) == [expected]


@given(cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_responses_one_after_another_on_one_connection(cuts):
    raw = b"".join(raw for raw, _ in CASES[:4])
    assert parse(split(raw, cuts)) == [expected for _, expected in CASES[:4]]


def test_a_body_without_length_runs_to_the_end_of_the_connection():
    pieces = [b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n\r\npart one, ", b"part two"]
    assert parse(pieces) == []
    assert parse(pieces, closed=True) == [Response(500, b"part one, part two", keep_alive=False)]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"<html>not http</html>\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 201 Created\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 201 Created\r\n" + b"X-Long: " + b"a" * 70_000, "response head longer than"),
        (b"HTTP/2.0 201 Created\r\nContent-Length: 0\r\n\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "invalid Content-Length"),
        (
            b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "invalid Content-Length",
        ),
        (
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "invalid Content-Length",
        ),
        (CHUNKED_HEAD + b"0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (CHUNKED_HEAD + b"+5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (CHUNKED_HEAD + b"5_0\r\n" + b"h" * 0x50 + b"\r\n0\r\n\r\n", "invalid chunk size"),
    ],
)
def test_bytes_that_are_not_a_response_raise_a_protocol_error(raw, error):
    with pytest.raises(ProtocolError, match=error):
        ResponseParser().feed(raw)


@pytest.mark.parametrize(("line_start", "filler"), [(b"0", b"0"), (b"5;ext=", b"x")])
def test_a_chunk_size_line_that_never_ends_raises_instead_of_growing(line_start, filler):
    parser = ResponseParser()
    parser.feed(CHUNKED_HEAD + line_start)
    with pytest.raises(ProtocolError, match="longer than"):
        for _ in range(100):  # 100 KiB in all, past the 64 KiB a response's framing may take
            parser.feed(filler * 1024)


@pytest.mark.parametrize("piece", [1_000_000, 1024])
def test_thousands_of_trailer_lines_raise_a_protocol_error(piece):
    trailers = (b"X-Trailer: " + b"t" * 40 + b"\r\n") * 3000 + b"\r\n"
    raw = CHUNKED_HEAD + b"2\r\nok\r\n0\r\n" + trailers
    with pytest.raises(ProtocolError, match="longer than"):
        parse([raw[start : start + piece] for start in range(0, len(raw), piece)])


def test_bytes_after_a_complete_response_leave_the_parser_pending():
    ok = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    parser = ResponseParser()
    assert parser.feed(ok) == Response(201, b"ok", keep_alive=True)
    assert not parser.pending
    assert parser.feed(ok + b"HTTP/1.1 201") == Response(201, b"ok", keep_alive=True)
    assert parser.pending  # a connection in this state must be closed, never read again


def test_garbage_after_a_complete_response_still_gives_that_response_then_the_error():
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok<html>") == Response(201, b"ok", True)
    assert parser.pending
    with pytest.raises(ProtocolError):
        parser.feed(b"")


def test_a_body_past_a_mebibyte_is_a_protocol_error_not_memory():
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2000000\r\n\r\n"
    with pytest.raises(ProtocolError, match="response body longer than 1048576 bytes"):
        parse([head] + [b"x" * 65536] * 31)
