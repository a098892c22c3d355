"""Single-use tokens that the sign-in form carries (anti-CSRF on the login form, ASVS 4.2.2).

Each token works once, whatever the outcome, and expires after its TTL. The store holds
only a hash of it, so a dump of Redis does not yield usable tokens.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from bastion.stores import KeyValueStore

_PREFIX = "login-token:"
_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def _key(token: str) -> str:
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


async def issue(kv: KeyValueStore, ttl: float) -> str:
    token = secrets.token_urlsafe(32)
    await kv.set(_key(token), b"1", ttl)
    return token


async def consume(kv: KeyValueStore, token: str | None) -> bool:
    """True once for a live token; False for unknown, expired, reused or malformed ones."""
    if token is None or not _SHAPE.fullmatch(token):
        return False
    return await kv.pop(_key(token)) is not None
