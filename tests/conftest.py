"""Real Azurite (started once per session on free ports) and the bundled demo API on loopback.

Async handlers run on one event loop for the whole session, as the Functions worker runs them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from core.storage import close_storage_clients
from fanout.azurite import Azurite, start_azurite
from fanout.demo_api import DemoApi
from testkit.storage_probe import StorageProbe, delete_queues, set_app_env

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(scope="session")
def event_loop_runner() -> Iterator[Run]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.run_until_complete(close_storage_clients())
    loop.close()


@pytest.fixture(scope="module")
def shared_azurite() -> Iterator[Azurite]:
    instance = start_azurite()
    yield instance
    instance.close()


@pytest.fixture
def azurite(request: pytest.FixtureRequest, shared_azurite: Azurite) -> Iterator[Azurite]:
    """The module's Azurite; a fresh one for tests marked `own_azurite` (Azurite slows as it fills)."""
    if request.node.get_closest_marker("own_azurite") is None:
        yield shared_azurite
        return
    instance = start_azurite()
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def demo_api() -> Iterator[DemoApi]:
    api = DemoApi(count=10_000).start()
    yield api
    api.stop()


@pytest.fixture
def on_loop(event_loop_runner: Run) -> Run:
    """Runs a coroutine to its end on the session's one event loop, as the Functions worker would."""
    return event_loop_runner


@pytest.fixture
def app_env(azurite: Azurite, demo_api: DemoApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The app's settings for one test: the module's Azurite, and queues no other test uses, deleted after it
    (Azurite reads a queue in time that grows with the messages of every queue it holds)."""
    env = set_app_env(
        monkeypatch,
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "SOURCE_URL": f"{demo_api.url}?count=10000",
            "QUEUE_NAME": f"ingest-{secrets.token_hex(6)}",
            "REDRIVE_QUEUE": f"redrives-{secrets.token_hex(6)}",
            "RUN_EVENTS_QUEUE": f"events-{secrets.token_hex(6)}",
            "SOURCE_RETRY_BASE_DELAY": "0.01",
        },
    )
    yield env
    delete_queues(azurite.connection_string, [env["QUEUE_NAME"], env["REDRIVE_QUEUE"], env["RUN_EVENTS_QUEUE"]])


@pytest.fixture
def probe(azurite: Azurite, app_env: dict[str, str]) -> StorageProbe:
    return StorageProbe(azurite.connection_string, app_env["QUEUE_NAME"])


@pytest.fixture(scope="session")
def functions() -> dict[str, Callable[..., Any]]:
    """The app's functions by name, as the host indexes them (get_functions: once per process)."""
    import function_app

    return {fn.get_function_name(): fn.get_user_function() for fn in function_app.app.get_functions()}
