"""CPU per response: the llhttp-based `ResponseParser` against the hand-written one it replaced.

    .venv/bin/python -m benchmarks.response_parser [--count 50000] [--rounds 7]

Each parser takes the same keep-alive stream of Put Message answers, one connection's parser for all
of them, fed whole and in pieces. The hand-written parser is read from git (commit HAND_WRITTEN_AT,
the last one that had it), so this needs the repository's history. Times are process CPU time, the
best of the rounds, in µs per response.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
import types
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from putmessage.http_response import ResponseParser

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HAND_WRITTEN_AT = "0f4c6fb"  # putmessage/http_response.py before the switch to httptools

AZURITE_201 = (  # the shape of tests/test_http_response.py's AZURITE_201
    b"HTTP/1.1 201 Created\r\nServer: Azurite-Queue/3.37.0\r\ncontent-type: application/xml\r\n"
    b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"19\r\n<QueueMessagesList>abc</Q\r\n3;ext=1\r\nueu\r\n0\r\nX-Trailer: t\r\n\r\n"
)
SERVER_BUSY_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>The server is busy.\n'
    b"RequestId:5e0c7f3a-0003-0040-2f1b-000000000000\nTime:2026-06-01T10:00:00.0000000Z</Message></Error>"
)
SERVER_BUSY_503 = (  # the shape of Azure Storage's answer past a queue's or an account's target
    b"HTTP/1.1 503 The server is busy.\r\nContent-Length: %d\r\nContent-Type: application/xml\r\n"
    b"Server: Windows-Azure-Queue/1.0 Microsoft-HTTPAPI/2.0\r\n"
    b"x-ms-request-id: 5e0c7f3a-0003-0040-2f1b-000000000000\r\n"
    b"x-ms-version: 2025-11-05\r\nx-ms-error-code: ServerBusy\r\nDate: Mon, 01 Jun 2026 10:00:00 GMT\r\n\r\n%b"
) % (len(SERVER_BUSY_BODY), SERVER_BUSY_BODY)
CASES = {
    "Azurite 201, whole": [AZURITE_201],
    "Azurite 201, 3 pieces": [AZURITE_201[:40], AZURITE_201[40:170], AZURITE_201[170:]],
    "Azurite 201, 16-byte pieces": [AZURITE_201[start : start + 16] for start in range(0, len(AZURITE_201), 16)],
    "Azure 503 ServerBusy, whole": [SERVER_BUSY_503],
}


def hand_written_parser() -> type:
    source = subprocess.run(
        ["git", "show", f"{HAND_WRITTEN_AT}:putmessage/http_response.py"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("hand_written_http_response")
    exec(compile(source, f"{HAND_WRITTEN_AT}:putmessage/http_response.py", "exec"), module.__dict__)
    return module.ResponseParser


def us_per_response(make_parser: Callable[[], object], pieces: list[bytes], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        parser = make_parser()
        feed = parser.feed  # type: ignore[attr-defined]
        started = time.process_time()
        for _ in range(count):
            for piece in pieces:
                response = feed(piece)
        best = min(best, time.process_time() - started)
        assert response is not None and response.status in (201, 503)
    return best / count * 1e6


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--count", type=int, default=50_000, help="responses per round")
    options.add_argument("--rounds", type=int, default=7)
    args = options.parse_args()
    parsers = {f"hand-written ({HAND_WRITTEN_AT})": hand_written_parser(), "httptools (llhttp)": ResponseParser}
    for pieces in CASES.values():  # both give the same answer before either is timed
        answers = {repr(make().feed(b"".join(pieces))) for make in parsers.values()}
        assert len(answers) == 1, answers
    print(f"Python {platform.python_version()}, httptools {version('httptools')}, {args.count} responses x "
          f"best of {args.rounds}; µs of CPU per response")  # fmt: skip
    print(f"{'case':<30}" + "".join(f"{name:>26}" for name in parsers))
    for case, pieces in CASES.items():
        times = [us_per_response(make, pieces, args.count, args.rounds) for make in parsers.values()]
        print(f"{case:<30}" + "".join(f"{seconds:>26.2f}" for seconds in times))


if __name__ == "__main__":
    main()
