"""Rotation pools as the console shows them, when the rotation controller runs.

Pages render what the database holds (state, active replica, schedule, history); what
Docker says (health, uptime, CPU/memory/network) arrives over the status stream in the
browser, so a slow docker proxy never delays a page. Visibility follows the API: a pool
is seen by the roles of the workspace its configuration names, or by admins only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from bastion.accounts.rbac import Permission
from bastion.web.console._page import Viewer

if TYPE_CHECKING:
    from bastion.rotation.pools import PoolConfig
    from bastion.rotation.service import Rotation


@dataclass(frozen=True)
class VisiblePool:
    config: PoolConfig
    workspace_id: int | None
    can_control: bool


def rotation_of(request: Request) -> Rotation | None:
    rotation: Rotation | None = getattr(request.state.services, "rotation", None)
    return rotation


async def visible_pools(request: Request, viewer: Viewer) -> list[VisiblePool] | None:
    """The pools this viewer may read; None when rotation is off on this server."""
    rotation = rotation_of(request)
    if rotation is None:
        return None
    found = []
    for config in rotation.pools.values():
        workspace_id = await rotation.workspace_id(config)
        if workspace_id is None:
            if viewer.is_admin:
                found.append(VisiblePool(config, None, True))
        elif viewer.can(Permission.READ, workspace_id):
            control = viewer.can(Permission.CONTROL_ROTATION, workspace_id)
            found.append(VisiblePool(config, workspace_id, control))
    return found


async def summaries(request: Request, viewer: Viewer) -> list[dict[str, Any]] | None:
    """One line per visible pool; None when this server has no rotation controller."""
    visible = await visible_pools(request, viewer)
    rotation = rotation_of(request)
    if visible is None or rotation is None:
        return None
    rows = {row.name: row for row in await rotation.store.pools()}
    found = []
    for pool in visible:
        row = rows.get(pool.config.name)
        found.append(
            {
                "name": pool.config.name,
                "state": row.state if row else "running",
                "paused": row is not None and row.state != "running",
                "active": row.active_replica if row else None,
                "next_at": row.next_rotation_at.isoformat()
                if row and row.next_rotation_at
                else None,
                "total": len(pool.config.replicas),
                "rotation_count": row.rotation_count if row else 0,
                "last_rotation_at": row.last_rotation_at if row else None,
                "pending_action": row.pending_action if row else None,
                "last_errors": json.loads(row.last_errors) if row else [],
            }
        )
    return found
