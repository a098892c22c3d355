from __future__ import annotations

from bastion.web.app import create_app
from tests.web.conftest import make_settings, serving


async def test_static_assets_have_an_explicit_type_and_cache_policy(
    base_env: dict[str, str],
) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        js = await http.get("/static/login.js")
        css = await http.get("/static/bastion.css")
        icon = await http.get("/static/favicon.svg")
    assert js.headers["content-type"].startswith("text/javascript")
    assert css.headers["content-type"].startswith("text/css")
    assert icon.headers["content-type"].startswith("image/svg+xml")
    for response in (js, css, icon):
        assert response.status_code == 200
        assert response.headers["cache-control"] == "public, max-age=3600"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_no_directory_listing_and_no_traversal(base_env: dict[str, str]) -> None:
    async with serving(create_app(make_settings(base_env))) as http:
        for path in (
            "/static/",
            "/static/../config.py",
            "/static/%2e%2e/config.py",
            "/static/..%2f..%2fconfig.py",
        ):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert "Settings" not in response.text
