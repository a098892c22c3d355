from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bastion.web.app import create_app
from tests.web.conftest import make_settings, serving

LEGACY = {
    "csp-report": {
        "document-uri": "https://bastion.test/runs",
        "blocked-uri": "inline",
        "violated-directive": "script-src 'self'",
        "original-policy": "x" * 5000,
        "script-sample": "<script>alert(1)</script>",
    }
}
MODERN = [
    {
        "type": "csp-violation",
        "body": {
            "documentURL": "https://bastion.test/",
            "blockedURL": "https://evil.example/x.js",
            "effectiveDirective": "script-src-elem",
            "sample": "secret",
        },
    },
    {"type": "deprecation", "body": {"id": "x"}},
]


@pytest.fixture
async def http(base_env: dict[str, str], log_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(make_settings(base_env))) as client:
        yield client


async def test_legacy_report_is_accepted_and_only_known_fields_are_logged(
    http: httpx.AsyncClient, log_file: Path
) -> None:
    response = await http.post(
        "/csp-report",
        content=json.dumps(LEGACY),
        headers={"content-type": "application/csp-report"},
    )
    assert response.status_code == 204
    assert response.content == b""
    logged = [line for line in log_file.read_text().splitlines() if "CSP violation" in line]
    assert len(logged) == 1
    assert '"blockedURL": "inline"' in logged[0]
    assert "original-policy" not in logged[0] and "xxxx" not in logged[0]
    assert "alert(1)" not in logged[0]


async def test_reporting_api_batches_keep_only_csp_violations(
    http: httpx.AsyncClient, log_file: Path
) -> None:
    response = await http.post(
        "/csp-report",
        content=json.dumps(MODERN),
        headers={"content-type": "application/reports+json"},
    )
    assert response.status_code == 204
    logged = [line for line in log_file.read_text().splitlines() if "CSP violation" in line]
    assert len(logged) == 1
    assert "evil.example/x.js" in logged[0]
    assert "secret" not in logged[0]


async def test_oversized_bodies_are_refused_while_reading_even_when_chunked(
    http: httpx.AsyncClient,
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(9):
            yield b" " * 1024

    response = await http.post(
        "/csp-report", content=chunks(), headers={"content-type": "application/csp-report"}
    )
    assert response.status_code == 413
    declared = await http.post(
        "/csp-report",
        content=b"{}" + b" " * 9000,
        headers={"content-type": "application/csp-report"},
    )
    assert declared.status_code == 413


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("text/plain", b"{}", 415),
        ("application/csp-report", b"not json", 400),
        ("application/csp-report", b'{"other": 1}', 400),
        ("application/reports+json", b'{"not": "a list"}', 400),
        ("application/csp-report", b"\xff\xfe", 400),
    ],
)
async def test_malformed_reports_get_a_clear_4xx_that_reflects_nothing(
    http: httpx.AsyncClient, content_type: str, body: bytes, status: int
) -> None:
    response = await http.post("/csp-report", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert "not json" not in response.text and "other" not in response.text


async def test_each_address_is_rate_limited(http: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/csp-report"}
    statuses = [
        (await http.post("/csp-report", content=json.dumps(LEGACY), headers=headers)).status_code
        for _ in range(32)
    ]
    assert statuses[:30] == [204] * 30
    assert statuses[30:] == [429, 429]
