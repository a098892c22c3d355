"""A real OAuth 2.0 token endpoint on loopback, for tests.

oauthlib's server does the protocol (refresh_token and client_credentials grants, RFC 6749
error answers); a `http.server` thread serves it on 127.0.0.1. Clients, tokens and revocations
live in memory. Refresh tokens rotate: each refresh issues a new one and revokes the old.

    with OAuthServer() as server:
        server.register_client("app", "s3cret", ["read"])
        refresh_token = server.issue_refresh_token("app", ["read"])
        ... post to server.token_url ...

`unavailable = True` answers 503 (oauthlib's own "temporarily_unavailable"); `answer` replaces
the token endpoint's answer with a canned one (huge, malformed, redirecting, hostile).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote_plus

from oauthlib.common import Request as OAuthRequest  # type: ignore[import-untyped]
from oauthlib.oauth2 import RequestValidator, Server  # type: ignore[import-untyped]

TOKEN_PATH = "/token"
MAX_REQUEST_BODY = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """A canned HTTP answer. `send_length=False` leaves out Content-Length: the body then ends
    when the connection closes, so its size is known only by reading it."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    send_length: bool = True
    delay: float = 0.0


@dataclass
class _Client:
    client_id: str
    secret: str
    scopes: frozenset[str]
    grant_types: frozenset[str]


