"""Sign-in, captcha and sign-out pages."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bastion.audit.chain import hash_value
from bastion.web import auditing
from bastion.web.access import declare
from bastion.web.auth import captcha_store, login_tokens
from bastion.web.auth.csrf import origin_problem, token_problem
from bastion.web.auth.guard import cookie_name, current_session
from bastion.web.auth.redirects import safe_next
from bastion.web.forms import read_form
from bastion.web.middleware.client_ip import client_ip
from bastion.web.templates import templates

if TYPE_CHECKING:
    from bastion.web.app import Services

security_log = logging.getLogger("bastion.security.auth")


# One message for every credential failure: never which of user, password or captcha.
FAILED = "Sign-in failed: check the username, the password and the characters in the picture."
EXPIRED = "The sign-in form expired. Please try again."
THROTTLED = "Too many failed attempts. Try again in {seconds} seconds."
PAGE_LOADS_PER_IP = "30/minute"  # each page load draws a captcha (CPU)

_FIELD_LIMITS = {"username": 256, "password": 1024, "captcha": 64, "next": 2000}


async def _login_form(
    request: Request,
    *,
    status: int = 200,
    message: str = "",
    next_path: str = "/",
    headers: dict[str, str] | None = None,
) -> Response:
    services = request.state.services
    if not await services.stores.limiter.hit(PAGE_LOADS_PER_IP, "login-page", client_ip(request)):
        raise HTTPException(429, "too many requests", headers={"Retry-After": "60"})
    token = await login_tokens.issue(services.stores.kv, services.settings.login_csrf_ttl_seconds)
    nonce = await captcha_store.issue(services.stores.kv, services.captcha_answers)
    return templates.TemplateResponse(
        request,
        "login.html",
        {"login_token": token, "captcha_nonce": nonce, "next": next_path, "message": message},
        status_code=status,
        headers=headers,
    )


def _cookie_flags(services: Services) -> dict[str, Any]:
    # Script cannot read it, other sites' top-level POSTs do not carry it, and with
    # `__Host-` the browser insists on Secure, Path=/ and no Domain.
    return {
        "path": "/",
        "secure": services.settings.session_cookie_secure,
        "httponly": True,
        "samesite": "lax",
    }


@declare("public")
async def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if await current_session(request) is not None:
        return RedirectResponse(next_path, status_code=303)
    return await _login_form(request, next_path=next_path)


@declare("public")
async def login(request: Request) -> Response:
    services = request.state.services
    kv = services.stores.kv
    form = await read_form(request)
    for name, limit in _FIELD_LIMITS.items():
        if len(form.get(name, "")) > limit:
            raise HTTPException(400, f"field {name!r} is longer than {limit} characters")
    address = client_ip(request)
    username = form.get("username", "")
    next_path = safe_next(form.get("next"))

    # The token and the captcha are spent whatever happens next, so a captured form
    # cannot be replayed.
    token_ok = await login_tokens.consume(kv, form.get("csrf_token"))
    wait = await services.throttle.retry_after(address, username)
    if wait is not None:
        await captcha_store.discard(kv, form.get("captcha_nonce"))
        security_log.warning("sign-in throttled for %r from %s (%s s)", username, address, wait)
        # No new form here: drawing a captcha for every throttled post would hand a
        # flood the CPU that the throttle exists to protect.
        return templates.TemplateResponse(
            request,
            "throttled.html",
            {"message": THROTTLED.format(seconds=wait)},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    if not token_ok:
        await captcha_store.discard(kv, form.get("captcha_nonce"))
        security_log.warning(
            "sign-in refused from %s: login token missing, reused or expired", address
        )
        return await _login_form(request, status=400, message=EXPIRED, next_path=next_path)

    # The captcha gates the expensive password hash; a wrong one waits as long as a
    # hash would, so timing does not tell a bot which check failed.
    captcha_ok = await captcha_store.verify(kv, form.get("captcha_nonce"), form.get("captcha"))
    if captcha_ok:
        user = await services.credentials.check(username, form.get("password", ""))
    else:
        user = None
        await services.credentials.pretend()
    if not captcha_ok or user is None:
        await services.throttle.failed(address, username)
        reason = "wrong captcha" if not captcha_ok else "wrong username or password"
        security_log.warning("sign-in failed for %r from %s: %s", username, address, reason)
        # Throttled attempts above are not recorded one by one: a flood must not turn
        # into a flood of audit writes. The failures that led to the throttle are.
        # What was typed as a username is sometimes a password typed into the wrong
        # field: the trail keeps its HMAC (`bastion audit hash NAME` finds it).
        typed = hash_value(services.audit.keyring, username)
        await auditing.record(
            request,
            "auth.sign_in",
            "anonymous",
            outcome="failure",
            reason=reason,
            details={"username": typed},
        )
        return await _login_form(request, status=401, message=FAILED, next_path=next_path)

    await services.throttle.succeeded(address, username)
    previous = request.cookies.get(cookie_name(services.settings))
    if previous:
        await services.sessions.delete(previous)
    session = await services.sessions.create(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        client_ip=address,
        user_agent=request.headers.get("user-agent", ""),
    )
    security_log.info("sign-in succeeded for %r from %s", user.username, address)
    await auditing.record(request, "auth.sign_in", f"user:{user.username}")
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(cookie_name(services.settings), session.id, **_cookie_flags(services))
    return response


@declare("public")
async def refresh_captcha(request: Request) -> Response:
    kv = request.state.services.stores.kv
    form = await read_form(request)
    if not await login_tokens.consume(kv, form.get("csrf_token")):
        raise HTTPException(400, "login token missing, reused or expired")
    await captcha_store.discard(kv, form.get("captcha_nonce"))
    token = await login_tokens.issue(kv, request.state.services.settings.login_csrf_ttl_seconds)
    nonce = await captcha_store.issue(kv, request.state.services.captcha_answers)
    return JSONResponse({"csrf_token": token, "captcha_nonce": nonce})


@declare("public")
async def captcha_image(request: Request) -> Response:
    kind = request.path_params["kind"]
    data = await captcha_store.image(
        request.state.services.stores.kv, request.path_params["nonce"], kind
    )
    if data is None:
        raise HTTPException(404, "no such captcha")
    media_type = "image/png" if kind == "png" else "image/svg+xml"
    return Response(data, media_type=media_type, headers={"cache-control": "no-store"})


@declare("signed-in")
async def logout(request: Request) -> Response:
    services = request.state.services
    session = await current_session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    presented = request.headers.get("x-csrf-token")
    if presented is None and request.headers.get("content-type"):
        presented = (await read_form(request)).get("csrf_token")
    problem = origin_problem(request) or token_problem(session.csrf_token, presented)
    if problem is not None:
        security_log.warning(
            "sign-out refused for %r from %s: %s", session.username, client_ip(request), problem
        )
        await auditing.record(
            request,
            "auth.csrf_rejected",
            f"user:{session.username}",
            target=request.url.path,
            outcome="denied",
            reason=problem,
        )
        raise HTTPException(403, problem)
    await services.sessions.delete(session.id)
    security_log.info("signed out %r from %s", session.username, client_ip(request))
    await auditing.record(request, "auth.sign_out", f"user:{session.username}")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(cookie_name(services.settings), **_cookie_flags(services))
    return response


routes = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/login/captcha", refresh_captcha, methods=["POST"]),
    Route("/login/captcha/{nonce}.{kind}", captcha_image, methods=["GET"]),
    Route("/logout", logout, methods=["POST"]),
]
