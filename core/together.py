"""Coroutines run at once, where the first failure cancels the others and is raised as itself."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def run_together(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Runs every coroutine at once; the first to fail cancels the rest, and its exception, not an
    ExceptionGroup, is raised (callers, and a command line's error message, see what it was)."""
    try:
        async with asyncio.TaskGroup() as group:
            for coroutine in coroutines:
                group.create_task(coroutine)
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
