"""A sliding send window: a new send starts the moment any in-flight send finishes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence


async def send_window(send: Callable[[str], Awaitable[object]], messages: Sequence[str], window: int) -> None:
    """Sends every message with at most `window` in flight; the first failure cancels the rest."""
    positions = iter(range(len(messages)))

    async def sender() -> None:
        for position in positions:
            await send(messages[position])

    async with asyncio.TaskGroup() as group:
        for _ in range(min(window, len(messages))):
            group.create_task(sender())
