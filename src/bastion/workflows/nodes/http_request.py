"""The `http_request` node's transport: one outbound HTTP request under the egress policy.

The destination is another party's server and the URL is a workflow author's choice, so
everything here is bounded: where the request may connect (the egress policy, re-checked on
every redirect hop and pinned to the checked address), how long it may take (one deadline
for the whole exchange) and how much it may send back (counted after decompression). Error
messages name the host and the kind of failure, never a header value (it may be a
credential) nor any of the response body.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Literal

import httpx
from pydantic import Field

from bastion.workflows.egress import EgressDenied, EgressPolicy
from bastion.workflows.errors import Failure, NodeFailed
from bastion.workflows.nodes.base import NodeContext, NodeType, Params

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Read-only by definition (RFC 9110 "safe"): only these may run again after a crash.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_TIMEOUT = 300.0
MAX_RESPONSE_BYTES = 16 * 2**20
MAX_REDIRECTS = 5

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field name
# Printable ASCII and tab only: CR/LF would start a header of the attacker's choosing.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
# Set from the URL and the body: a caller's value would point Host at another virtual host
# than the one checked, or desynchronise the framing (request smuggling).
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# All that follows a redirect to another origin: any other header may be a credential
# meant only for the first server (Authorization, Cookie, X-Api-Key, ...).
_PORTABLE = frozenset({"accept", "accept-language", "user-agent", "content-type"})


@dataclass(frozen=True)
class OutboundRequest:
    method: str  # GET POST PUT PATCH DELETE HEAD OPTIONS
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # dict or list: JSON; str: text; None: no body
    timeout: float = 10.0  # seconds, for everything: resolving, every hop, reading
    max_response_bytes: int = 1 * 2**20
    follow_redirects: bool = False


def new_client(*, verify: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """The client `send` expects; create one and share it.

    trust_env=False: HTTP(S)_PROXY / ALL_PROXY from the environment would route requests
    through a proxy that connects wherever it likes, past the egress policy, and
    SSL_CERT_FILE / SSL_CERT_DIR would replace the CAs trusted for TLS. Cookies are
    refused: a shared jar would carry one workflow's session into another's requests.
    HTTP/2 stays off (httpx's default): a multiplexed connection would serve requests for
    other names at the same address without checking their certificate. `verify`: the
    trusted CAs (default: httpx's certifi bundle).
    """
    client = httpx.AsyncClient(
        trust_env=False, follow_redirects=False, verify=True if verify is None else verify
    )
    # Set on the client's own jar: httpx copies a jar handed to it into one of its own.
    client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return client


async def send(
    request: OutboundRequest, egress: EgressPolicy, client: httpx.AsyncClient
) -> dict[str, Any]:
    """Perform `request`; return {"status", "headers", "body"} for any status, 2xx or not.

    `client` must come from `new_client` (or be built the same way: trust_env=False, no
    cookies, no HTTP/2). `body` is the parsed JSON when the answer says it is JSON and
    parses, else text (UTF-8, undecodable bytes replaced). Raises NodeFailed (EgressDenied
    for a refused destination) with a message naming the host and the cause.
    """
    if client.trust_env:
        raise ValueError("send() needs a client with trust_env=False; see new_client()")
    method = request.method.upper()
    if method not in METHODS:
        raise NodeFailed(f"HTTP method must be one of {', '.join(sorted(METHODS))}")
    if not 0 < request.timeout < float("inf"):
        raise NodeFailed("HTTP timeout must be a positive number of seconds")
    url = _checked_url(request.url)
    headers = _checked_headers(request.headers)
    content = _encode_body(request.body, headers)
    hops = MAX_REDIRECTS if request.follow_redirects else 0
    host = _host(url)
    try:
        async with asyncio.timeout(request.timeout):
            for _ in range(hops + 1):
                host = _host(url)
                address = await egress.resolve(host, _port(url))
                response = await client.send(
                    _pinned(method, url, address, headers, content), stream=True
                )
                try:
                    if not (request.follow_redirects and response.has_redirect_location):
                        return await _answer(response, host, request.max_response_bytes)
                    method, url, headers, content = _next_hop(
                        response, method, url, headers, content
                    )
                finally:
                    await response.aclose()
            raise NodeFailed(f"{host} redirected more than {MAX_REDIRECTS} times")
    except TimeoutError:
        raise NodeFailed(
            f"request to {host} timed out after {request.timeout:g} s", Failure.TIMEOUT
        ) from None
    except httpx.HTTPError as exc:
        raise NodeFailed(_transport_failure(exc, host), Failure.NETWORK) from None


def _checked_url(text: str) -> httpx.URL:
    # Parsed by httpx, the parser that will connect: no differential between check and use.
    try:
        url = httpx.URL(text)
    except (httpx.InvalidURL, TypeError):
        raise NodeFailed("URL is not valid") from None
    if url.scheme not in ("http", "https"):
        # file://, gopher://, ... reach local files or speak raw bytes to internal services.
        raise EgressDenied("URL scheme must be http or https")
    if not url.raw_host:
        raise NodeFailed("URL has no host")
    if url.userinfo:
        # Run history and logs keep URLs; credentials belong in a header from the vault.
        raise NodeFailed("URL must not carry credentials; send them in a header")
    return url


def _checked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for name, value in headers.items():
        # Neither the bad name nor the value is echoed: either may hold a secret.
        if not (isinstance(name, str) and _TOKEN.fullmatch(name)):
            raise NodeFailed("a header name contains a character not allowed in header names")
        if not (isinstance(value, str) and _FIELD_VALUE.fullmatch(value)):
            raise NodeFailed(f"header {name} has a value with a line break or control character")
        if name.lower() in _RESERVED:
            raise NodeFailed(f"header {name} is set from the URL and body, not by the workflow")
        checked[name] = value
    return checked


def _encode_body(body: Any, headers: dict[str, str]) -> bytes | None:
    """The body as bytes; sets Content-Type unless the workflow chose one."""
    if body is None:
        return None
    if isinstance(body, dict | list):
        try:
            encoded = json.dumps(body, ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError):
            raise NodeFailed("HTTP body cannot be encoded as JSON") from None
        content_type = "application/json"
    elif isinstance(body, str):
        encoded, content_type = body.encode(), "text/plain; charset=utf-8"
    else:
        raise NodeFailed("HTTP body must be an object, a list, text or nothing")
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = content_type
    return encoded


def _host(url: httpx.URL) -> str:
    return url.raw_host.decode("ascii")  # IDNA-encoded: what DNS and TLS see


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, _host(url), _port(url)


def _pinned(
    method: str, url: httpx.URL, address: str, headers: dict[str, str], content: bytes | None
) -> httpx.Request:
    """A request to the checked address, so no second DNS answer decides where it goes
    (rebinding), that still names the host in Host and in TLS (SNI and certificate check)."""
    pinned_headers = {**headers, "Host": url.netloc.decode("ascii")}
    extensions: dict[str, Any] = {}
    if url.scheme == "https":
        extensions["sni_hostname"] = _host(url)
        # The pool keys connections by address alone: a kept-alive connection whose
        # certificate was checked for one name would later carry requests for another.
        pinned_headers["Connection"] = "close"
    return httpx.Request(
        method,
        url.copy_with(host=address),
        headers=pinned_headers,
        content=content,
        extensions=extensions,
    )


def _next_hop(
    response: httpx.Response,
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    content: bytes | None,
) -> tuple[str, httpx.URL, dict[str, str], bytes | None]:
    try:
        target = url.join(response.headers["location"])
    except httpx.InvalidURL:
        raise NodeFailed(f"{_host(url)} redirected to an invalid URL") from None
    target = _checked_url(str(target))
    # Browsers' (and httpx's) rules: 303 becomes GET, and so does POST after 301 or 302.
    status = response.status_code
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, content = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    if _origin(target) != _origin(url):  # also https -> http: headers would travel in clear
        headers = {k: v for k, v in headers.items() if k.lower() in _PORTABLE}
    return method, target, headers, content


async def _answer(response: httpx.Response, host: str, limit: int) -> dict[str, Any]:
    body = await _read_body(response, host, limit)
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    parsed: Any = None
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            parsed = None  # mislabelled or too deeply nested: hand it over as text
    return {
        "status": response.status_code,
        "headers": dict(response.headers.items()),  # lower-case names, repeats comma-joined
        "body": body.decode("utf-8", errors="replace") if parsed is None else parsed,
    }


async def _read_body(response: httpx.Response, host: str, limit: int) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    decoder = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header
    elif encoding not in ("", "identity"):
        raise NodeFailed(f"response from {host} is compressed with other than gzip or deflate")
    body = bytearray()
    async for chunk in response.aiter_raw():
        if decoder is not None:
            # Bounded: a few KiB of gzip can inflate to gigabytes, the cap holds on output.
            try:
                chunk = decoder.decompress(chunk, limit + 1 - len(body))
            except zlib.error:
                raise NodeFailed(f"response from {host} is not valid {encoding} data") from None
        body += chunk
        if len(body) > limit:
            raise NodeFailed(f"response from {host} exceeds {_size(limit)}")
    return bytes(body)


def _size(limit: int) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"


def _transport_failure(exc: httpx.HTTPError, host: str) -> str:
    reason = ""
    cause: BaseException | None = exc
    while cause is not None:  # httpx -> httpcore -> anyio -> ssl or socket
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate of {host} is not valid: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake with {host} failed: {cause.reason}"
        if isinstance(cause, OSError) and cause.errno and not reason:
            reason = f": {os.strerror(cause.errno)}"  # "Connection refused", not the socket text
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {host}{reason}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"{host} sent a malformed HTTP response"
    return f"connection to {host} failed ({type(exc).__name__})"


class HttpRequestParams(Params):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    url: str = Field(min_length=1, max_length=8192)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    timeout: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT)
    max_response_bytes: int = Field(default=2**20, ge=0, le=MAX_RESPONSE_BYTES)
    follow_redirects: bool = False
    fail_on_status: bool = False  # a 4xx or 5xx answer fails the node (and may be retried)


async def _http_request(params: HttpRequestParams, context: NodeContext) -> Any:
    request = OutboundRequest(**params.model_dump(exclude={"fail_on_status"}))
    answer = await send(request, context.runtime.egress, context.runtime.http)
    status = answer["status"]
    if params.fail_on_status and status >= 400:
        failure = Failure.HTTP_5XX if status >= 500 else Failure.HTTP_4XX
        raise NodeFailed(f"{_host(httpx.URL(params.url))} answered {status}", failure)
    return answer


HTTP_REQUEST = NodeType(
    "http_request",
    HttpRequestParams,
    _http_request,
    resumable=lambda params: params.method in SAFE_METHODS,
)
