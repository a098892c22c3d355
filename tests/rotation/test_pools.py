from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.rotation.pools import (
    PoolsFileError,
    Strategy,
    allowlist,
    load_pools,
    parse_pools,
)

TOML = """
[[pools]]
name = "web"
workspace = "ops"
replicas = ["web-a", "web-b", "web-c"]
interval_seconds = 600
jitter_seconds = 60
strategy = "break_before_make"
[pools.haproxy]
address = "127.0.0.1:9999"
backend = "web"

[[pools]]
name = "api"
replicas = ["api-1", "api-2"]
"""


def test_a_toml_file_gives_pools_with_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(TOML)
    web, api = load_pools(path)
    assert web.name == "web"
    assert web.workspace == "ops"
    assert web.replicas == ("web-a", "web-b", "web-c")
    assert web.strategy is Strategy.BREAK_BEFORE_MAKE
    assert web.haproxy is not None
    assert (web.haproxy.address, web.haproxy.backend) == ("127.0.0.1:9999", "web")
    assert api.strategy is Strategy.MAKE_BEFORE_BREAK  # the default keeps the service up
    assert api.health_timeout_seconds == 60
    assert api.workspace is None
    assert api.haproxy is None
    assert allowlist([web, api]) == {"web-a", "web-b", "web-c", "api-1", "api-2"}


def test_a_json_file_is_read_as_json(tmp_path: Path) -> None:
    path = tmp_path / "pools.json"
    path.write_text(json.dumps({"pools": [{"name": "web", "replicas": ["r-a", "r-b"]}]}))
    (pool,) = load_pools(path)
    assert pool.replicas == ("r-a", "r-b")


def test_every_problem_is_listed_with_where_it_is() -> None:
    text = """
[[pools]]
name = "Web!"
replicas = ["r-a"]
health_timeout_seconds = 0
strategy = "yolo"
colour = "red"

[[pools]]
name = "api"
replicas = ["../images", "r-b", "r-b"]
[pools.haproxy]
address = "nowhere"
backend = "x;y"
"""
    with pytest.raises(PoolsFileError) as raised:
        parse_pools(text, kind="toml")
    problems = raised.value.problems
    assert any(p.startswith("pools[1].name ('Web!')") for p in problems)
    assert any(p.startswith("pools[1].replicas") and "at least 2" in p for p in problems)
    assert any(p.startswith("pools[1].health_timeout_seconds") for p in problems)
    assert any(p.startswith("pools[1].strategy") for p in problems)
    assert any(p.startswith("pools[1].colour") for p in problems)
    assert any("'../images' is not a Docker container name" in p for p in problems)
    assert any(p.startswith("pools[2].haproxy.address") for p in problems)
    assert any(p.startswith("pools[2].haproxy.backend") for p in problems)
    assert len(problems) == 8


def test_a_replica_name_no_docker_proxy_could_allow_is_refused_in_the_pools_file() -> None:
    # Hex digits only: the proxy refuses such names (Docker would also read them as an id
    # prefix), so a pool naming one could never rotate.
    text = json.dumps({"pools": [{"name": "web", "replicas": ["deadbeef", "web-b"]}]})
    with pytest.raises(PoolsFileError) as raised:
        parse_pools(text, kind="json")
    [problem] = raised.value.problems
    assert "'deadbeef' has only hex digits" in problem


def test_duplicate_pools_and_a_replica_in_two_pools_are_refused() -> None:
    text = json.dumps(
        {
            "pools": [
                {"name": "web", "replicas": ["r-a", "r-b"]},
                {"name": "web", "replicas": ["r-c", "r-d"]},
                {"name": "api", "replicas": ["r-b", "r-e"]},
            ]
        }
    )
    with pytest.raises(PoolsFileError) as raised:
        parse_pools(text, kind="json")
    assert raised.value.problems == [
        "pool 'web' is defined twice",
        "replica 'r-b' is in pools 'web' and 'api'",
    ]


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("pools = [", "toml", "not valid TOML"),
        ("[1, 2]", "json", "must hold a `pools` list"),
        ("{", "json", "not valid JSON"),
    ],
)
def test_unparsable_files_say_so(text: str, kind: str, expected: str) -> None:
    with pytest.raises(PoolsFileError, match=expected):
        parse_pools(text, kind=kind)


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(PoolsFileError, match="cannot read"):
        load_pools(tmp_path / "missing.toml")


def test_unix_socket_addresses_need_an_absolute_path() -> None:
    good = {"address": "unix:///run/haproxy.sock", "backend": "b"}
    (pool,) = parse_pools(
        json.dumps({"pools": [{"name": "p", "replicas": ["r-a", "r-b"], "haproxy": good}]}),
        kind="json",
    )
    assert pool.haproxy is not None
    bad = {"address": "unix://relative.sock", "backend": "b"}
    with pytest.raises(PoolsFileError, match="absolute path"):
        parse_pools(
            json.dumps({"pools": [{"name": "p", "replicas": ["r-a", "r-b"], "haproxy": bad}]}),
            kind="json",
        )


def test_no_pools_is_valid_and_means_rotation_is_off() -> None:
    assert parse_pools("", kind="toml") == []
