"""The sliding send window's promises, on an in-memory send: order-free sending, the checkpoint bound."""

from __future__ import annotations

import asyncio
import random

import pytest

from ingestion.window import send_window


def test_every_message_is_sent_once_and_checkpoints_only_cover_confirmed_prefixes():
    messages = [f"m{n}" for n in range(2_000)]
    sent: list[str] = []
    checkpoints: list[int] = []

    async def send(text: str) -> None:
        await asyncio.sleep(random.random() / 1000)  # answers come back out of order
        sent.append(text)

    async def checkpoint(position: int) -> None:
        assert set(messages[:position]) <= set(sent)  # everything before a checkpoint was confirmed
        checkpoints.append(position)

    asyncio.run(send_window(send, messages, 16, checkpoint=checkpoint, every=100))

    assert sorted(sent) == sorted(messages)
    assert checkpoints == sorted(checkpoints) and len(checkpoints) >= 15


@pytest.mark.parametrize(("window", "every"), [(8, 50), (64, 100), (32, 1)])
def test_no_send_starts_more_than_every_plus_window_past_the_saved_checkpoint(window, every):
    """However slow checkpoint writes are, a rerun from the last saved one re-sends at most every + window."""
    messages = [str(n) for n in range(1_500)]
    saved = 0
    worst = 0

    async def send(text: str) -> None:
        nonlocal worst
        worst = max(worst, int(text) + 1 - saved)
        await asyncio.sleep(0)

    async def slow_checkpoint(position: int) -> None:
        nonlocal saved
        await asyncio.sleep(0.002)  # a storage write: far slower than a send here
        saved = position

    asyncio.run(send_window(send, messages, window, checkpoint=slow_checkpoint, every=every))

    assert worst <= every + window


def test_the_first_failure_stops_the_window_and_is_raised():
    started: list[int] = []

    async def send(text: str) -> None:
        started.append(int(text))
        if text == "10":
            raise RuntimeError("storage refused")
        await asyncio.sleep(0.001)

    with pytest.raises(RuntimeError, match="storage refused"):
        asyncio.run(send_window(send, [str(n) for n in range(10_000)], 4))

    assert len(started) < 100  # the rest was cancelled, not sent


def test_a_rerun_starts_at_its_checkpoint():
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    asyncio.run(send_window(send, ["a", "b", "c", "d"], 2, start=2))

    assert sorted(sent) == ["c", "d"]


@pytest.mark.parametrize(("window", "every"), [(8, 50), (1, 10), (64, 100)])
def test_a_checkpoint_that_says_stop_ends_sending_and_the_count_returned_is_exactly_what_was_sent(window, every):
    messages = [str(n) for n in range(2_000)]
    sent: list[str] = []
    checkpoints: list[int] = []

    async def send(text: str) -> None:
        await asyncio.sleep(random.random() / 1000)
        sent.append(text)

    async def checkpoint(position: int) -> bool:
        checkpoints.append(position)
        return len(checkpoints) < 3  # the run is stopped before the third checkpoint

    count = asyncio.run(send_window(send, messages, window, checkpoint=checkpoint, every=every))

    assert sorted(sent, key=int) == messages[:count]  # a prefix, each once: a redrive resumes right after it
    assert checkpoints[-1] <= count <= checkpoints[-1] + window  # only the sends in flight finished
