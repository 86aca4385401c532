"""When an invocation stops reading: an HTTP call at its budget (or at 200 s for an unpaged answer)
whatever it wrote; a continuation at its budget once it wrote a chunk, else at CHUNKING_TIME_LIMIT."""

from __future__ import annotations

import asyncio
import time

import pytest

from chunking.time_box import HTTP_READ_LIMIT, OutOfTimeError, TimeBox


def seconds_left(box: TimeBox) -> float | None:
    return None if box.stop_at is None else round(box.stop_at - time.monotonic())


@pytest.mark.parametrize(
    ("box", "before_a_chunk", "after_a_chunk", "hands_on_empty"),
    [
        (lambda: TimeBox.http_call(60, paged=True), 60, 60, True),
        (lambda: TimeBox.http_call(60, paged=False), HTTP_READ_LIMIT, HTTP_READ_LIMIT, True),
        (lambda: TimeBox.continuation(60, 480, paged=True), 480, 60, False),
        (lambda: TimeBox.continuation(60, 480, paged=False), 480, 480, False),
        (TimeBox, None, None, False),  # the command line
    ],
    ids=["http paged", "http unpaged", "continuation paged", "continuation unpaged", "command line"],
)
def test_reading_stops_where_the_invocation_says(box, before_a_chunk, after_a_chunk, hands_on_empty):
    time_box = box()
    assert (seconds_left(time_box), time_box.may_hand_on) == (before_a_chunk, hands_on_empty)
    time_box.chunk_written()
    assert (seconds_left(time_box), time_box.may_hand_on) == (after_a_chunk, True)


def test_a_step_past_the_stop_is_cut_short_and_one_past_its_answer_time_times_out():
    async def main() -> tuple[type[BaseException], type[BaseException]]:
        stopped, late = TimeBox(limit_at=time.monotonic() + 0.05), TimeBox(limit_at=time.monotonic() + 60)
        outcomes = []
        for box, answer_by in [(stopped, time.monotonic() + 60), (late, time.monotonic() + 0.05)]:
            with pytest.raises((OutOfTimeError, TimeoutError)) as raised:
                await box.within(asyncio.sleep(10), answer_by)
            outcomes.append(raised.type)
        return outcomes[0], outcomes[1]

    assert asyncio.run(main()) == (OutOfTimeError, TimeoutError)
