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
    """Sends messages[start:] with at most `window` in flight; the first failure cancels the rest and is raised.

    `checkpoint(n)` is awaited each time the confirmed prefix (every message before n sent) grows by
    `every`, and no send starts more than `every + window` past the last checkpoint saved, so a rerun
    from it re-sends at most `every + window` messages, however slow the checkpoint writes are.
    """
    total = len(messages)
    positions = iter(range(start, total))
    confirmed = start
    saved = start
    next_checkpoint = start + every
    sent = bytearray(total)
    checkpoint_saved = asyncio.Event()

    async def sender() -> None:
        nonlocal confirmed, saved, next_checkpoint
        for position in positions:
            while checkpoint is not None and position >= saved + every + window:
                checkpoint_saved.clear()
                await checkpoint_saved.wait()
            await send(messages[position])
            sent[position] = 1
            if position != confirmed:
                continue
            while confirmed < total and sent[confirmed]:
                confirmed += 1
            if checkpoint is not None and confirmed >= next_checkpoint and confirmed < total:
                reached = confirmed
                next_checkpoint = reached + every
                await checkpoint(reached)
                saved = max(saved, reached)
                checkpoint_saved.set()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(window, total - start)):
                group.create_task(sender())
    except BaseExceptionGroup as failures:  # the first failure itself, so callers see what it was
        raise failures.exceptions[0] from None
