from __future__ import annotations

import pytest

from bastion.web.auth.routes import EXPIRED, FAILED
from tests.web.auth.conftest import Console

COOKIE = "__Host-bastion_session"


async def test_right_details_give_a_hardened_server_side_session(console: Console) -> None:
    response = await console.sign_in()
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert attribute.lower() in cookie.lower()
    assert "domain" not in cookie.lower()
    session_id = console.http.cookies[COOKIE]
    assert len(session_id) == 43  # a random id, nothing else
    home = await console.http.get("/")
    assert home.status_code == 200
    assert "Signed in as admin" in home.text
    assert home.headers["cache-control"] == "no-store"


async def test_signing_in_always_issues_a_new_session_id(console: Console) -> None:
    await console.sign_in()
    first = console.http.cookies[COOKIE]
    console.http.cookies.clear()
    form = await console.form()
    console.http.cookies.set(COOKIE, first, domain="bastion.test")  # e.g. a planted id
    await console.sign_in(form=form)
    second = console.http.cookies[COOKIE]
    assert first != second
    console.http.cookies.set(COOKIE, first, domain="bastion.test")
    assert (await console.http.get("/")).status_code == 303  # the old one was ended


async def test_sign_out_revokes_the_session_so_a_copied_cookie_stops_working(
    console: Console,
) -> None:
    await console.sign_in()
    copied = console.http.cookies[COOKIE]
    page = await console.http.get("/")
    token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    out = await console.http.post("/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert out.headers["location"] == "/login"
    console.http.cookies.clear()
    console.http.cookies.set(COOKIE, copied, domain="bastion.test")
    again = await console.http.get("/")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/login")


@pytest.mark.parametrize(
    ("username", "password", "captcha"),
    [
        ("admin", "wrong password here", None),
        ("nobody", "correct horse battery staple", None),
        ("admin", "correct horse battery staple", "WRONG"),
    ],
    ids=["wrong-password", "unknown-user", "wrong-captcha"],
)
async def test_a_failure_never_says_which_part_was_wrong(
    console: Console, username: str, password: str, captcha: str | None
) -> None:
    response = await console.sign_in(username, password, captcha=captcha)
    assert response.status_code == 401
    assert FAILED.replace("'", "&#39;") in response.text
    assert COOKIE not in console.http.cookies


async def test_the_login_token_works_once_whatever_the_outcome(console: Console) -> None:
    form = await console.form()
    failed = await console.sign_in(password="wrong password here", form=form)
    assert failed.status_code == 401
    replay = await console.sign_in(form=form)
    assert replay.status_code == 400
    assert EXPIRED in replay.text
    assert COOKIE not in console.http.cookies


@pytest.mark.parametrize("token", ["", "x" * 43, "not a token", "é" * 43])
async def test_a_missing_or_forged_login_token_is_refused(console: Console, token: str) -> None:
    form = await console.form()
    form.token = token
    response = await console.sign_in(form=form)
    assert response.status_code == 400
    assert COOKIE not in console.http.cookies


async def test_a_captcha_allows_one_attempt(console: Console) -> None:
    form = await console.form()
    await console.sign_in(form=form, captcha="WRONG")
    second = await console.form()
    second.nonce, second.answer = form.nonce, form.answer  # the right answer, used again
    response = await console.sign_in(form=second)
    assert response.status_code == 401


async def test_captcha_refresh_needs_a_token_and_retires_the_old_captcha(console: Console) -> None:
    form = await console.form()
    refused = await console.http.post("/login/captcha", data={"captcha_nonce": form.nonce})
    assert refused.status_code == 400
    fresh = await console.http.post(
        "/login/captcha", data={"csrf_token": form.token, "captcha_nonce": form.nonce}
    )
    assert fresh.status_code == 200
    body = fresh.json()
    assert body["captcha_nonce"] != form.nonce
    old_image = await console.http.get(f"/login/captcha/{form.nonce}.png")
    assert old_image.status_code == 404
    reused = await console.http.post(
        "/login/captcha", data={"csrf_token": form.token, "captcha_nonce": body["captcha_nonce"]}
    )
    assert reused.status_code == 400  # the token was spent by the refresh
    from tests.web.auth.conftest import LoginForm

    new_form = LoginForm(body["csrf_token"], body["captcha_nonce"], console.answers.issued[-1])
    stale = LoginForm(body["csrf_token"], form.nonce, form.answer)
    assert (await console.sign_in(form=stale)).status_code == 401
    new_form.token = (await console.form()).token
    assert (await console.sign_in(form=new_form)).status_code == 303


async def test_captcha_pictures_are_not_cached_and_the_svg_holds_no_text(console: Console) -> None:
    form = await console.form()
    png = await console.http.get(f"/login/captcha/{form.nonce}.png")
    svg = await console.http.get(f"/login/captcha/{form.nonce}.svg")
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    assert svg.headers["content-type"] == "image/svg+xml"
    assert png.headers["cache-control"] == svg.headers["cache-control"] == "no-store"
    assert "<text" not in svg.text
    assert form.answer not in svg.text
    assert form.answer not in png.headers.get("set-cookie", "")
    assert (await console.http.get(f"/login/captcha/{form.nonce}.gif")).status_code == 404
    assert (await console.http.get("/login/captcha/..%2f..%2fetc.png")).status_code == 404


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "/%2f%2fevil.example",
        "/%5cevil.example",
        "javascript:alert(1)",
        "%2F%2Fevil.example",
        "/%252f%252fevil",
    ],
)
async def test_next_accepts_only_paths_on_this_site(console: Console, target: str) -> None:
    response = await console.sign_in(next=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/"


async def test_next_keeps_a_local_path(console: Console) -> None:
    response = await console.sign_in(next="/runs?status=failed")
    assert response.headers["location"] == "/runs?status=failed"


async def test_logout_refuses_missing_or_wrong_csrf_and_foreign_origins(console: Console) -> None:
    await console.sign_in()
    page = await console.http.get("/")
    token = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    assert (await console.http.post("/logout", data={})).status_code == 403
    assert (await console.http.post("/logout", data={"csrf_token": "x" * 43})).status_code == 403
    foreign = await console.http.post(
        "/logout", data={"csrf_token": token}, headers={"origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    cross = await console.http.post(
        "/logout", data={"csrf_token": token}, headers={"sec-fetch-site": "cross-site"}
    )
    assert cross.status_code == 403
    assert (await console.http.get("/")).status_code == 200  # still signed in


@pytest.mark.parametrize(
    "cookie",
    [b"", b"x", b"a" * 43, b"../../etc", "\u00e9".encode() * 10, b"a" * 5000, b"\xff\xfe"],
)
async def test_a_malformed_session_cookie_is_just_not_signed_in(
    console: Console, cookie: bytes
) -> None:
    await console.sign_in()
    console.http.cookies.clear()
    response = await console.http.get("/", headers={"cookie": COOKIE.encode() + b"=" + cookie})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


async def test_bad_form_input_gets_a_clear_4xx(console: Console) -> None:
    form = await console.form()
    long = await console.sign_in(username="a" * 300, form=form)
    assert long.status_code == 400
    assert "longer than" in long.json()["message"]
    wrong_type = await console.http.post("/login", json={"username": "admin"})
    assert wrong_type.status_code == 415

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"a" * 1024

    chunked = await console.http.post(
        "/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert chunked.status_code == 413
    bad_utf8 = await console.http.post(
        "/login",
        content=b"username=%ff%fe",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert bad_utf8.status_code == 400
    # The form from before is still usable: nothing above consumed its token.
    assert (await console.sign_in(form=form)).status_code == 303
