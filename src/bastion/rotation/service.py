"""Rotation as the server runs it: built from the settings (nothing when no pools are
configured), with its background services and what the API needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from bastion import logs
from bastion.audit.log import AuditLog
from bastion.background import BackgroundService
from bastion.config import Settings
from bastion.db import Database
from bastion.db.tables import Workspace
from bastion.rotation.client import DockerClient, DockerEndpoint
from bastion.rotation.controller import Controller
from bastion.rotation.pools import PoolConfig, load_pools
from bastion.rotation.state import RotationStore
from bastion.rotation.status import Status
from bastion.rotation.telemetry import Telemetry


@dataclass
class Rotation:
    pools: dict[str, PoolConfig]
    docker: DockerClient
    store: RotationStore
    controller: Controller
    telemetry: Telemetry
    status: Status
    _workspaces: dict[str, int] = field(default_factory=dict)

    async def prepare(self) -> None:
        """Every configured pool has its state row before the API or the controller acts."""
        await self.store.ensure(list(self.pools.values()))

    def background(self) -> list[BackgroundService]:
        return [
            BackgroundService("rotation-controller", self.controller.run),
            BackgroundService("rotation-telemetry", self.telemetry.run),
        ]

    async def workspace_id(self, pool: PoolConfig) -> int | None:
        """The id of the workspace whose roles govern `pool`; None: administrators only
        (none named, or it does not exist)."""
        if pool.workspace is None:
            return None
        if pool.workspace not in self._workspaces:
            async with self.store.db.session() as session:
                found = await session.scalar(
                    select(Workspace.id).where(Workspace.slug == pool.workspace)
                )
            if found is None:
                return None
            self._workspaces[pool.workspace] = found
        return self._workspaces[pool.workspace]

    async def aclose(self) -> None:
        await self.docker.aclose()


def endpoint_of(settings: Settings) -> DockerEndpoint:
    if settings.rotation_docker_url is None or settings.rotation_docker_token is None:
        raise ValueError("the docker proxy's URL and token are required")
    token = settings.rotation_docker_token.get_secret_value()
    logs.redactor.register(token)  # an httpx debug line or a traceback must not show it
    return DockerEndpoint(
        settings.rotation_docker_url,
        token,
        ca_file=settings.rotation_docker_ca_file,
        cert_file=settings.rotation_docker_cert_file,
        key_file=settings.rotation_docker_key_file,
    )


def open_rotation(settings: Settings, db: Database, audit: AuditLog) -> Rotation | None:
    """Rotation for these settings, or None when no pools are configured."""
    if settings.rotation_pools_file is None:
        return None
    pools = load_pools(settings.rotation_pools_file)
    if not pools:
        return None
    docker = DockerClient(endpoint_of(settings))
    store = RotationStore(db, audit)
    telemetry = Telemetry(pools, docker)
    return Rotation(
        pools={pool.name: pool for pool in pools},
        docker=docker,
        store=store,
        controller=Controller(pools, docker, store),
        telemetry=telemetry,
        status=Status(pools, docker, store, telemetry),
    )
