"""Anti-CSRF for signed-in console requests (ASVS 4.2.2).

Two independent checks: the per-session token (header X-CSRF-Token or form field
csrf_token, compared in constant time) and the browser's own statement of where the
request comes from (Sec-Fetch-Site, Origin). Either one alone has known gaps: old
browsers send no Fetch metadata, and a token can leak through a page bug.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

REASON_NO_TOKEN = "CSRF token missing"  # noqa: S105 - a message, not a secret
REASON_BAD_TOKEN = "CSRF token incorrect"  # noqa: S105
REASON_CROSS_SITE = "cross-site request"
REASON_BAD_ORIGIN = "Origin does not match this site"

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def own_origin(request: Request) -> str:
    scheme = request.scope.get("state", {}).get("scheme", request.url.scheme)
    return f"{scheme}://{request.headers.get('host', '')}"


def origin_problem(request: Request) -> str | None:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return REASON_CROSS_SITE
    origin = request.headers.get("origin")
    if origin is not None and origin != own_origin(request):
        return REASON_BAD_ORIGIN
    return None


def token_problem(expected: str, presented: str | None) -> str | None:
    if not presented:
        return REASON_NO_TOKEN
    if not hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace")):
        return REASON_BAD_TOKEN
    return None
