from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from starlette.types import Message, Receive, Scope, Send

from bastion.web.server import _FreezeAfterStartup


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process's objects go back to the collector


async def test_what_exists_at_startup_is_frozen_once_startup_completes(unfrozen: None) -> None:
    frozen_when_sent: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})

    messages = iter([{"type": "lifespan.startup"}])

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        frozen_when_sent.append(gc.get_freeze_count())

    assert gc.get_freeze_count() == 0
    await _FreezeAfterStartup(app)({"type": "lifespan"}, receive, send)
    assert frozen_when_sent and frozen_when_sent[0] > 0


async def test_requests_pass_through_untouched(unfrozen: None) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "path": "/"}
    await _FreezeAfterStartup(app)(scope, receive, send)
    assert seen == [scope] and sent[0]["status"] == 204
    assert gc.get_freeze_count() == 0
