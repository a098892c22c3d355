"""OAuth 2.0 tokens for vault credentials: refresh (RFC 6749 §6) and client credentials (§4.4).

Authlib speaks the protocol; this module bounds what the token endpoint, another party's
server, can do to us: where the request may go, how long and how big the answer may be, and
what of its text may reach an error (and so a log or a page): only the `error` code and a
cleaned `error_description`, never a token, a secret or the raw body.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import httpx2

# Authlib drives httpx2 (LangGraph's langsmith installs it); Bastion's own requests go
# through httpx. The transport below is the seam: Authlib's request is re-sent through the
# caller's httpx client, whose connections and limits Bastion controls.
from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
    AsyncOAuth2Client,
)
from authlib.integrations.httpx_client import (
    OAuthError as AuthlibOAuthError,
)

from bastion.logs import REDACTED, redactor
from bastion.vault.secret import Secret

MAX_ANSWER_BYTES = 64 * 1024
MAX_REASON_CHARS = 200
MAX_LIFETIME = timedelta(days=3650)
RETRYABLE = frozenset({"network_error", "server_error", "temporarily_unavailable"})

_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# An opaque run this long in an error text is a token or an encoding of one, not prose.
_OPAQUE = re.compile(r"[A-Za-z0-9_~+/=-]{24,}")


@dataclass(frozen=True)
class TokenSet:
    access_token: Secret
    refresh_token: Secret | None
    expires_at: datetime | None  # UTC; None when the server gave no lifetime
    scope: str
    token_type: str


def _safe_text(text: str) -> str:
    # Controls (incl. bidi and newlines) would let a server forge log lines or hide text.
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _OPAQUE.sub(REDACTED, redactor.redact(text))
    return text[:MAX_REASON_CHARS]


class OAuthError(Exception):
    """A token request failed.

    `code` is the RFC 6749 §5.2 `error` (e.g. invalid_grant: the credential needs a new
    authorization) or one of network_error, server_error, temporarily_unavailable,
    invalid_response. `reason` is safe to log and show. `retryable`: trying later may work.
    """

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = _safe_text(reason)
        self.retryable = code in RETRYABLE
        super().__init__(self.code, self.reason)

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"


def _check_token_url(url: str) -> None:
    # Parsed by httpx, the parser that will connect: no differential between check and use.
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ValueError("token URL is not a valid URL") from None
    if parsed.userinfo:
        raise ValueError("token URL must not carry credentials")  # they would end up in logs
    if parsed.scheme == "https" and parsed.host:
        return
    # Plain http would hand the client secret and refresh token to anyone on the path.
    if parsed.scheme == "http" and _is_loopback(parsed.host):
        return
    raise ValueError("token URL must be https (plain http only to a loopback host)")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _BoundedStream(httpx2.AsyncByteStream):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._response.aiter_raw():
            received += len(chunk)
            if received > MAX_ANSWER_BYTES:  # a hostile server could stream without end
                raise OAuthError("invalid_response", "token endpoint answer larger than 64 KiB")
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class _BoundedTransport(httpx2.AsyncBaseTransport):
    """Sends Authlib's request through the given client; never follows a redirect (that
    would re-send the credentials elsewhere) and caps the answer's size."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        outgoing = httpx.Request(
            request.method,
            str(request.url),
            headers=request.headers.raw,
            content=await request.aread(),
        )
        # auth=None: the request carries our client authentication and nothing else.
        response = await self._http.send(outgoing, stream=True, follow_redirects=False, auth=None)
        headers = response.headers
        length = headers.get("content-length", "")
        encoding = headers.get("content-encoding", "identity").strip().lower()
        problem = None
        if length.isdigit() and int(length) > MAX_ANSWER_BYTES:
            problem = "token endpoint answer larger than 64 KiB"
        elif encoding not in ("", "identity"):
            # A few KiB of gzip can inflate to gigabytes: the size cap must hold on the wire.
            problem = "token endpoint answer is compressed"
        if problem is not None:
            await response.aclose()
            raise OAuthError("invalid_response", problem)
        return httpx2.Response(
            response.status_code,
            headers=headers.raw,
            stream=_BoundedStream(response),
        )


def _check_status(response: httpx2.Response) -> httpx2.Response:
    """Authlib hook: only a 2xx answer may be read as a token, only a 4xx one as an error."""
    status = response.status_code
    if response.is_success:
        return response
    if status >= 500 or status == 429:
        code = "temporarily_unavailable" if status in (429, 503) else "server_error"
        raise OAuthError(code, f"token endpoint answered HTTP {status}")
    if 400 <= status < 500:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return response  # an RFC 6749 §5.2 error: Authlib raises it, we translate it
    raise OAuthError("invalid_response", f"token endpoint answered HTTP {status}")


def _error_from_answer(error: object, description: object) -> OAuthError:
    code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else ""
    if not code or redactor.redact(code) != code:  # a "code" that is really a secret stays out
        return OAuthError("invalid_response", "token endpoint sent a malformed error")
    text = description if isinstance(description, str) and description else f"refused: {code}"
    return OAuthError(code, text)


