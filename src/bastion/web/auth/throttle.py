"""Sign-in throttling per client address and per account, in the shared store (ASVS 2.2.1).

Counting per account as well as per address stops a botnet spreading guesses over many
addresses; counting per address stops one client spraying many accounts. Account names
are hashed before they become limiter keys.
"""

from __future__ import annotations

import hashlib

from bastion.stores import RateLimiter

HOURLY_ACCOUNT_CAP = "100/hour"


def _account(username: str) -> str:
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, *, max_failures: int) -> None:
        self._limiter = limiter
        self._window = f"{max_failures}/5 minutes"

    def _checks(self, client_ip: str, username: str) -> list[tuple[str, str, str]]:
        account = _account(username)
        return [
            (self._window, "login-ip", client_ip),
            (self._window, "login-account", account),
            (HOURLY_ACCOUNT_CAP, "login-account-hour", account),
        ]

    async def retry_after(self, client_ip: str, username: str) -> int | None:
        """Seconds to wait when throttled, None when an attempt may proceed."""
        waits = [
            await self._limiter.retry_after(limit, kind, key)
            for limit, kind, key in self._checks(client_ip, username)
            if not await self._limiter.test(limit, kind, key)
        ]
        return max(waits) if waits else None

    async def failed(self, client_ip: str, username: str) -> None:
        for limit, kind, key in self._checks(client_ip, username):
            await self._limiter.hit(limit, kind, key)

    async def succeeded(self, client_ip: str, username: str) -> None:
        # A success clears the short windows; the hourly account cap keeps counting.
        account = _account(username)
        await self._limiter.clear(self._window, "login-account", account)
        await self._limiter.clear(self._window, "login-ip", client_ip)
