"""/api/v1/workflows/{id}/triggers and /retry-policy: what starts a workflow's runs.

Editors manage triggers and retry policies; viewers read them. A trigger's settings
name the vault credential that holds its secret; no answer ever contains a secret.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from bastion.accounts.rbac import Permission, Principal
from bastion.db.tables import CronOccurrence, Trigger, Workflow
from bastion.errors import NotFound
from bastion.triggers import cron
from bastion.triggers.errors import InvalidTrigger
from bastion.triggers.retry import RetrySettings
from bastion.triggers.store import CronSettings, WebhookSettings, parse_settings, settings_of
from bastion.web import auditing
from bastion.web.api.principals import Requires
from bastion.web.api.runs import actor_of
from bastion.web.api.workflows import workflow_for
from bastion.workflows.store import NAME_PATTERN

router = APIRouter(tags=["triggers"])
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]


class TriggerIn(BaseModel):
    kind: Literal["webhook", "cron"]
    name: str = Field(min_length=1, max_length=100, pattern=f"^{NAME_PATTERN}$")
    enabled: bool = True
    version: int | None = Field(default=None, ge=1, description="default: the current one")
    settings: dict[str, Any]


class TriggerPatch(BaseModel):
    name: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=f"^{NAME_PATTERN}$"
    )
    enabled: bool | None = None
    version: int | None = Field(default=None, ge=1)
    unpin_version: bool = Field(default=False, description="follow the current version again")
    settings: dict[str, Any] | None = None


class TriggerOut(BaseModel):
    id: str
    workflow_id: str
    kind: str
    name: str
    enabled: bool
    version: int | None
    settings: dict[str, Any]
    url: str | None  # a webhook's address
    insecure: bool  # a webhook that accepts unauthenticated deliveries (scheme "none")
    schedule: str | None  # a cron schedule in words
    next_fire_at: datetime | None
    created_at: datetime
    created_by: str
    updated_at: datetime

    @classmethod
    def of(cls, trigger: Trigger) -> TriggerOut:
        settings = settings_of(trigger)
        schedule = settings.schedule() if isinstance(settings, CronSettings) else None
        return cls(
            id=trigger.id,
            workflow_id=trigger.workflow_id,
            kind=trigger.kind,
            name=trigger.name,
            enabled=trigger.enabled,
            version=trigger.version,
            settings=json.loads(trigger.settings),
            url=f"/hooks/{trigger.id}" if trigger.kind == "webhook" else None,
            insecure=isinstance(settings, WebhookSettings) and settings.scheme == "none",
            schedule=None if schedule is None else cron.explain(schedule),
            next_fire_at=trigger.next_fire_at,
            created_at=trigger.created_at,
            created_by=trigger.created_by,
            updated_at=trigger.updated_at,
        )


class OccurrenceOut(BaseModel):
    due_at: datetime
    fired_at: datetime
    status: str
    reason: str
    run_id: str | None

    @classmethod
    def of(cls, row: CronOccurrence) -> OccurrenceOut:
        return cls.model_validate(row, from_attributes=True)


async def _checked(
    request: Request,
    workflow: Workflow,
    kind: str,
    raw: dict[str, Any],
    enabled: bool,
    version: int | None,
) -> WebhookSettings | CronSettings:
    services = request.state.services
    settings = parse_settings(kind, raw)
    if version is not None:
        await services.workflows.version(workflow.id, version)
    if isinstance(settings, WebhookSettings):
        limit = services.settings.run_max_input_bytes
        if settings.max_body_bytes > limit:
            raise InvalidTrigger(
                f"max_body_bytes exceeds the run input limit ({limit} bytes, "
                "BASTION_RUN_MAX_INPUT_BYTES)"
            )
        if enabled:
            await services.webhooks.check_secret(workflow.workspace_id, settings)
    return settings


async def _trigger_of(request: Request, workflow: Workflow, trigger_id: str) -> Trigger:
    trigger: Trigger = await request.state.services.triggers.get(trigger_id)
    if trigger.workflow_id != workflow.id:
        raise NotFound(f"no trigger {trigger_id[:40]!r}")
    return trigger


def _changed(request: Request, trigger_id: str) -> None:
    request.state.services.webhooks.forget(trigger_id)
    request.state.services.scheduler.wake()


@router.get("/workflows/{workflow_id}/triggers")
async def list_(workflow_id: str, principal: SignedIn, request: Request) -> list[TriggerOut]:
    workflow = await workflow_for(request, principal, workflow_id, Permission.READ)
    found = await request.state.services.triggers.of_workflow(workflow.id)
    return [TriggerOut.of(trigger) for trigger in found]


@router.post("/workflows/{workflow_id}/triggers", status_code=201)
async def create(
    workflow_id: str, body: TriggerIn, principal: SignedIn, request: Request
) -> TriggerOut:
    workflow = await workflow_for(request, principal, workflow_id, Permission.EDIT_WORKFLOWS)
    settings = await _checked(
        request, workflow, body.kind, body.settings, body.enabled, body.version
    )
    actor = actor_of(principal)
    trigger = await request.state.services.triggers.create(
        workflow,
        kind=body.kind,
        name=body.name,
        settings=settings,
        enabled=body.enabled,
        version=body.version,
        actor=actor,
    )
    _changed(request, trigger.id)
    await auditing.record(
        request,
        "trigger.create",
        actor,
        target=trigger.id,
        details={"workflow_id": workflow.id, "kind": body.kind, "name": body.name},
    )
    return TriggerOut.of(trigger)


@router.get("/workflows/{workflow_id}/triggers/{trigger_id}")
async def describe(
    workflow_id: str, trigger_id: str, principal: SignedIn, request: Request
) -> TriggerOut:
    workflow = await workflow_for(request, principal, workflow_id, Permission.READ)
    return TriggerOut.of(await _trigger_of(request, workflow, trigger_id))


@router.patch("/workflows/{workflow_id}/triggers/{trigger_id}")
async def update(
    workflow_id: str, trigger_id: str, body: TriggerPatch, principal: SignedIn, request: Request
) -> TriggerOut:
    workflow = await workflow_for(request, principal, workflow_id, Permission.EDIT_WORKFLOWS)
    trigger = await _trigger_of(request, workflow, trigger_id)
    enabled = trigger.enabled if body.enabled is None else body.enabled
    raw = json.loads(trigger.settings) if body.settings is None else body.settings
    # Checked whole, as the trigger will be: enabling a webhook without a secret fails
    # here even when the settings themselves are not being changed.
    settings = await _checked(request, workflow, trigger.kind, raw, enabled, body.version)
    trigger = await request.state.services.triggers.update(
        trigger.id,
        name=body.name,
        enabled=body.enabled,
        version=None if body.unpin_version else (body.version or "keep"),
        settings=settings if body.settings is not None else None,
    )
    _changed(request, trigger.id)
    changed = [k for k, v in body.model_dump(exclude_unset=True).items() if v is not None]
    await auditing.record(
        request,
        "trigger.update",
        actor_of(principal),
        target=trigger.id,
        details={"workflow_id": workflow.id, "changed": changed},
    )
    return TriggerOut.of(trigger)


@router.delete("/workflows/{workflow_id}/triggers/{trigger_id}", status_code=204)
async def delete(
    workflow_id: str, trigger_id: str, principal: SignedIn, request: Request
) -> Response:
    workflow = await workflow_for(request, principal, workflow_id, Permission.EDIT_WORKFLOWS)
    trigger = await _trigger_of(request, workflow, trigger_id)
    await request.state.services.triggers.delete(trigger.id)
    _changed(request, trigger.id)
    await auditing.record(
        request,
        "trigger.delete",
        actor_of(principal),
        target=trigger.id,
        details={"workflow_id": workflow.id, "name": trigger.name},
    )
    return Response(status_code=204)


@router.get("/workflows/{workflow_id}/triggers/{trigger_id}/occurrences")
async def occurrences(
    workflow_id: str,
    trigger_id: str,
    principal: SignedIn,
    request: Request,
    limit: Annotated[int, Field(ge=1, le=500)] = 100,
) -> list[OccurrenceOut]:
    """What became of a schedule's occurrences, newest first: fired (with the run) or
    skipped (with the reason)."""
    workflow = await workflow_for(request, principal, workflow_id, Permission.READ)
    trigger = await _trigger_of(request, workflow, trigger_id)
    found = await request.state.services.triggers.occurrences(trigger.id, limit)
    return [OccurrenceOut.of(row) for row in found]


@router.get("/workflows/{workflow_id}/retry-policy")
async def retry_policy(workflow_id: str, principal: SignedIn, request: Request) -> RetrySettings:
    workflow = await workflow_for(request, principal, workflow_id, Permission.READ)
    policy = await request.state.services.retry_policies.get(workflow.id)
    if policy is None:
        raise NotFound("this workflow has no retry policy: failed runs are not retried")
    return policy  # type: ignore[no-any-return]


@router.put("/workflows/{workflow_id}/retry-policy")
async def put_retry_policy(
    workflow_id: str, body: RetrySettings, principal: SignedIn, request: Request
) -> RetrySettings:
    workflow = await workflow_for(request, principal, workflow_id, Permission.EDIT_WORKFLOWS)
    actor = actor_of(principal)
    stored = await request.state.services.retry_policies.put(workflow.id, body, actor)
    await auditing.record(
        request,
        "workflow.retry_policy",
        actor,
        target=workflow.id,
        details=body.model_dump(mode="json"),
    )
    return stored  # type: ignore[no-any-return]


@router.delete("/workflows/{workflow_id}/retry-policy", status_code=204)
async def delete_retry_policy(workflow_id: str, principal: SignedIn, request: Request) -> Response:
    workflow = await workflow_for(request, principal, workflow_id, Permission.EDIT_WORKFLOWS)
    if not await request.state.services.retry_policies.delete(workflow.id):
        raise NotFound("this workflow has no retry policy")
    await auditing.record(
        request, "workflow.retry_policy", actor_of(principal), target=workflow.id, details={}
    )
    return Response(status_code=204)
