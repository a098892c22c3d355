"""Workflows: the list, and one workflow's versions, diagram, diff, triggers and retries."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response

from bastion.db.tables import Trigger, Workflow, WorkflowVersion
from bastion.db.types import utcnow
from bastion.errors import NotFound
from bastion.runs import history
from bastion.triggers import cron
from bastion.triggers.store import CronSettings, WebhookSettings, settings_of
from bastion.web.console._page import Viewer, page, query_int, render
from bastion.web.console.graph_svg import layout
from bastion.workflows import graph as graphs

NEXT_FIRES = 5
RECENT_RUNS = 10


@page()
async def workflow_list(request: Request, viewer: Viewer) -> Response:
    query = select(Workflow).order_by(Workflow.name, Workflow.id)
    if viewer.scope is not None:
        query = query.where(Workflow.workspace_id.in_(viewer.scope))
    triggers = select(Trigger.workflow_id, func.count()).group_by(Trigger.workflow_id)
    async with request.state.services.db.session() as session:
        found = (await session.scalars(query)).all()
        counts = {key: value for key, value in await session.execute(triggers)}
    return render(
        request,
        viewer,
        "console/workflows.html",
        title="Workflows",
        workflows=found,
        trigger_counts=counts,
    )


@dataclass
class TriggerView:
    trigger: Trigger
    settings: dict[str, Any]
    url: str | None = None
    scheme: str | None = None
    secret_credential: str | None = None
    secret_field: str = "value"  # noqa: S105 - a field name
    secret_credential_id: str | None = None
    schedule: str | None = None
    timezone: str = "UTC"
    next_fires: list[datetime] = field(default_factory=list)


async def _trigger_view(request: Request, trigger: Trigger) -> TriggerView:
    services = request.state.services
    parsed = settings_of(trigger)
    view = TriggerView(trigger, json.loads(trigger.settings))
    if isinstance(parsed, WebhookSettings):
        view.url = str(request.base_url).rstrip("/") + f"/hooks/{trigger.id}"
        view.scheme = parsed.scheme
        view.secret_credential = parsed.secret_credential
        view.secret_field = parsed.secret_field
        if parsed.secret_credential:
            try:
                view.secret_credential_id = await services.vault.id_named(
                    trigger.workspace_id, parsed.secret_credential
                )
            except NotFound:
                view.secret_credential_id = None
    elif isinstance(parsed, CronSettings):
        schedule = parsed.schedule()
        view.schedule = cron.explain(schedule)
        view.timezone = schedule.timezone
        zone = ZoneInfo(schedule.timezone)
        after = utcnow()
        for _ in range(NEXT_FIRES):
            due = cron.next_due(schedule, after)
            if due is None:
                break
            view.next_fires.append(due.astimezone(zone))
            after = due
    return view


def diff_lines(older: WorkflowVersion, newer: WorkflowVersion) -> list[tuple[str, str]]:
    """A unified diff of two versions' graphs as (kind, text): add, del, hunk or ctx."""

    def text(version: WorkflowVersion) -> list[str]:
        return json.dumps(json.loads(version.graph), indent=2, sort_keys=True).splitlines()

    lines = []
    for line in difflib.unified_diff(
        text(older),
        text(newer),
        f"version {older.version}",
        f"version {newer.version}",
        lineterm="",
    ):
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        else:
            kind = {"+": "add", "-": "del"}.get(line[:1], "ctx")
        lines.append((kind, line))
    return lines


@page()
async def workflow_detail(request: Request, viewer: Viewer) -> Response:
    services = request.state.services
    workflow_id = request.path_params["workflow_id"]
    workflow = await services.workflows.get(workflow_id)
    if workflow.workspace_id not in viewer.workspaces:
        raise NotFound(f"no workflow {workflow_id[:40]!r}")
    versions = {v.version: v for v in await services.workflows.versions(workflow.id)}
    shown = versions.get(query_int(request, "version") or workflow.current_version)
    if shown is None:
        raise NotFound(f"workflow {workflow.name!r} has no such version")
    graph = graphs.parse(shown.graph)
    diff_from, diff_to = query_int(request, "from"), query_int(request, "to")
    diff = None
    if diff_from in versions and diff_to in versions and diff_from != diff_to:
        assert diff_from is not None and diff_to is not None
        diff = diff_lines(versions[diff_from], versions[diff_to])
    elif len(versions) > 1:
        diff_from, diff_to = sorted(versions)[-2:]
    triggers = [
        await _trigger_view(request, t) for t in await services.triggers.of_workflow(workflow.id)
    ]
    runs = await history.search_runs(
        services.db,
        history.RunSearch((workflow.workspace_id,), workflow.id, limit=RECENT_RUNS),
    )
    return render(
        request,
        viewer,
        "console/workflow.html",
        title=workflow.name,
        active="/workflows",
        workflow=workflow,
        versions=list(versions.values()),
        shown=shown,
        graph=graph,
        diagram=layout(graph),
        diff=diff,
        diff_from=diff_from,
        diff_to=diff_to,
        triggers=triggers,
        retry=await services.retry_policies.get(workflow.id),
        runs=runs,
        ws=workflow.workspace_id,
    )
