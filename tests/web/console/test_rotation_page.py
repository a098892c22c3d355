"""The rotation page and the overview's pools, with pools configured (the docker proxy is
unreachable here: pages render from the database; live data is the browser's job, see
tests/e2e/test_console_rotation.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.web.console.conftest import Seeded

POOLS = """
[[pools]]
name = "web"
workspace = "ops"
replicas = ["web-a", "web-b"]

[[pools]]
name = "core"
replicas = ["core-a", "core-b", "core-c"]
"""


@pytest.fixture
def console_env(tmp_path: Path) -> dict[str, str]:
    pools = tmp_path / "pools.toml"
    pools.write_text(POOLS)
    return {
        "BASTION_ROTATION_POOLS_FILE": str(pools),
        "BASTION_ROTATION_DOCKER_URL": "http://127.0.0.1:9",
        "BASTION_ROTATION_DOCKER_TOKEN": "unused-token-for-an-unreachable-proxy",
    }


async def test_pools_follow_the_workspace_roles_and_controls_the_operator_role(
    seeded: Seeded,
) -> None:
    admin = (await seeded.root.get("/rotation?pool=core")).text
    assert "Pool core" in admin and 'data-action="pause"' in admin and "core-c" in admin
    assert 'href="/rotation?pool=web"' in admin
    owner = (await seeded.olive.get("/rotation")).text
    assert "Pool web" in owner and 'data-action="kill"' in owner and 'id="kill-dialog"' in owner
    assert "core" not in owner.split("<main", 1)[1]
    viewer = (await seeded.vic.get("/rotation")).text
    assert "Pool web" in viewer and "web-b" in viewer and "data-action=" not in viewer
    assert (await seeded.vic.get("/rotation?pool=core")).status_code == 404
    outsider = (await seeded.mallory.get("/rotation")).text
    assert "No pools configured" in outsider


async def test_the_overview_lists_the_visible_pools(seeded: Seeded) -> None:
    admin = (await seeded.root.get("/")).text
    assert 'data-pool="core"' in admin and 'data-pool="web"' in admin
    viewer = (await seeded.vic.get("/")).text
    assert 'data-pool="web"' in viewer and 'data-pool="core"' not in viewer
