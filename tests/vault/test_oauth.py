"""OAuth 2.0 refresh and client-credentials grants against a real token endpoint (oauthlib)."""

from __future__ import annotations

import base64
import gzip
import json
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from bastion.vault.oauth import (
    MAX_ANSWER_BYTES,
    OAuthError,
    TokenSet,
    client_credentials,
    needs_refresh,
    refresh,
)
from bastion.vault.secret import Secret
from tests.oauth_server import Answer, OAuthServer

CLIENT_ID = "bastion"
CLIENT_SECRET = secrets.token_urlsafe(32)


@pytest.fixture
def server() -> Iterator[OAuthServer]:
    with OAuthServer(token_lifetime=3600) as running:
        running.register_client(CLIENT_ID, CLIENT_SECRET, ["read", "write"])
        yield running


async def do_refresh(
    server: OAuthServer,
    refresh_token: str | Secret,
    secret: str = CLIENT_SECRET,
    scope: str | None = None,
    timeout: float = 10.0,
) -> TokenSet:
    token = refresh_token if isinstance(refresh_token, Secret) else Secret(refresh_token)
    return await refresh(
        token_url=server.token_url,
        client_id=CLIENT_ID,
        client_secret=Secret(secret),
        refresh_token=token,
        scope=scope,
        timeout=timeout,
    )


def json_answer(
    status: int, payload: object, *, send_length: bool = True, delay: float = 0.0
) -> Answer:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    return Answer(status, body, headers, send_length=send_length, delay=delay)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refresh_returns_new_access_token_and_rotated_refresh_token_replaces_old(
    server: OAuthServer,
) -> None:
    old = server.issue_refresh_token(CLIENT_ID, ["read"])
    before = datetime.now(UTC)

    tokens = await do_refresh(server, old)

    assert server.issued_access_token(tokens.access_token.reveal())
    assert tokens.refresh_token is not None
    new = tokens.refresh_token.reveal()
    assert new != old
    assert server.is_live_refresh_token(new)
    assert not server.is_live_refresh_token(old)
    assert tokens.token_type == "Bearer"
    assert tokens.scope == "read"
    assert tokens.expires_at is not None
    assert before + timedelta(seconds=3600) <= tokens.expires_at
    assert tokens.expires_at <= datetime.now(UTC) + timedelta(seconds=3600)

    with pytest.raises(OAuthError) as refused:
        await do_refresh(server, old)
    assert refused.value.code == "invalid_grant"

    again = await do_refresh(server, tokens.refresh_token)
    assert again.access_token != tokens.access_token


async def test_refresh_without_new_refresh_token_keeps_the_old_one(server: OAuthServer) -> None:
    server.rotate_refresh_tokens = False
    old = Secret(server.issue_refresh_token(CLIENT_ID, ["read"]))

    tokens = await do_refresh(server, old)

    assert tokens.refresh_token is old
    assert server.is_live_refresh_token(old.reveal())


async def test_refresh_can_narrow_the_scope(server: OAuthServer) -> None:
    old = server.issue_refresh_token(CLIENT_ID, ["read", "write"])

    tokens = await do_refresh(server, old, scope="read")

    assert tokens.scope == "read"


async def test_revoked_refresh_token_is_invalid_grant_and_not_retryable(
    server: OAuthServer,
) -> None:
    token = server.issue_refresh_token(CLIENT_ID, ["read"])
    server.revoke(token)

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, token)

    assert failed.value.code == "invalid_grant"
    assert failed.value.retryable is False


async def test_unknown_refresh_token_is_invalid_grant(server: OAuthServer) -> None:
    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, secrets.token_urlsafe(32))
    assert failed.value.code == "invalid_grant"


async def test_refresh_token_of_another_client_is_invalid_grant(server: OAuthServer) -> None:
    server.register_client("other", secrets.token_urlsafe(32), ["read"])
    theirs = server.issue_refresh_token("other", ["read"])

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, theirs)
    assert failed.value.code == "invalid_grant"
    assert server.is_live_refresh_token(theirs)


async def test_wrong_client_secret_is_invalid_client_and_token_stays_valid(
    server: OAuthServer,
) -> None:
    token = server.issue_refresh_token(CLIENT_ID, ["read"])

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, token, secret=secrets.token_urlsafe(32))

    assert failed.value.code == "invalid_client"
    assert failed.value.retryable is False
    assert server.is_live_refresh_token(token)


async def test_provider_503_is_retryable(server: OAuthServer) -> None:
    token = server.issue_refresh_token(CLIENT_ID, ["read"])
    server.unavailable = True

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, token)

    assert failed.value.code == "temporarily_unavailable"
    assert failed.value.retryable is True
    assert server.is_live_refresh_token(token)


@pytest.mark.parametrize(("status", "code"), [(500, "server_error"), (502, "server_error")])
async def test_provider_5xx_is_retryable_server_error(
    server: OAuthServer, status: int, code: str
) -> None:
    server.answer = lambda headers, body: Answer(status, b"<html>oops</html>")

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, "whatever-token")

    assert (failed.value.code, failed.value.retryable) == (code, True)


