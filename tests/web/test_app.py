from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.requests import Request

from bastion.background import BackgroundService
from bastion.config import load_settings
from bastion.execution.sandbox import Isolation
from bastion.web import health
from bastion.web.app import create_app
from bastion.web.middleware.security_headers import CONTENT_SECURITY_POLICY
from tests.services import free_port
from tests.web.conftest import make_settings, serving

BASELINE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}


def assert_hardened(headers: object) -> None:
    for name, value in BASELINE_HEADERS.items():
        assert headers[name] == value, name  # type: ignore[index]
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY


async def test_healthz_answers_with_hardened_headers(base_env: dict[str, str]) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert_hardened(response.headers)
    assert response.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in response.headers


async def test_not_found_is_json_and_hardened(base_env: dict[str, str]) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        response = await http.get("/no/such/page")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "Not Found"}
    assert_hardened(response.headers)


async def test_wrong_method_is_405_and_hardened(base_env: dict[str, str]) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        response = await http.delete("/healthz")
    assert response.status_code == 405
    assert_hardened(response.headers)


async def test_unhandled_error_is_a_bare_500_with_headers_and_a_logged_request_id(
    base_env: dict[str, str], log_file: Path
) -> None:
    app = create_app(make_settings(base_env))

    async def explode(request: Request) -> None:
        raise RuntimeError("secret internals: /etc/bastion")

    app.add_route("/explode", explode)

    async with serving(app) as http:
        response = await http.get("/explode")
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
    assert_hardened(response.headers)
    rid = response.headers["x-request-id"]
    logged = [line for line in log_file.read_text().splitlines() if "bastion.http" in line]
    assert len(logged) == 1
    assert f"[{rid}]" in logged[0]
    assert "RuntimeError: secret internals" in logged[0]


async def test_every_request_gets_its_own_request_id(base_env: dict[str, str]) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        ids = {
            (await http.get("/healthz", headers={"x-request-id": "forged"})).headers["x-request-id"]
            for _ in range(5)
        }
    assert len(ids) == 5
    assert "forged" not in ids


async def test_hsts_is_sent_when_a_trusted_proxy_saw_https(base_env: dict[str, str]) -> None:
    app = create_app(make_settings({**base_env, "BASTION_PROXY_TRUST_COUNT": "1"}))
    async with serving(app) as http:
        via_tls = await http.get(
            "/healthz", headers={"x-forwarded-for": "203.0.113.5", "x-forwarded-proto": "https"}
        )
        plain = await http.get("/healthz", headers={"x-forwarded-for": "203.0.113.5"})
    assert via_tls.headers["strict-transport-security"].startswith("max-age=")
    assert "strict-transport-security" not in plain.headers


async def test_forwarded_proto_from_an_untrusted_client_is_ignored(
    base_env: dict[str, str],
) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        response = await http.get("/healthz", headers={"x-forwarded-proto": "https"})
    assert "strict-transport-security" not in response.headers


async def test_readyz_reports_the_database(base_env: dict[str, str]) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": {"status": "ok"}},
        # CI runs as root on a kernel with namespaces: every layer of the sandbox holds.
        "sandbox": {"status": "ok", "network": True, "filesystem": True, "user": True},
    }


def test_readyz_says_when_the_code_sandbox_lacks_a_layer_without_saying_why() -> None:
    missing = Isolation(network=False, filesystem=True, user=False, notes=("unshare: EPERM",))
    assert health._sandbox(missing) == {
        "status": "degraded",
        "network": False,
        "filesystem": True,
        "user": False,
    }


async def test_readyz_reports_redis_when_configured(
    base_env: dict[str, str], redis_url: str
) -> None:
    app = create_app(make_settings({**base_env, "BASTION_REDIS_URL": redis_url}))
    async with serving(app) as http:
        response = await http.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": {"status": "ok"}, "redis": {"status": "ok"}}


async def test_readyz_is_503_when_redis_is_down(base_env: dict[str, str]) -> None:
    down = f"redis://:s3cretpw@127.0.0.1:{free_port()}/0"
    app = create_app(make_settings({**base_env, "BASTION_REDIS_URL": down}))
    async with serving(app) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["redis"]["status"] == "unavailable"
    assert "s3cretpw" not in response.text


async def test_readyz_is_503_when_the_database_is_down(base_env: dict[str, str]) -> None:
    down = f"postgresql://bastion:pgsecret@127.0.0.1:{free_port()}/bastion"
    settings = load_settings({**base_env, "BASTION_DATABASE_URL": down}).settings
    async with serving(create_app(settings)) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"status": "unavailable", "reason": "error"}
    assert "pgsecret" not in response.text


async def test_background_services_start_with_the_app_and_stop_with_it(
    base_env: dict[str, str],
) -> None:
    events: list[str] = []

    async def service() -> None:
        events.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            events.append("stopped")

    app = create_app(make_settings(base_env), background=[BackgroundService("probe", service)])
    assert events == []  # nothing runs at import or construction time
    async with serving(app) as http:
        await http.get("/healthz")
        await asyncio.sleep(0)
        assert events == ["started"]
    assert events == ["started", "stopped"]


async def test_the_api_is_mounted_with_its_openapi_document(base_env: dict[str, str]) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        spec = await http.get("/api/v1/openapi.json")
        missing = await http.get("/api/v1/no-such-resource")
    assert spec.status_code == 200
    assert spec.json()["info"]["title"] == "Bastion API"
    assert_hardened(spec.headers)
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    assert_hardened(missing.headers)
