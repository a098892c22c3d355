"""Captcha challenges: the answer lives server-side only, as a hash, for one attempt.

The original also copied the answer into a readable cookie and checked that copy first;
here the client only ever holds a random nonce and the picture.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

from bastion.stores import KeyValueStore
from bastion.web.auth.captcha import new_answer, render_png, render_svg

TTL_SECONDS = 300
_SHAPE = re.compile(r"[A-Za-z0-9_-]{22}")
KINDS = ("png", "svg")


def _answer_key(nonce: str) -> str:
    return f"captcha:{nonce}"


def _image_key(nonce: str, kind: str) -> str:
    return f"captcha-image:{nonce}:{kind}"


def _digest(answer: str) -> bytes:
    return hashlib.sha256(answer.strip().upper().encode()).digest()


async def issue(kv: KeyValueStore, new_answer: Callable[[], str] = new_answer) -> str:
    answer = new_answer()
    nonce = secrets.token_urlsafe(16)
    # Drawing takes milliseconds of CPU: keep it off the event loop.
    png, svg = await asyncio.gather(
        asyncio.to_thread(render_png, answer), asyncio.to_thread(render_svg, answer)
    )
    await kv.set(_image_key(nonce, "png"), png, TTL_SECONDS)
    await kv.set(_image_key(nonce, "svg"), svg.encode(), TTL_SECONDS)
    await kv.set(_answer_key(nonce), _digest(answer), TTL_SECONDS)
    return nonce


async def image(kv: KeyValueStore, nonce: str, kind: str) -> bytes | None:
    if kind not in KINDS or not _SHAPE.fullmatch(nonce):
        return None
    return await kv.get(_image_key(nonce, kind))


async def discard(kv: KeyValueStore, nonce: str | None) -> None:
    if nonce is None or not _SHAPE.fullmatch(nonce):
        return
    for key in (_answer_key(nonce), *(_image_key(nonce, kind) for kind in KINDS)):
        await kv.delete(key)


async def verify(kv: KeyValueStore, nonce: str | None, answer: str | None) -> bool:
    """One attempt per challenge: the stored hash is taken out before comparing."""
    if nonce is None or not _SHAPE.fullmatch(nonce):
        return False
    expected = await kv.pop(_answer_key(nonce))
    await discard(kv, nonce)
    if expected is None or answer is None or len(answer) > 64:
        return False
    return hmac.compare_digest(expected, _digest(answer))
