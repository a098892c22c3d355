"""The one place where errors become HTTP answers: `{"error": code, "message": text}`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from bastion.errors import (
    BastionError,
    Conflict,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)

log = logging.getLogger("bastion.http")

_STATUS: list[tuple[type[BastionError], int, str]] = [
    (InvalidInput, 400, "invalid_input"),
    (Unauthenticated, 401, "unauthorized"),
    (PermissionDenied, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (MethodNotAllowed, 405, "method_not_allowed"),
    (Conflict, 409, "conflict"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (UnsupportedMediaType, 415, "unsupported_media_type"),
    (Unprocessable, 422, "unprocessable"),
    (TooManyRequests, 429, "too_many_requests"),
    (Unavailable, 503, "unavailable"),
]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


async def _bastion_error(request: Request, exc: Exception) -> JSONResponse:
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            body: dict[str, Any] = {**exc.details(), **error_body(code, str(exc))}
            return JSONResponse(body, status_code=status, headers=exc.headers())
    log.error("unmapped %s: %s", type(exc).__name__, exc)
    return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Name the field and the rule, never echo the submitted value (it may be a secret).
    problems = [
        f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
    ]
    return JSONResponse(error_body("invalid_input", "; ".join(problems)), status_code=422)


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(BastionError, _bastion_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
