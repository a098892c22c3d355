"""Pools of replicas, read from the pools file (TOML or JSON) that
BASTION_ROTATION_POOLS_FILE names.

    [[pools]]
    name = "web"
    workspace = "ops"                     # whose operators control it (unset: admins only)
    replicas = ["web-a", "web-b", "web-c"]  # container names: the allowlist
    interval_seconds = 600
    jitter_seconds = 120
    [pools.haproxy]
    address = "127.0.0.1:9999"            # or "unix:///run/haproxy/admin.sock"
    backend = "web"                       # server names = replica names

The replica names are the only containers rotation ever touches.
"""

from __future__ import annotations

import json
import re
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bastion.containers import name_problem
from bastion.errors import InvalidInput

# Docker's own rule for container names, tightened to a length the database keeps.
POOL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# HAProxy backend and server names: letters, digits, '-', '_', '.', ':'.
HAPROXY_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class Strategy(StrEnum):
    # Start the candidate, wait until healthy, switch traffic, drain, stop the old one.
    MAKE_BEFORE_BREAK = "make_before_break"
    # Stop the old one first: only for replicas that must never run side by side
    # (shared state that does not tolerate two writers). Costs a gap on every rotation.
    BREAK_BEFORE_MAKE = "break_before_make"


class HAProxyTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(description="host:port of the runtime API, or unix:///path")
    backend: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("unix://"):
            if not value.removeprefix("unix://").startswith("/"):
                raise ValueError("a unix socket address needs an absolute path (unix:///…)")
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port or unix:///path")
        return value

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if not HAPROXY_NAME.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits, '-', '_', '.', ':'")
        return value


class PoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    workspace: str | None = None
    replicas: tuple[str, ...] = Field(min_length=2, max_length=64)
    interval_seconds: float = Field(default=3600, ge=1, le=30 * 24 * 3600)
    jitter_seconds: float = Field(default=0, ge=0, le=24 * 3600)
    health_timeout_seconds: float = Field(default=60, ge=1, le=3600)
    stop_timeout_seconds: int = Field(default=10, ge=0, le=600)
    drain_seconds: float = Field(default=5, ge=0, le=600)
    strategy: Strategy = Strategy.MAKE_BEFORE_BREAK
    haproxy: HAProxyTarget | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not POOL_NAME.fullmatch(value):
            raise ValueError("must be 1-64 characters of a-z, 0-9, '-' and '_'")
        return value

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if problem := name_problem(name):
                raise ValueError(problem)
        if len(set(value)) != len(value):
            raise ValueError("replica names must be unique")
        return value

    @property
    def worst_rotation_seconds(self) -> float:
        """An upper bound of one rotation: every candidate tried, each to its timeout."""
        per_candidate = 2 * self.health_timeout_seconds + self.stop_timeout_seconds + 5
        return len(self.replicas) * per_candidate + self.drain_seconds + self.stop_timeout_seconds


class _PoolsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[PoolConfig] = Field(default_factory=list, max_length=256)


class PoolsFileError(InvalidInput):
    """Everything wrong with a pools file, one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part + 1}]" if parts else f"[{part + 1}]"]
        else:
            parts.append(str(part))
    where = ".".join(parts)
    if len(loc) >= 2 and loc[0] == "pools" and isinstance(loc[1], int):
        pools = raw.get("pools")
        if isinstance(pools, list) and loc[1] < len(pools) and isinstance(pools[loc[1]], dict):
            name = pools[loc[1]].get("name")
            if isinstance(name, str):
                where += f" ({name[:64]!r})"
    return where


def parse_pools(text: str, *, kind: str) -> list[PoolConfig]:
    """Pools from the text of a `kind` ("toml" or "json") file; PoolsFileError lists every
    problem at once."""
    try:
        raw = tomllib.loads(text) if kind == "toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise PoolsFileError([f"not valid {kind.upper()}: {exc}"]) from None
    if not isinstance(raw, dict):
        raise PoolsFileError(["must hold a `pools` list"])
    try:
        pools = _PoolsFile.model_validate(raw).pools
    except ValidationError as exc:
        problems = [
            f"{_where(tuple(error['loc']), raw)}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_input=False)
        ]
        raise PoolsFileError(problems) from None
    problems = []
    seen_pools: set[str] = set()
    owner: dict[str, str] = {}
    for pool in pools:
        if pool.name in seen_pools:
            problems.append(f"pool {pool.name!r} is defined twice")
        seen_pools.add(pool.name)
        for replica in pool.replicas:
            # One container in two pools would be stopped by each pool's reconcile.
            if replica in owner and owner[replica] != pool.name:
                problems.append(
                    f"replica {replica!r} is in pools {owner[replica]!r} and {pool.name!r}"
                )
            owner.setdefault(replica, pool.name)
    if problems:
        raise PoolsFileError(problems)
    return pools


def load_pools(path: Path) -> list[PoolConfig]:
    kind = "json" if path.suffix.lower() == ".json" else "toml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise PoolsFileError([f"cannot read {path}: {reason}"]) from None
    return parse_pools(text, kind=kind)


def allowlist(pools: list[PoolConfig]) -> frozenset[str]:
    return frozenset(name for pool in pools for name in pool.replicas)
