"""Reading small urlencoded forms from untrusted clients: size capped while reading."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request

MAX_FORM_BYTES = 8 * 1024
MAX_FIELDS = 20


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (Content-Length or not)."""
    declared = request.headers.get("content-length")
    # isascii: "²".isdigit() is true, and int() of it fails.
    if declared is not None and (
        not (declared.isascii() and declared.isdigit()) or int(declared) > limit
    ):
        raise HTTPException(413, f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, *, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(415, "expected an application/x-www-form-urlencoded form")
    body = await read_body(request, limit)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise HTTPException(400, f"field {name!r} given twice")
        form[name] = value
    return form