def _expires_at(value: object, started: datetime) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # some providers send a JSON string
    if isinstance(value, bool) or not isinstance(value, int):
        raise OAuthError("invalid_response", "expires_in is not a number of seconds")
    if not 0 <= value <= MAX_LIFETIME.total_seconds():
        raise OAuthError("invalid_response", "expires_in is out of range")
    # From the moment we asked, not answered: a slow answer must not stretch the lifetime.
    return started + timedelta(seconds=value)


def _token_set(
    answer: Mapping[str, Any],
    *,
    old_refresh: Secret | None,
    scope: str | None,
    started: datetime,
) -> TokenSet:
    access = answer.get("access_token")
    token_type = answer.get("token_type", "Bearer")
    refresh = answer.get("refresh_token")
    granted = answer.get("scope", scope or "")
    if not (isinstance(access, str) and access):
        raise OAuthError("invalid_response", "answer has no access_token")
    if not (isinstance(token_type, str) and token_type):
        raise OAuthError("invalid_response", "answer has a malformed token_type")
    if refresh is not None and not (isinstance(refresh, str) and refresh):
        raise OAuthError("invalid_response", "answer has a malformed refresh_token")
    if not isinstance(granted, str):
        raise OAuthError("invalid_response", "answer has a malformed scope")
    if refresh is None or (old_refresh is not None and refresh == old_refresh.reveal()):
        new_refresh = old_refresh  # not rotated: the one we hold stays valid (RFC 6749 §6)
    else:
        new_refresh = Secret(refresh)  # rotated: the old one may already be revoked
    return TokenSet(
        access_token=Secret(access),
        refresh_token=new_refresh,
        expires_at=_expires_at(answer.get("expires_in"), started),
        scope=granted,
        token_type=token_type,
    )


async def _request_token(
    *,
    token_url: str,
    client_id: str,
    client_secret: Secret,
    refresh_token: Secret | None,
    scope: str | None,
    timeout: float,
    http: httpx.AsyncClient | None,
) -> TokenSet:
    _check_token_url(token_url)
    started = datetime.now(UTC)
    try:
        # One deadline for the whole exchange: per-read timeouts alone let a server that
        # dribbles a byte at a time hold the caller for hours.
        with anyio.fail_after(timeout):
            async with AsyncExitStack() as stack:
                if http is None:
                    http = await stack.enter_async_context(httpx.AsyncClient())
                client = await stack.enter_async_context(
                    AsyncOAuth2Client(
                        client_id=client_id,
                        client_secret=client_secret.reveal(),
                        token_endpoint_auth_method="client_secret_basic",  # noqa: S106 (a name)
                        scope=scope,
                        transport=_BoundedTransport(http),
                        timeout=timeout,
                        follow_redirects=False,
                        headers={"Accept-Encoding": "identity"},
                    )
                )
                client.register_compliance_hook("access_token_response", _check_status)
                client.register_compliance_hook("refresh_token_response", _check_status)
                if refresh_token is None:
                    answer = await client.fetch_token(token_url, grant_type="client_credentials")
                else:
                    answer = await client.refresh_token(
                        token_url, refresh_token=refresh_token.reveal()
                    )
    # `from None` throughout: a chained cause (a JSON error's .doc, Authlib's description)
    # would carry the raw answer into tracebacks and error trackers.
    except OAuthError:
        raise
    except AuthlibOAuthError as exc:
        raise _error_from_answer(exc.error, exc.description) from None
    except (TimeoutError, httpx.TransportError) as exc:
        reason = f"token endpoint unreachable ({type(exc).__name__})"
        raise OAuthError("network_error", reason) from None
    except (httpx.HTTPError, ValueError, TypeError):
        raise OAuthError("invalid_response", "token endpoint answer is malformed") from None
    return _token_set(answer, old_refresh=refresh_token, scope=scope, started=started)


async def refresh(
    *,
    token_url: str,
    client_id: str,
    client_secret: Secret,
    refresh_token: Secret,
    scope: str | None = None,
    timeout: float = 10.0,
    http: httpx.AsyncClient | None = None,
) -> TokenSet:
    """New tokens for a refresh token. Store the returned refresh token: when the server
    rotates, the one passed in is revoked. `http` is used for sending (proxy, CA, pool)."""
    return await _request_token(
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=refresh_token,
        scope=scope,
        timeout=timeout,
        http=http,
    )


async def client_credentials(
    *,
    token_url: str,
    client_id: str,
    client_secret: Secret,
    scope: str | None = None,
    timeout: float = 10.0,
    http: httpx.AsyncClient | None = None,
) -> TokenSet:
    """An access token for the client itself (no refresh token: ask again when it expires)."""
    return await _request_token(
        token_url=token_url,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=None,
        scope=scope,
        timeout=timeout,
        http=http,
    )


def needs_refresh(
    expires_at: datetime | None, now: datetime, margin: timedelta = timedelta(minutes=5)
) -> bool:
    """True from `margin` before expiry on. A token without a known expiry is used until the
    API refuses it. Naive datetimes are refused: local time read as UTC shifts by hours."""
    if expires_at is None:
        return False
    if expires_at.utcoffset() is None or now.utcoffset() is None:
        raise ValueError("needs_refresh needs timezone-aware datetimes")
    return now >= expires_at - margin
