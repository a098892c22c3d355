from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port, missing_service, port_open, stop_process, wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class RunningBastion:
    url: str
    data_dir: Path
    answers_file: Path
    admin_password: str

    def last_captcha_answer(self) -> str:
        return self.answers_file.read_text().splitlines()[-1]

    def log_text(self) -> str:
        return (self.data_dir / "logs" / "bastion.log").read_text()


def bastion_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], str]:
    password = secrets.token_urlsafe(16)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        "BASTION_DATA_DIR": str(tmp_path / "data"),
        "BASTION_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "BASTION_ADMIN_PASSWORD": password,
        # The browser talks to http://127.0.0.1: cookies cannot be Secure there.
        "BASTION_SESSION_COOKIE_SECURE": "false",
        "BASTION_ACKNOWLEDGE_PLAIN_HTTP": "true",
        **extra,
    }
    subprocess.run(
        [sys.executable, "-m", "bastion", "init"],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    return env, password


@contextlib.contextmanager
def running_bastion(
    env: dict[str, str], password: str, workdir: Path, name: str = "server"
) -> Iterator[RunningBastion]:
    """A real server process (the production app) with a recording captcha provider."""
    port = free_port()
    answers = workdir / f"{name}-answers.txt"
    answers.touch()
    with (workdir / f"{name}.err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.server", str(port), str(answers)],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_until(lambda: port_open(port), timeout=30, what="bastion server")
            yield RunningBastion(
                f"http://127.0.0.1:{port}", Path(env["BASTION_DATA_DIR"]), answers, password
            )
        finally:
            stop_process(proc)


@pytest.fixture
def bastion(tmp_path: Path) -> Iterator[RunningBastion]:
    env, password = bastion_env(tmp_path)
    with running_bastion(env, password, tmp_path) as server:
        yield server


@pytest.fixture(scope="session")
def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    missing_service("Chromium (Debian package chromium)")
    raise AssertionError("unreachable")


@pytest.fixture
def browser(chromium_path: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
