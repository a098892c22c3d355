"""Runs: the filterable list (paged by run id), and one run with its steps and retries."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from bastion.db.tables import Workflow
from bastion.errors import NotFound
from bastion.runs import history
from bastion.runs.records import ACTIVE, Trigger
from bastion.web.console._page import (
    STATUSES,
    Viewer,
    link,
    page,
    pretty_json,
    query_choice,
    query_int,
    query_text,
    query_time,
    render,
)

PAGE_SIZE = 50
TRIGGERS = tuple(trigger.value for trigger in Trigger)


async def _workflow_names(request: Request, viewer: Viewer) -> dict[str, str]:
    query = select(Workflow.id, Workflow.name).order_by(Workflow.name)
    if viewer.scope is not None:
        query = query.where(Workflow.workspace_id.in_(viewer.scope))
    async with request.state.services.db.session() as session:
        return {key: value for key, value in await session.execute(query)}


@page()
async def run_list(request: Request, viewer: Viewer) -> Response:
    names = await _workflow_names(request, viewer)
    workspace = query_int(request, "ws")
    scope = viewer.scope if workspace not in viewer.workspaces else (workspace,)
    workflow = query_text(request, "workflow", 32)
    before = query_text(request, "before", 32)
    status = query_choice(request, "status", STATUSES)
    trigger = query_choice(request, "trigger", TRIGGERS)
    workflow = workflow if workflow in names else ""
    since, until = query_text(request, "since", 40), query_text(request, "until", 40)
    found = await history.search_runs(
        request.state.services.db,
        history.RunSearch(
            scope,
            workflow or None,
            status or None,
            trigger or None,
            query_time(request, "since"),
            query_time(request, "until"),
            before or None,
            PAGE_SIZE,
        ),
    )
    filters = {
        "ws": workspace if workspace in viewer.workspaces else None,
        "workflow": workflow,
        "status": status,
        "trigger": trigger,
        "since": since,
        "until": until,
    }
    older = link("/runs", **filters, before=found[-1].id) if len(found) == PAGE_SIZE else None
    return render(
        request,
        viewer,
        "console/runs.html",
        title="Runs",
        runs=found,
        names=names,
        filters=filters,
        first_page=not before,
        older=older,
        triggers=TRIGGERS,
    )


def _json(text: str | None) -> str:
    if text is None:
        return ""
    try:
        return pretty_json(json.loads(text))
    except ValueError:
        return text


@page()
async def run_detail(request: Request, viewer: Viewer) -> Response:
    services = request.state.services
    run_id = request.path_params["run_id"]
    run = await history.get_run(services.db, run_id[:32])
    if run.workspace_id not in viewer.workspaces:
        raise NotFound(f"no run {run_id[:40]!r}")
    steps = await history.steps(services.db, run.id)
    chain = await history.retry_chain(services.db, run)
    try:
        workflow_name = (await services.workflows.get(run.workflow_id)).name
    except NotFound:
        workflow_name = run.workflow_id
    step_views: list[dict[str, Any]] = [
        {
            "seq": step.seq,
            "node": step.node,
            "status": step.status,
            "started_at": step.started_at,
            "duration_ms": round(step.duration_ms, 1),
            "output": _json(step.output),
            "error": step.error,
        }
        for step in steps
    ]
    # The timeline: each step's bar starts at its offset from the first step's start and
    # is as long as the step took, in percent of the span to the last step's end.
    if steps:
        first = min(s.started_at for s in steps)
        span = max((max(s.finished_at for s in steps) - first).total_seconds() * 1000, 1.0)
        for view, step in zip(step_views, steps, strict=True):
            offset = (step.started_at - first).total_seconds() * 1000
            view["start_ms"] = round(step.started_at.timestamp() * 1000, 1)
            view["x"] = round(min(99.5, offset / span * 100), 2)
            view["w"] = round(max(0.5, min(100 - view["x"], step.duration_ms / span * 100)), 2)
    return render(
        request,
        viewer,
        "console/run.html",
        title=f"Run {run.id[:12]}",
        active="/runs",
        run=run,
        workflow_name=workflow_name,
        steps=step_views,
        chain=chain,
        live=run.status in ACTIVE,
        input_json=_json(run.input),
        output_json=_json(run.output),
        ws=run.workspace_id,
    )
