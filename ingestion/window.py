"""A sliding send window: a new send starts the moment any in-flight send finishes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from core.together import run_together

Checkpoint = Callable[[int], Awaitable[bool | None]]  # False: stop (the run was cancelled or failed)


async def send_window(
    send: Callable[..., Awaitable[object]],
    messages: Sequence[str],
    window: int,
    *,
    start: int = 0,
    checkpoint: Checkpoint | None = None,
    every: int = 1000,
    keys: Sequence[str] | None = None,
) -> int:
    """Sends messages[start:] with at most `window` in flight; the first failure cancels the rest and is raised.
    `send(message)`, or `send(message, key)` with `keys` (what routes each message to its queue).
    Returns how many are sent: `len(messages)`, or fewer when a checkpoint said stop.

    `checkpoint(n)` is awaited each time the confirmed prefix (every message before n sent) grows by
    `every`, and no send starts more than `every + window` past the last checkpoint saved, so a rerun
    from it re-sends at most `every + window` messages, however slow the checkpoint writes are. When it
    answers False no send starts any more; the sends in flight finish, so that exactly the first n
    returned are sent.
    """
    total = len(messages)
    positions = iter(range(start, total))
    confirmed = start
    saved = start
    next_checkpoint = start + every
    sent = bytearray(total)
    checkpoint_saved = asyncio.Event()
    stopping = False

    async def sender() -> None:
        nonlocal confirmed, saved, next_checkpoint, stopping
        for position in positions:
            while checkpoint is not None and position >= saved + every + window and not stopping:
                checkpoint_saved.clear()
                await checkpoint_saved.wait()
            if stopping:
                return
            await (send(messages[position]) if keys is None else send(messages[position], keys[position]))
            sent[position] = 1
            if position != confirmed:
                continue
            while confirmed < total and sent[confirmed]:
                confirmed += 1
            if checkpoint is not None and confirmed >= next_checkpoint and confirmed < total:
                reached = confirmed
                next_checkpoint = reached + every
                stopping = stopping or await checkpoint(reached) is False
                saved = max(saved, reached)
                checkpoint_saved.set()

    await run_together(sender() for _ in range(min(window, total - start)))
    return confirmed
