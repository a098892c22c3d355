from __future__ import annotations

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


async def test_a_forged_x_forwarded_for_does_not_reset_the_count(base_env: dict[str, str]) -> None:
    await add_user(base_env)
    answers = Answers()
    # One trusted proxy: it appends the real peer; whatever the client put before is ignored.
    app = create_app(
        make_settings({**base_env, "BASTION_PROXY_TRUST_COUNT": "1"}), captcha_answers=answers
    )
    async with serving(app, base_url="https://bastion.test") as http:
        console = Console(http, answers)
        for n in range(6):
            forged = {"x-forwarded-for": f"10.9.{n}.1, 203.0.113.50"}
            response = await console.sign_in("other", "wrong password here", headers=forged)
        assert response.status_code == 429


async def test_one_account_is_protected_across_many_addresses(base_env: dict[str, str]) -> None:
    await add_user(base_env)
    answers = Answers()
    app = create_app(
        make_settings({**base_env, "BASTION_PROXY_TRUST_COUNT": "1"}), captcha_answers=answers
    )
    async with serving(app, base_url="https://bastion.test") as http:
        console = Console(http, answers)
        for n in range(5):
            via = {"x-forwarded-for": f"198.51.100.{n}"}
            assert (
                await console.sign_in(password="wrong password here", headers=via)
            ).status_code == 401
        fresh_address = {"x-forwarded-for": "198.51.100.200"}
        assert (await console.sign_in(headers=fresh_address)).status_code == 429


async def test_a_success_clears_the_short_window(console: Console) -> None:
    for _ in range(4):
        await console.sign_in(password="wrong password here")
    assert (await console.sign_in()).status_code == 303
    console.http.cookies.clear()
    for _ in range(4):
        assert (await console.sign_in(password="wrong password here")).status_code == 401
