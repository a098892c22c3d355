"""The rotation page: a pool's replicas, controls, live timeline, sparklines and history."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from bastion.errors import NotFound
from bastion.web.console import pools
from bastion.web.console._page import Viewer, link, page, query_int, query_text, render

HISTORY_PAGE = 20


@page()
async def rotation_page(request: Request, viewer: Viewer) -> Response:
    visible = await pools.visible_pools(request, viewer)
    rotation = pools.rotation_of(request)
    if not visible or rotation is None:
        return render(request, viewer, "console/rotation.html", title="Rotation", pools=None)
    wanted = query_text(request, "pool", 64)
    selected = next((p for p in visible if p.config.name == wanted), None)
    if wanted and selected is None:
        raise NotFound(f"no pool {wanted!r}")
    selected = selected or visible[0]
    name = selected.config.name
    summaries = {s["name"]: s for s in await pools.summaries(request, viewer) or []}
    replicas = await rotation.store.replicas(name)
    before = query_int(request, "before")
    history = await rotation.store.history(name, before=before, limit=HISTORY_PAGE)
    older = (
        link("/rotation", pool=name, before=history[-1].id)
        if len(history) == HISTORY_PAGE
        else None
    )
    return render(
        request,
        viewer,
        "console/rotation.html",
        title=f"Rotation · {name}",
        pools=visible,
        pool=selected,
        summary=summaries[name],
        replicas=replicas,
        history=[(entry, json.loads(entry.skipped)) for entry in history],
        older=older,
    )
