"""A sliding send window: a new send starts the moment any in-flight send finishes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

Checkpoint = Callable[[int], Awaitable[None]]


async def send_window(
    send: Callable[[str], Awaitable[object]],
    messages: Sequence[str],
    window: int,
    *,
    start: int = 0,
    checkpoint: Checkpoint | None = None,
    every: int = 1000,
) -> None:
    """Sends messages[start:] with at most `window` in flight; the first failure cancels the rest.

    `checkpoint(n)` is awaited each time the confirmed prefix (every message before n sent) grows by
    `every`, so a rerun from the last checkpoint re-sends at most `every + window` messages.
    """
    total = len(messages)
    positions = iter(range(start, total))
    confirmed = start
    next_checkpoint = start + every
    sent = bytearray(total)

    async def sender() -> None:
        nonlocal confirmed, next_checkpoint
        for position in positions:
            await send(messages[position])
            sent[position] = 1
            if position != confirmed:
                continue
            while confirmed < total and sent[confirmed]:
                confirmed += 1
            if checkpoint is not None and confirmed >= next_checkpoint and confirmed < total:
                next_checkpoint = confirmed + every
                await checkpoint(confirmed)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(window, total - start)):
            group.create_task(sender())
