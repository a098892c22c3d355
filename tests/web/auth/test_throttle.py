from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bastion.web.app import create_app
from tests.web.auth.conftest import Answers, Console, add_user
from tests.web.conftest import make_settings, serving


async def test_after_the_allowed_failures_an_address_gets_429_with_retry_after(
    console: Console,
) -> None:
    for _ in range(5):
        assert (await console.sign_in(password="wrong password here")).status_code == 401
    throttled = await console.sign_in()  # even the right password
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 300
    assert "__Host-bastion_session" not in console.http.cookies


async def test_a_throttled_post_draws_no_captcha_and_spends_its_token(console: Console) -> None:
    for _ in range(5):
        await console.sign_in(password="wrong password here")
    form = await console.form()
    drawn = len(console.answers.issued)
    throttled = await console.sign_in(form=form)
    assert throttled.status_code == 429
    assert len(console.answers.issued) == drawn  # a flood gets no CPU-costly pictures
    assert 'name="csrf_token"' not in throttled.text
    forged = await console.http.post("/login", data={"csrf_token": "forged", "username": "x"})
    assert forged.status_code == 429  # the throttle answers before anything costlier
    assert (await console.sign_in(form=form)).status_code == 429  # token already spent


@pytest.fixture
async def behind_proxy(base_env: dict[str, str]) -> AsyncIterator[Console]:
    """Bastion behind one trusted proxy, which appends the peer it saw."""
    await add_user(base_env)
    answers = Answers()
    settings = make_settings({**base_env, "BASTION_PROXY_TRUST_COUNT": "1"})
    async with serving(
        create_app(settings, captcha_answers=answers), base_url="https://bastion.test"
    ) as http:
        yield Console(http, answers)


async def test_a_forged_x_forwarded_for_does_not_reset_the_count(behind_proxy: Console) -> None:
    for n in range(6):
        forged = {"x-forwarded-for": f"10.9.{n}.1, 203.0.113.50"}
        response = await behind_proxy.sign_in("other", "wrong password here", headers=forged)
    assert response.status_code == 429


async def test_one_account_is_protected_across_many_addresses(behind_proxy: Console) -> None:
    for n in range(5):
        via = {"x-forwarded-for": f"198.51.100.{n}"}
        failed = await behind_proxy.sign_in(password="wrong password here", headers=via)
        assert failed.status_code == 401
    fresh_address = {"x-forwarded-for": "198.51.100.200"}
    assert (await behind_proxy.sign_in(headers=fresh_address)).status_code == 429


async def test_a_success_clears_the_short_window(console: Console) -> None:
    for _ in range(4):
        await console.sign_in(password="wrong password here")
    assert (await console.sign_in()).status_code == 303
    console.http.cookies.clear()
    for _ in range(4):
        assert (await console.sign_in(password="wrong password here")).status_code == 401
