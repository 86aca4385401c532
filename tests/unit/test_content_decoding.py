"""Content-Encoding undone by the app, bounded: every coding stack decodes to the body however it is cut into reads,
no piece exceeds PIECE_BYTES, and a decompression bomb costs a few MB however far it is read."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chunking.content_decoding import PIECE_BYTES, ContentDecoder, CutShortError
from core.errors import SourceError


def _gzip(data: bytes) -> bytes:
    """gzip with no timestamp: the same bytes in every process (test ids are made of them)."""
    return gzip.compress(data, mtime=0)


WHERE = "The source API"
GIB = 1 << 30


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def two_members(data: bytes) -> bytes:
    return _gzip(data[: len(data) // 2]) + _gzip(data[len(data) // 2 :])


# the header's name for each way of encoding a body
ENCODERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "gzip in two members": ("gzip", two_members),
    "deflate": ("deflate", zlib.compress),
    "raw deflate": ("deflate", raw_deflate),
    "identity": ("identity", lambda data: data),
}


def encode(data: bytes, stack: Iterable[str]) -> tuple[bytes, str]:
    """`data` encoded by each of `stack` in turn, and the Content-Encoding that says so."""
    names = []
    for encoder in stack:
        name, apply = ENCODERS[encoder]
        data = apply(data)
        names.append(name)
    return data, ", ".join(names)


def decode(decoder: ContentDecoder, reads: Iterable[bytes]) -> list[bytes]:
    pieces = [piece for read in reads for piece in decoder.feed(read)]
    return pieces + list(decoder.finish())


def bytes_read(body: bytes, size: int) -> list[bytes]:
    return [body[start : start + size] for start in range(0, len(body), size)]


@pytest.mark.parametrize("content_encoding", [None, "", "identity", " Identity , "])
def test_an_unencoded_body_passes_through_in_pieces(content_encoding):
    body = random.Random(1).randbytes(3 * PIECE_BYTES + 100)

    pieces = decode(ContentDecoder(content_encoding, WHERE), [body, b"", b"tail"])

    assert [len(piece) for piece in pieces] == [PIECE_BYTES, PIECE_BYTES, PIECE_BYTES, 100, 4]
    assert b"".join(pieces) == body + b"tail"


@pytest.mark.parametrize("stack", [["gzip"], ["x-gzip"], ["deflate"], ["raw deflate"], ["gzip in two members"]])
def test_each_coding_decodes(stack):
    body = b'[{"id": 1}, {"id": 2}]' * 10_000
    encoded, content_encoding = encode(body, stack)

    pieces = decode(ContentDecoder(content_encoding, WHERE), bytes_read(encoded, 1000))

    assert b"".join(pieces) == body
    assert max(len(piece) for piece in pieces) == PIECE_BYTES


def test_stacked_codings_are_undone_last_first():
    body = b"0123456789" * 50_000
    encoded = zlib.compress(_gzip(body))  # gzip applied first, then deflate

    assert b"".join(decode(ContentDecoder("gzip, deflate", WHERE), [encoded])) == body
    with pytest.raises(SourceError, match="does not decode"):
        decode(ContentDecoder("deflate, gzip", WHERE), [encoded])


def test_coding_names_ignore_case_whitespace_and_empty_entries():
    body = b"abc" * 1000
    encoded = zlib.compress(_gzip(body))

    assert b"".join(decode(ContentDecoder(" GZip ,,\tIdentity, DEFLATE ,", WHERE), [encoded])) == body


def test_zeros_may_pad_a_gzip_member_as_gzip_decompress_allows():
    encoded = _gzip(b"one") + bytes(10) + _gzip(b"two") + bytes(3)

    assert b"".join(decode(ContentDecoder("gzip", WHERE), bytes_read(encoded, 7))) == gzip.decompress(encoded)


def test_each_read_yields_all_it_completes():
    """zlib can take all of a read's bytes and still hold output back (a match cut by max_length): it is drained
    then, not when the next read comes (the last read has none)."""
    encoded = zlib.compress(bytes(2 << 20))
    for size in range(30, 200):
        decoder, reference = ContentDecoder("deflate", WHERE), zlib.decompressobj()
        for read in bytes_read(encoded, size):
            assert sum(len(piece) for piece in decoder.feed(read)) == len(reference.decompress(read))


@pytest.mark.parametrize("content_encoding", ["br", "zstd", "compress", "gzip, br", "x-unknown"])
def test_codings_the_app_did_not_ask_for_are_refused(content_encoding):
    with pytest.raises(SourceError) as refused:
        ContentDecoder(content_encoding, WHERE)

    assert str(refused.value) == (
        f"The source API answered Content-Encoding: {content_encoding}, which the app did not ask for "
        "(it asks for gzip or deflate)"
    )


def test_more_than_three_codings_are_refused():
    ContentDecoder("gzip, deflate, gzip, identity", WHERE)
    with pytest.raises(SourceError, match=r"Content-Encoding: gzip, gzip, deflate, gzip, 4 codings deep"):
        ContentDecoder("gzip, gzip, deflate, gzip", WHERE)


@pytest.mark.parametrize(
    ("content_encoding", "encoded", "reason"),
    [
        ("gzip", b"not gzip at all", "incorrect header check"),
        ("gzip", _gzip(b"x" * 100)[:-8] + b"\0\0\0\0\0\0\0\0", "incorrect data check"),
        ("gzip", _gzip(b"body") + b"trailing junk", "incorrect header check"),
        ("deflate", zlib.compress(b"body") + b"!", "bytes follow the end of the deflate stream"),
        ("deflate", raw_deflate(b"body") + b"!", "bytes follow the end of the deflate stream"),
        ("deflate", b"\xff\xff\xff\xff", "invalid"),
    ],
)
def test_a_body_that_does_not_decode_is_a_source_error(content_encoding, encoded, reason):
    with pytest.raises(SourceError) as refused:
        decode(ContentDecoder(content_encoding, WHERE), [encoded])

    message = str(refused.value)
    assert message.startswith(
        f"The source API answered a body that does not decode (Content-Encoding: {content_encoding}): "
    )
    assert reason in message


@pytest.mark.parametrize(
    ("content_encoding", "encoded"),
    [
        ("gzip", _gzip(b"x" * 100_000)[:-1]),
        ("gzip", _gzip(b"one") + _gzip(b"two")[:5]),
        ("deflate", zlib.compress(b"x" * 100_000)[:-1]),
        ("deflate", raw_deflate(b"x" * 100_000)[:-1]),
        ("deflate", zlib.compress(b"")[:1]),
        ("gzip, gzip", _gzip(_gzip(b"x" * 100_000))[:-30]),
    ],
)
def test_a_body_cut_short_is_told_by_finish(content_encoding, encoded):
    decoder = ContentDecoder(content_encoding, WHERE)
    for _ in decoder.feed(encoded):
        pass

    with pytest.raises(CutShortError, match="cut short"):
        decoder.finish()


@pytest.mark.parametrize("content_encoding", ["gzip", "deflate", "gzip, deflate"])
def test_an_empty_body_is_empty_whatever_its_coding(content_encoding):
    assert decode(ContentDecoder(content_encoding, WHERE), [b"", b""]) == []


@pytest.fixture(scope="module")
def double_gzip_bomb() -> bytes:
    """gzip of gzip of 1 GiB of zeros, compressed as it streams so that the whole never exists (about 2.6 KB)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
    outer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    parts = [outer.compress(inner.compress(zeros)) for _ in range(GIB // len(zeros))]
    parts.append(outer.compress(inner.flush()))
    parts.append(outer.flush())
    return b"".join(parts)


def test_a_double_gzip_bomb_is_read_piece_by_piece_in_a_few_mb(double_gzip_bomb):
    assert len(double_gzip_bomb) < 4096
    limit = 20 << 20  # the caller's own size limit: it stops reading once that is passed
    decoder = ContentDecoder("gzip, gzip", WHERE)
    size = largest = 0
    tracemalloc.start()
    try:
        for piece in decoder.feed(double_gzip_bomb):
            size += len(piece)
            largest = max(largest, len(piece))
            if size > limit:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert size > limit
    assert largest <= PIECE_BYTES
    assert peak < 8 << 20


# bodies up to 200 KB: runs of a short pattern (which compress hugely) and random bytes (which do not)
runs = st.builds(lambda pattern, times: pattern * times, st.binary(min_size=1, max_size=8), st.integers(1, 50_000))
noise = st.builds(lambda seed, size: random.Random(seed).randbytes(size), st.integers(), st.integers(0, 100_000))
bodies = st.lists(runs | noise | st.binary(max_size=100), max_size=4).map(lambda parts: b"".join(parts)[:200_000])
stacks = st.lists(st.sampled_from(sorted(ENCODERS)), max_size=3)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, stacks, st.lists(st.floats(0, 1), max_size=20))
def test_any_stack_cut_into_any_reads_decodes_to_the_body_in_bounded_pieces(body, stack, cuts):
    encoded, content_encoding = encode(body, stack)
    points = sorted({round(cut * len(encoded)) for cut in cuts})
    reads = [encoded[start:end] for start, end in zip([0, *points], [*points, len(encoded)], strict=True)]

    pieces = decode(ContentDecoder(content_encoding, WHERE), reads)

    assert b"".join(pieces) == body
    assert all(0 < len(piece) <= PIECE_BYTES for piece in pieces)