async def test_unreachable_provider_is_retryable_network_error() -> None:
    with pytest.raises(OAuthError) as failed:
        await refresh(
            token_url=f"http://127.0.0.1:{closed_port()}/token",
            client_id=CLIENT_ID,
            client_secret=Secret(CLIENT_SECRET),
            refresh_token=Secret(secrets.token_urlsafe(32)),
        )
    assert (failed.value.code, failed.value.retryable) == ("network_error", True)


async def test_slow_provider_times_out_as_retryable_network_error(server: OAuthServer) -> None:
    server.answer = lambda headers, body: json_answer(200, {"access_token": "late"}, delay=0.6)

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, "whatever-token", timeout=0.2)

    assert (failed.value.code, failed.value.retryable) == ("network_error", True)


async def test_error_text_never_contains_client_secret_or_tokens(server: OAuthServer) -> None:
    refresh_token = server.issue_refresh_token(CLIENT_ID, ["read"])
    seen: dict[str, str] = {}

    def echoing(headers: dict[str, str], body: str) -> Answer:
        # A careless provider that echoes the whole request into its error description,
        # with a forged log line and terminal escapes in between.
        seen["authorization"] = headers["Authorization"]
        description = f"bad request {body} {headers['Authorization']}\n\x1b[31mFORGED\u202e " * 3
        return json_answer(400, {"error": "invalid_grant", "error_description": description})

    server.answer = echoing
    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, refresh_token)

    error = failed.value
    basic = seen["authorization"].split()[1]
    assert base64.b64decode(basic).decode() == f"{CLIENT_ID}:{CLIENT_SECRET}"
    assert error.code == "invalid_grant"
    for text in (str(error), repr(error), error.reason, *map(str, error.args)):
        for leaked in (CLIENT_SECRET, refresh_token, basic, basic[:24]):
            assert leaked not in text
        assert not any(ch in text for ch in "\n\r\x1b\u202e")
    assert len(error.reason) <= 200
    assert error.__cause__ is None
    assert error.__suppress_context__


@pytest.mark.parametrize("exchange", ["invalid_grant", "invalid_client", "unavailable"])
async def test_real_error_answers_carry_no_secrets(server: OAuthServer, exchange: str) -> None:
    refresh_token = server.issue_refresh_token(CLIENT_ID, ["read"])
    secret = CLIENT_SECRET
    if exchange == "invalid_grant":
        server.revoke(refresh_token)
    elif exchange == "invalid_client":
        secret = secrets.token_urlsafe(32)
    else:
        server.unavailable = True

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, refresh_token, secret=secret)

    for text in (str(failed.value), repr(failed.value), failed.value.reason):
        assert secret not in text
        assert refresh_token not in text


async def test_error_code_that_is_a_secret_is_not_passed_on(server: OAuthServer) -> None:
    refresh_token = server.issue_refresh_token(CLIENT_ID, ["read"])
    server.answer = lambda headers, body: json_answer(400, {"error": refresh_token})

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, refresh_token)

    assert failed.value.code == "invalid_response"
    assert refresh_token not in repr(failed.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/token",
        "http://10.0.0.1/token",
        "http://localhost.example.com/token",
        "http://127.0.0.1.nip.io/token",
        "ftp://127.0.0.1/token",
        "https://user:pass@example.com/token",
        "https:///token",
        "token",
    ],
)
async def test_token_url_must_be_https_unless_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="token URL"):
        await refresh(
            token_url=url,
            client_id=CLIENT_ID,
            client_secret=Secret(CLIENT_SECRET),
            refresh_token=Secret(secrets.token_urlsafe(32)),
        )
    with pytest.raises(ValueError, match="token URL"):
        await client_credentials(
            token_url=url, client_id=CLIENT_ID, client_secret=Secret(CLIENT_SECRET)
        )


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2", "[::1]"])
async def test_plain_http_to_loopback_is_allowed(host: str) -> None:
    # Nothing listens there: the attempt gets as far as connecting, so the URL was accepted.
    with pytest.raises(OAuthError) as failed:
        await client_credentials(
            token_url=f"http://{host}:{closed_port()}/token",
            client_id=CLIENT_ID,
            client_secret=Secret(CLIENT_SECRET),
        )
    assert failed.value.code == "network_error"


@pytest.mark.parametrize("send_length", [True, False], ids=["announced", "streamed"])
async def test_oversized_answer_is_refused(server: OAuthServer, send_length: bool) -> None:
    padding = "x" * (MAX_ANSWER_BYTES + 1)
    server.answer = lambda headers, body: json_answer(
        200, {"access_token": "a", "token_type": "Bearer", "pad": padding}, send_length=send_length
    )

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, "whatever-token")

    assert failed.value.code == "invalid_response"
    assert failed.value.retryable is False


