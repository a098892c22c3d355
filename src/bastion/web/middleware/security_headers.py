"""Baseline security headers on every response: pages, API answers, errors and 404s."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'; report-uri /csp-report; report-to csp"
)

_ALWAYS_TEXT = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "reporting-endpoints": 'csp="/csp-report"',
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: with it, Chromium sends `Origin: null` on same-origin form
    # posts, which defeats the Origin check of the CSRF defence.
    "referrer-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
# Pre-encoded once: this runs on every response, including the health checks a load
# balancer sends many times a second.
_ALWAYS = [(name.encode(), value.encode()) for name, value in _ALWAYS_TEXT.items()]
_OURS = frozenset(name for name, _ in _ALWAYS)
_NO_STORE = (b"cache-control", b"no-store")
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("state", {}).get("scheme", scope.get("scheme")) == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(_ALWAYS)
                cache_policy = False
                for name, value in message.get("headers", ()):
                    lowered = name.lower()
                    if lowered not in _OURS:
                        headers.append((name, value))
                        cache_policy = cache_policy or lowered == b"cache-control"
                # Anything not explicitly cacheable (static assets opt in) may hold
                # session-specific data: keep it out of shared and browser caches.
                if not cache_policy:
                    headers.append(_NO_STORE)
                # HSTS only over HTTPS (RFC 6797 §7.2), as seen through trusted hops.
                if https:
                    headers.append(_HSTS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
