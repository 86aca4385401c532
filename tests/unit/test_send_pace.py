"""The send pace: a 503 cuts the sends in flight (x DECREASE) once a round trip, 201s win them back and nothing else
does, waiters are served first come first served, and a cancelled waiter loses no slot."""

from __future__ import annotations

import asyncio

import pytest

from putmessage.pace import DECREASE, SendPace


def test_503s_to_sends_of_one_round_trip_cut_the_pace_once_and_201s_win_it_back():
    pace = SendPace(64)
    epochs = [pace.take() for _ in range(64)]
    assert pace.take() is None  # all 64 out

    for epoch in epochs[:40]:  # every send of that round trip answered 503: one cut
        pace.done(epoch, throttled=True)
    assert pace.allowed == pytest.approx(64 * DECREASE)

    late = pace.take()  # a send of the new round trip, answered 503: the next cut
    pace.done(late, throttled=True)
    cut = 64 * DECREASE * DECREASE
    assert pace.allowed == pytest.approx(cut)

    for epoch in epochs[40:]:
        pace.done(epoch, stored=True)
    assert cut < pace.allowed < cut + 1.5  # one more for every `allowed` stored messages
    grown = pace.allowed
    pace.done(pace.take())  # a 500, a timeout, a cancel: no news
    assert pace.allowed == grown
    while pace.allowed < 64:
        pace.done(pace.take(), stored=True)
    assert pace.allowed == 64 and pace.in_flight == 0


def test_the_pace_never_goes_below_one_send_at_a_time_and_counts_whole_sends():
    pace = SendPace(8)
    for _ in range(20):
        pace.done(pace.take(), throttled=True)
    assert pace.allowed == 1
    pace.allowed = 1.9
    assert pace.take() is not None and pace.take() is None


def test_waiters_get_freed_slots_in_turn_and_a_cancelled_one_takes_none():
    async def scenario() -> list[str]:
        pace = SendPace(2)
        first, second = pace.take(), pace.take()
        served: list[str] = []

        async def waiter(name: str) -> None:
            epoch = await pace.wait()
            served.append(name)
            await asyncio.sleep(0)
            pace.done(epoch, stored=True)

        tasks = {name: asyncio.create_task(waiter(name)) for name in ("a", "b", "c")}
        await asyncio.sleep(0)
        tasks["b"].cancel()
        pace.done(first, stored=True)
        pace.done(second, stored=True)
        await asyncio.gather(tasks["a"], tasks["c"])
        with pytest.raises(asyncio.CancelledError):
            await tasks["b"]
        assert pace.in_flight == 0
        return served

    assert asyncio.run(scenario()) == ["a", "c"]


def test_a_waiter_handed_a_slot_then_cancelled_passes_it_on():
    async def scenario() -> None:
        pace = SendPace(1)
        held = pace.take()
        first = asyncio.create_task(pace.wait())
        second = asyncio.create_task(pace.wait())
        await asyncio.sleep(0)
        pace.done(held, stored=True)  # handed to `first`, which has not run yet
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        epoch = await second  # the slot went on
        assert pace.in_flight == 1
        pace.done(epoch, stored=True)
        assert pace.in_flight == 0

    asyncio.run(scenario())


def test_a_waiter_carries_the_round_trip_it_was_handed_in():
    async def scenario() -> float:
        pace = SendPace(4)
        one, two, _, _ = (pace.take() for _ in range(4))
        waiter = asyncio.create_task(pace.wait())
        await asyncio.sleep(0)
        pace.done(one, stored=True)  # handed to the waiter, in this round trip
        pace.done(two, throttled=True)  # a 503 of this round trip: cut once
        epoch = await waiter
        pace.done(epoch, throttled=True)  # the same round trip's news: no second cut
        return pace.allowed

    assert asyncio.run(scenario()) == pytest.approx(4 * DECREASE)