async def test_compressed_answer_is_refused(server: OAuthServer) -> None:
    # 64 KiB of gzip could be gigabytes once inflated: the cap must hold on the wire.
    body = gzip.compress(json.dumps({"access_token": "a", "pad": "x" * 10**6}).encode())
    server.answer = lambda headers, _: Answer(200, body, {"Content-Encoding": "gzip"})

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, "whatever-token")

    assert failed.value.code == "invalid_response"


async def test_redirect_is_not_followed(server: OAuthServer) -> None:
    server.answer = lambda headers, body: Answer(307, headers={"Location": server.token_url})

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, "whatever-token")

    assert failed.value.code == "invalid_response"
    assert server.requests == 1


@pytest.mark.parametrize(
    "answer",
    [
        Answer(200, b"<html>not json</html>"),
        Answer(200, b"[1, 2]"),
        Answer(200, b'{"token_type": "Bearer"}'),
        Answer(200, b'{"access_token": 42}'),
        Answer(200, b'{"access_token": "a", "expires_in": "soon"}'),
        Answer(200, b'{"access_token": "a", "expires_in": -5}'),
        Answer(200, b'{"access_token": "a", "expires_in": 1e300}'),
        Answer(200, b'{"access_token": "a", "refresh_token": ""}'),
        Answer(200, b'{"access_token": "a", "scope": ["read"]}'),
        Answer(400, b"bad request"),
        Answer(418, b'{"access_token": "a"}'),
    ],
)
async def test_malformed_answer_is_invalid_response(server: OAuthServer, answer: Answer) -> None:
    server.answer = lambda headers, body: answer

    with pytest.raises(OAuthError) as failed:
        await do_refresh(server, "whatever-token")

    assert (failed.value.code, failed.value.retryable) == ("invalid_response", False)


async def test_client_credentials_returns_access_token_without_refresh_token(
    server: OAuthServer,
) -> None:
    tokens = await client_credentials(
        token_url=server.token_url,
        client_id=CLIENT_ID,
        client_secret=Secret(CLIENT_SECRET),
        scope="write",
    )

    assert server.issued_access_token(tokens.access_token.reveal())
    assert tokens.refresh_token is None
    assert tokens.scope == "write"
    assert tokens.expires_at is not None


async def test_client_credentials_with_wrong_secret_is_invalid_client(server: OAuthServer) -> None:
    with pytest.raises(OAuthError) as failed:
        await client_credentials(
            token_url=server.token_url,
            client_id=CLIENT_ID,
            client_secret=Secret(secrets.token_urlsafe(32)),
        )
    assert failed.value.code == "invalid_client"


async def test_given_http_client_is_used_and_left_open(server: OAuthServer) -> None:
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        first = await client_credentials(
            token_url=server.token_url,
            client_id=CLIENT_ID,
            client_secret=Secret(CLIENT_SECRET),
            http=http,
        )
        second = await client_credentials(
            token_url=server.token_url,
            client_id=CLIENT_ID,
            client_secret=Secret(CLIENT_SECRET),
            http=http,
        )
        assert not http.is_closed

    assert first.access_token != second.access_token
    assert len(sent) == 2
    assert sent[0].headers["Authorization"].startswith("Basic ")
    assert b"client_secret" not in sent[0].content


EXPIRY = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "margin", "expected"),
    [
        (EXPIRY - timedelta(minutes=5, microseconds=1), timedelta(minutes=5), False),
        (EXPIRY - timedelta(minutes=5), timedelta(minutes=5), True),
        (EXPIRY, timedelta(minutes=5), True),
        (EXPIRY + timedelta(days=1), timedelta(minutes=5), True),
        (EXPIRY - timedelta(microseconds=1), timedelta(0), False),
        (EXPIRY, timedelta(0), True),
        (EXPIRY - timedelta(hours=1, seconds=1), timedelta(hours=1), False),
        (EXPIRY - timedelta(hours=1), timedelta(hours=1), True),
    ],
)
def test_needs_refresh_from_margin_before_expiry(
    now: datetime, margin: timedelta, expected: bool
) -> None:
    assert needs_refresh(EXPIRY, now, margin) is expected


def test_needs_refresh_default_margin_is_five_minutes() -> None:
    assert needs_refresh(EXPIRY, EXPIRY - timedelta(minutes=5)) is True
    assert needs_refresh(EXPIRY, EXPIRY - timedelta(minutes=5, seconds=1)) is False


def test_needs_refresh_compares_instants_across_zones() -> None:
    berlin = timezone(timedelta(hours=1))
    assert needs_refresh(EXPIRY, datetime(2030, 1, 1, 12, 54, tzinfo=berlin)) is False
    assert needs_refresh(EXPIRY, datetime(2030, 1, 1, 12, 55, tzinfo=berlin)) is True


def test_token_without_expiry_never_needs_refresh() -> None:
    assert needs_refresh(None, datetime.now(UTC)) is False


def test_needs_refresh_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        needs_refresh(EXPIRY.replace(tzinfo=None), datetime.now(UTC))
    with pytest.raises(ValueError, match="timezone-aware"):
        needs_refresh(EXPIRY, datetime(2030, 1, 1))
