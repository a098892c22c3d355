from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from bastion.accounts.users import create_user
from bastion.db import Database
from bastion.web.app import create_app
from bastion.web.auth.captcha import new_answer
from tests.web.conftest import make_settings, serving

PASSWORD = "correct horse battery staple"


@dataclass
class Answers:
    """The injected captcha provider: real answers, recorded so the test can type them."""

    issued: list[str] = field(default_factory=list)

    def __call__(self) -> str:
        answer = new_answer()
        self.issued.append(answer)
        return answer


@dataclass
class LoginForm:
    token: str
    nonce: str
    answer: str


@dataclass
class Console:
    http: httpx.AsyncClient
    answers: Answers

    async def form(self, path: str = "/login") -> LoginForm:
        page = await self.http.get(path)
        assert page.status_code == 200, page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        nonce = re.search(r'name="captcha_nonce" value="([^"]+)"', page.text)
        assert token and nonce
        return LoginForm(token[1], nonce[1], self.answers.issued[-1])

    async def sign_in(
        self,
        username: str = "admin",
        password: str = PASSWORD,
        *,
        form: LoginForm | None = None,
        captcha: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: str,
    ) -> httpx.Response:
        form = form or await self.form()
        data = {
            "csrf_token": form.token,
            "captcha_nonce": form.nonce,
            "captcha": form.answer if captcha is None else captcha,
            "username": username,
            "password": password,
            **extra,
        }
        return await self.http.post("/login", data=data, headers=headers)


async def add_user(env: dict[str, str], name: str = "admin", *, admin: bool = True) -> None:
    settings = make_settings(env)
    db = Database(settings.effective_database_url)
    try:
        async with db.transaction() as session:
            await create_user(session, name, PASSWORD, is_admin=admin)
    finally:
        await db.dispose()


@pytest.fixture
async def console(base_env: dict[str, str]) -> AsyncIterator[Console]:
    await add_user(base_env)
    answers = Answers()
    app = create_app(make_settings(base_env), captcha_answers=answers)
    async with serving(app, base_url="https://bastion.test") as http:
        yield Console(http, answers)
    await asyncio.sleep(0)