@dataclass
class _RefreshToken:
    client_id: str
    scopes: list[str]
    revoked: bool = False


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """client_id and secret from an HTTP Basic header (RFC 6749 §2.3.1: each form-encoded)."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


class _Validator(RequestValidator):  # type: ignore[misc]
    """In-memory clients and tokens; every method is called from the server's threads."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.clients: dict[str, _Client] = {}
        self.refresh_tokens: dict[str, _RefreshToken] = {}
        self.access_tokens: dict[str, str] = {}  # token -> client_id
        self.rotate = True

    def client_authentication_required(
        self, request: OAuthRequest, *args: Any, **kwargs: Any
    ) -> bool:
        return True

    def authenticate_client(self, request: OAuthRequest, *args: Any, **kwargs: Any) -> bool:
        credentials = basic_credentials(request.headers.get("Authorization"))
        # One method per request (RFC 6749 §2.3): a secret in the body as well is refused.
        if credentials is None or getattr(request, "client_secret", None) is not None:
            return False
        client_id, secret = credentials
        with self.lock:
            client = self.clients.get(client_id)
        if client is None:
            return False
        if not hmac.compare_digest(secret.encode(), client.secret.encode()):
            return False
        request.client = client
        return True

    def validate_grant_type(
        self,
        client_id: str,
        grant_type: str,
        client: _Client,
        request: OAuthRequest,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        return grant_type in client.grant_types

    def get_default_scopes(
        self, client_id: str, request: OAuthRequest, *args: Any, **kwargs: Any
    ) -> list[str]:
        with self.lock:
            return sorted(self.clients[client_id].scopes)

    def validate_scopes(
        self,
        client_id: str,
        scopes: list[str],
        client: _Client,
        request: OAuthRequest,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        return set(scopes) <= client.scopes

    def validate_refresh_token(
        self,
        refresh_token: str,
        client: _Client,
        request: OAuthRequest,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        with self.lock:
            known = self.refresh_tokens.get(refresh_token)
        # A refresh token is bound to the client it was issued to (RFC 6749 §10.4).
        return known is not None and not known.revoked and known.client_id == client.client_id

    def get_original_scopes(
        self, refresh_token: str, request: OAuthRequest, *args: Any, **kwargs: Any
    ) -> list[str]:
        with self.lock:
            return list(self.refresh_tokens[refresh_token].scopes)

    def rotate_refresh_token(self, request: OAuthRequest) -> bool:
        return self.rotate

    def save_bearer_token(
        self, token: dict[str, Any], request: OAuthRequest, *args: Any, **kwargs: Any
    ) -> None:
        client_id = request.client.client_id
        with self.lock:
            self.access_tokens[token["access_token"]] = client_id
            new_refresh = token.get("refresh_token")
            old_refresh = request.refresh_token if request.grant_type == "refresh_token" else None
            if new_refresh and new_refresh != old_refresh:
                self.refresh_tokens[new_refresh] = _RefreshToken(client_id, list(request.scopes))
                if old_refresh in self.refresh_tokens:
                    self.refresh_tokens[old_refresh].revoked = True  # rotation revokes the old one


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = 5  # a stuck test client cannot hold a server thread forever

    def do_POST(self) -> None:
        owner = self.server.owner
        owner.count_request()
        length = int(self.headers.get("Content-Length") or 0)
        if self.path.split("?")[0] != TOKEN_PATH or length > MAX_REQUEST_BODY:
            self._send(Answer(404))
            return
        body = self.rfile.read(length).decode("utf-8", "replace")
        headers = dict(self.headers.items())
        answer = owner.answer
        if answer is not None:
            self._send(answer(headers, body))
            return
        uri = owner.token_url.removesuffix(TOKEN_PATH) + self.path
        out_headers, out_body, status = owner.endpoint.create_token_response(
            uri, "POST", body, headers
        )
        self._send(
            Answer(status, out_body.encode(), {"Content-Type": "application/json", **out_headers})
        )

    def do_GET(self) -> None:
        self.server.owner.count_request()
        self._send(Answer(405))

    def _send(self, answer: Answer) -> None:
        if answer.delay:
            time.sleep(answer.delay)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if answer.send_length:
            self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the request threads: none outlives a test
    block_on_close = True

    def __init__(self, owner: OAuthServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class OAuthServer:
    """Context manager: a running token endpoint at `token_url` until the block ends."""

    def __init__(self, *, token_lifetime: int = 3600) -> None:
        self._validator = _Validator()
        self.endpoint = Server(self._validator, token_expires_in=token_lifetime)
        self.answer: Callable[[dict[str, str], str], Answer] | None = None
        self._requests = 0
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._http = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.01},  # shutdown() waits up to one poll
            name="oauth-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._http is not None and self._thread is not None
        self._http.shutdown()
        self._thread.join()
        self._http.server_close()

    @property
    def token_url(self) -> str:
        assert self._http is not None, "use OAuthServer as a context manager"
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}{TOKEN_PATH}"

    @property
    def requests(self) -> int:
        with self._validator.lock:
            return self._requests

    def count_request(self) -> None:
        with self._validator.lock:
            self._requests += 1

    @property
    def unavailable(self) -> bool:
        return not self.endpoint.available

    @unavailable.setter
    def unavailable(self, value: bool) -> None:
        self.endpoint.available = not value  # oauthlib then answers 503 temporarily_unavailable

    @property
    def rotate_refresh_tokens(self) -> bool:
        return self._validator.rotate

    @rotate_refresh_tokens.setter
    def rotate_refresh_tokens(self, value: bool) -> None:
        # Off: a refresh answer carries no refresh_token and the old one stays valid.
        self._validator.rotate = value
        self.endpoint.refresh_grant.issue_new_refresh_tokens = value

    def register_client(
        self,
        client_id: str,
        secret: str,
        scopes: Iterable[str],
        grant_types: Iterable[str] = ("refresh_token", "client_credentials"),
    ) -> None:
        with self._validator.lock:
            self._validator.clients[client_id] = _Client(
                client_id, secret, frozenset(scopes), frozenset(grant_types)
            )

    def issue_refresh_token(self, client_id: str, scopes: Iterable[str]) -> str:
        """A refresh token as if the client had gone through an authorization grant."""
        token = secrets.token_urlsafe(32)
        with self._validator.lock:
            assert client_id in self._validator.clients, f"unknown client {client_id}"
            self._validator.refresh_tokens[token] = _RefreshToken(client_id, list(scopes))
        return token

    def revoke(self, refresh_token: str) -> None:
        with self._validator.lock:
            self._validator.refresh_tokens[refresh_token].revoked = True

    def is_live_refresh_token(self, refresh_token: str) -> bool:
        with self._validator.lock:
            known = self._validator.refresh_tokens.get(refresh_token)
            return known is not None and not known.revoked

    def issued_access_token(self, access_token: str) -> bool:
        with self._validator.lock:
            return access_token in self._validator.access_tokens
