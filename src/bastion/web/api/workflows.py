"""/api/v1/workflows: workflows, their immutable versions, and starting runs.

Routes addressed by a workflow id find the workspace from the workflow, then check the
caller's permission there (`authorize_in`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from bastion.accounts.rbac import Permission, Principal
from bastion.db.tables import Workflow, WorkflowVersion
from bastion.triggers.gate import RunRequest
from bastion.web import auditing
from bastion.web.api.principals import Requires, authorize_in
from bastion.web.api.runs import RunOut, actor_of, origin_of
from bastion.workflows import graph as graphs
from bastion.workflows.store import MAX_DESCRIPTION, NAME_PATTERN

router = APIRouter(tags=["workflows"])
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]
InWorkspace = Annotated[Principal, Depends(Requires(Permission.READ))]
Editor = Annotated[Principal, Depends(Requires(Permission.EDIT_WORKFLOWS))]
MAX_BATCH = 100


class WorkflowIn(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=f"^{NAME_PATTERN}$")
    description: str = Field(default="", max_length=MAX_DESCRIPTION)
    graph: dict[str, Any]


class VersionIn(BaseModel):
    graph: dict[str, Any]


class RunIn(BaseModel):
    input: Any = Field(default=None, description="JSON input of the run")
    version: int | None = Field(default=None, ge=1, description="default: the current one")
    reason: str = Field(default="", max_length=500, description="recorded with the run")


class BatchIn(BaseModel):
    runs: list[RunIn] = Field(min_length=1, max_length=MAX_BATCH)


class WorkflowOut(BaseModel):
    id: str
    workspace_id: int
    name: str
    description: str
    current_version: int
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowOut:
        return cls.model_validate(workflow, from_attributes=True)


class VersionOut(BaseModel):
    workflow_id: str
    version: int
    graph: dict[str, Any]
    created_at: datetime
    created_by: str

    @classmethod
    def of(cls, version: WorkflowVersion) -> VersionOut:
        return cls(
            workflow_id=version.workflow_id,
            version=version.version,
            graph=graphs.parse(version.graph).model_dump(by_alias=True, exclude_none=True),
            created_at=version.created_at,
            created_by=version.created_by,
        )


async def workflow_for(
    request: Request, principal: Principal, workflow_id: str, permission: Permission
) -> Workflow:
    """The workflow, if the caller may act on it with `permission`."""
    workflow: Workflow = await request.state.services.workflows.get(workflow_id)
    authorize_in(principal, workflow.workspace_id, permission, f"workflow {workflow_id[:40]!r}")
    return workflow


@router.get("/workflows")
async def list_(workspace_id: int, principal: InWorkspace, request: Request) -> list[WorkflowOut]:
    found = await request.state.services.workflows.in_workspace(workspace_id)
    return [WorkflowOut.of(workflow) for workflow in found]


@router.post("/workflows", status_code=201)
async def create(
    workspace_id: int, body: WorkflowIn, principal: Editor, request: Request
) -> WorkflowOut:
    graph = graphs.parse(body.graph)
    actor = actor_of(principal)
    workflow = await request.state.services.workflows.create(
        workspace_id, body.name, body.description, graph, actor
    )
    await auditing.record(
        request, "workflow.create", actor, target=workflow.id, details={"name": body.name}
    )
    return WorkflowOut.of(workflow)


@router.get("/workflows/{workflow_id}")
async def describe(workflow_id: str, principal: SignedIn, request: Request) -> WorkflowOut:
    return WorkflowOut.of(await workflow_for(request, principal, workflow_id, Permission.READ))


@router.delete("/workflows/{workflow_id}", status_code=204)
async def delete(workflow_id: str, principal: SignedIn, request: Request) -> Response:
    workflow = await workflow_for(request, principal, workflow_id, Permission.EDIT_WORKFLOWS)
    await request.state.services.workflows.delete(workflow.id)
    await auditing.record(
        request,
        "workflow.delete",
        actor_of(principal),
        target=workflow.id,
        details={"name": workflow.name},
    )
    return Response(status_code=204)


@router.get("/workflows/{workflow_id}/versions")
async def versions(workflow_id: str, principal: SignedIn, request: Request) -> list[VersionOut]:
    workflow = await workflow_for(request, principal, workflow_id, Permission.READ)
    found = await request.state.services.workflows.versions(workflow.id)
    return [VersionOut.of(version) for version in found]


@router.get("/workflows/{workflow_id}/versions/{version}")
async def version(
    workflow_id: str, version: int, principal: SignedIn, request: Request
) -> VersionOut:
    workflow = await workflow_for(request, principal, workflow_id, Permission.READ)
    return VersionOut.of(await request.state.services.workflows.version(workflow.id, version))


@router.post("/workflows/{workflow_id}/versions", status_code=201)
async def add_version(
    workflow_id: str, body: VersionIn, principal: SignedIn, request: Request
) -> VersionOut:
    workflow = await workflow_for(request, principal, workflow_id, Permission.EDIT_WORKFLOWS)
    graph = graphs.parse(body.graph)
    actor = actor_of(principal)
    added = await request.state.services.workflows.add_version(workflow.id, graph, actor)
    await auditing.record(
        request, "workflow.version", actor, target=workflow.id, details={"version": added.version}
    )
    return VersionOut.of(added)


async def _start(
    request: Request, principal: Principal, workflow_id: str, runs: list[RunIn]
) -> list[RunOut]:
    """Every run checked (versions, input sizes, credential health) before any is
    stored; then all are stored in one transaction, or none."""
    services = request.state.services
    workflow = await workflow_for(request, principal, workflow_id, Permission.DISPATCH_RUNS)
    for version in sorted({run.version for run in runs if run.version is not None}):
        await services.workflows.version(workflow.id, version)
    origin = origin_of(request, principal)
    requests = [RunRequest(run.input, run.version, run.reason.strip()) for run in runs]
    started = await services.gate.start(workflow, requests, origin)
    return [RunOut.of(run) for run in started]


@router.post("/workflows/{workflow_id}/runs", status_code=202)
async def start_run(workflow_id: str, body: RunIn, principal: SignedIn, request: Request) -> RunOut:
    """Start one run; 422 when a credential the version uses is unhealthy."""
    return (await _start(request, principal, workflow_id, [body]))[0]


@router.post("/workflows/{workflow_id}/runs:batch", status_code=202)
async def start_batch(
    workflow_id: str, body: BatchIn, principal: SignedIn, request: Request
) -> list[RunOut]:
    """Start 1 to 100 runs, all or none."""
    return await _start(request, principal, workflow_id, body.runs)
