"""Two `bastion serve` processes on one Redis behave as one server for sign-in."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningBastion, bastion_env, running_bastion

COOKIE = "bastion_session"


@pytest.fixture
def pair(tmp_path: Path, redis_url: str) -> Iterator[tuple[RunningBastion, RunningBastion]]:
    env, password = bastion_env(tmp_path, BASTION_REDIS_URL=redis_url)
    with (
        running_bastion(env, password, tmp_path, "a") as a,
        running_bastion(env, password, tmp_path, "b") as b,
    ):
        yield a, b


def sign_in(server: RunningBastion, password: str) -> httpx.Response:
    with httpx.Client(base_url=server.url) as http:
        page = http.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        nonce = re.search(r'name="captcha_nonce" value="([^"]+)"', page.text)
        assert token and nonce
        return http.post(
            "/login",
            data={
                "csrf_token": token[1],
                "captcha_nonce": nonce[1],
                "captcha": server.last_captcha_answer(),
                "username": "admin",
                "password": password,
            },
        )


def test_a_session_made_on_one_server_works_and_ends_on_the_other(
    pair: tuple[RunningBastion, RunningBastion],
) -> None:
    a, b = pair
    signed_in = sign_in(a, a.admin_password)
    assert signed_in.status_code == 303
    cookie = {COOKIE: signed_in.cookies[COOKIE]}
    home = httpx.get(b.url + "/", cookies=cookie)
    assert home.status_code == 200
    assert "Signed in as admin" in home.text
    token = home.text.split('name="csrf-token" content="')[1].split('"')[0]
    out = httpx.post(b.url + "/logout", cookies=cookie, headers={"x-csrf-token": token})
    assert out.status_code == 303
    assert httpx.get(a.url + "/", cookies=cookie).status_code == 303


def test_the_sign_in_throttle_counts_across_both_servers(
    pair: tuple[RunningBastion, RunningBastion],
) -> None:
    a, b = pair
    for attempt in range(5):
        server = a if attempt % 2 else b
        assert sign_in(server, "wrong password here").status_code == 401
    for server in (a, b):
        throttled = sign_in(server, server.admin_password)
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) >= 1
