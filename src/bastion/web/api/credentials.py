"""/api/v1/credentials and /api/v1/credential-alerts.

Answers describe credentials without a single secret byte or ciphertext; the only route
that returns material is the reveal, which the vault audits with its reason. Permission
and scope are checked by the vault itself, so the CLI and the API cannot disagree.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from bastion.accounts.rbac import Permission, Principal
from bastion.db.tables import Credential, CredentialAlert
from bastion.errors import PermissionDenied, TooManyRequests
from bastion.logs import request_id
from bastion.vault import alerts
from bastion.vault.policy import AccessContext, ScopePolicy
from bastion.vault.secret import Secret
from bastion.web.api.principals import Requires
from bastion.web.middleware.client_ip import client_ip

router = APIRouter(tags=["credentials"])
REAUTH_FAILED = "re-enter your password to reveal a credential"
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]
InWorkspace = Annotated[Principal, Depends(Requires(Permission.READ))]


def _context(request: Request, principal: Principal, workspace_id: int) -> AccessContext:
    return AccessContext.of(
        principal, workspace_id, client_ip=client_ip(request), request_id=request_id.get()
    )


class Policy(BaseModel):
    workspaces: list[int] = Field(default_factory=list, max_length=100)
    workflows: list[str] = Field(default_factory=list, max_length=100)
    roles: list[str] = Field(default_factory=list, max_length=4)


class CredentialIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["secret", "oauth2"] = "secret"
    description: str = Field(default="", max_length=500)
    fields: dict[str, str] = Field(description="Secret values by field name; never echoed.")
    settings: dict[str, str] = Field(default_factory=dict)
    policy: Policy = Field(default_factory=Policy)
    rotation_period_days: int | None = Field(default=None, ge=1, le=3650)


class RotateIn(BaseModel):
    fields: dict[str, str]


class CredentialPatch(BaseModel):
    description: str | None = Field(default=None, max_length=500)
    policy: Policy | None = None
    rotation_period_days: int | None = Field(default=None, ge=1, le=3650)


class RevealIn(BaseModel):
    reason: str = Field(min_length=3, max_length=500)
    password: str | None = Field(
        default=None,
        max_length=1024,
        description="The caller's password: required from a console session (a fresh "
        "re-authentication, so a hijacked session alone reveals nothing); not from tokens.",
    )


class CredentialOut(BaseModel):
    id: str
    workspace_id: int
    name: str
    kind: str
    description: str
    version: int
    fields: list[str]
    settings: dict[str, Any]
    policy: Policy
    health: str
    health_reason: str
    health_checked_at: datetime | None
    expires_at: datetime | None
    rotation_period_days: int | None
    rotated_at: datetime
    created_at: datetime
    created_by: str


async def _out(request: Request, credential: Credential) -> CredentialOut:
    vault = request.state.services.vault
    policy = ScopePolicy.from_json(credential.policy)
    return CredentialOut(
        id=credential.id,
        workspace_id=credential.workspace_id,
        name=credential.name,
        kind=credential.kind,
        description=credential.description,
        version=credential.version,
        fields=await vault.field_names(credential.id, credential.version),
        settings=json.loads(credential.settings),
        policy=Policy(
            workspaces=list(policy.workspaces),
            workflows=list(policy.workflows),
            roles=list(policy.roles),
        ),
        health=credential.health,
        health_reason=credential.health_reason,
        health_checked_at=credential.health_checked_at,
        expires_at=credential.expires_at,
        rotation_period_days=credential.rotation_period_days,
        rotated_at=credential.rotated_at,
        created_at=credential.created_at,
        created_by=credential.created_by,
    )


def _policy(policy: Policy) -> ScopePolicy:
    return ScopePolicy(tuple(policy.workspaces), tuple(policy.workflows), tuple(policy.roles))


def _secrets(fields: dict[str, str]) -> dict[str, Secret]:
    return {name: Secret(value) for name, value in fields.items()}


async def _home(request: Request, principal: Principal, credential_id: str) -> AccessContext:
    """The context for acting on a credential: the caller in the credential's workspace."""
    workspace_id = await request.state.services.vault.workspace_of(credential_id)
    return _context(request, principal, workspace_id)


@router.get("/credentials")
async def list_(workspace_id: int, principal: InWorkspace, request: Request) -> list[CredentialOut]:
    found = await request.state.services.vault.list_in_scope(
        _context(request, principal, workspace_id)
    )
    return [await _out(request, credential) for credential in found]


@router.post("/credentials", status_code=201)
async def create(
    workspace_id: int, body: CredentialIn, principal: InWorkspace, request: Request
) -> CredentialOut:
    credential = await request.state.services.vault.create(
        _context(request, principal, workspace_id),
        name=body.name,
        kind=body.kind,
        fields=_secrets(body.fields),
        settings=body.settings,
        policy=_policy(body.policy),
        description=body.description,
        rotation_period_days=body.rotation_period_days,
    )
    return await _out(request, credential)


@router.get("/credentials/{credential_id}")
async def describe(credential_id: str, principal: SignedIn, request: Request) -> CredentialOut:
    context = await _home(request, principal, credential_id)
    return await _out(request, await request.state.services.vault.describe(context, credential_id))


@router.patch("/credentials/{credential_id}")
async def update(
    credential_id: str, body: CredentialPatch, principal: SignedIn, request: Request
) -> CredentialOut:
    context = await _home(request, principal, credential_id)
    credential = await request.state.services.vault.update(
        context,
        credential_id,
        description=body.description,
        policy=_policy(body.policy) if body.policy is not None else None,
        rotation_period_days=body.rotation_period_days,
    )
    return await _out(request, credential)


@router.post("/credentials/{credential_id}/rotate")
async def rotate(
    credential_id: str, body: RotateIn, principal: SignedIn, request: Request
) -> CredentialOut:
    context = await _home(request, principal, credential_id)
    vault = request.state.services.vault
    return await _out(request, await vault.rotate(context, credential_id, _secrets(body.fields)))


async def _reauthenticate(
    request: Request,
    principal: Principal,
    context: AccessContext,
    credential_id: str,
    password: str | None,
) -> None:
    """The console user's password, checked as at sign-in and throttled with it."""
    services = request.state.services
    address = client_ip(request)
    wait = await services.throttle.retry_after(address, principal.username)
    if wait is not None:
        raise TooManyRequests("too many failed attempts", retry_after=wait)
    if not password:
        # As long as a wrong password takes: the timing tells nothing either way.
        await services.credentials.pretend()
    elif await services.credentials.check(principal.username, password):
        # As at sign-in: a success clears the failures, so an operator who mistyped
        # once is not a step closer to being locked out of signing in.
        await services.throttle.succeeded(address, principal.username)
        return
    await services.throttle.failed(address, principal.username)
    await services.audit.record(
        services.vault.event(
            "reveal", context, credential_id, "denied", REAUTH_FAILED, password_given=bool(password)
        )
    )
    raise PermissionDenied(REAUTH_FAILED)


@router.post("/credentials/{credential_id}/reveal")
async def reveal(
    credential_id: str, body: RevealIn, principal: SignedIn, request: Request
) -> dict[str, str]:
    context = await _home(request, principal, credential_id)
    vault = request.state.services.vault
    if principal.token_id is None:
        # Permission first: a viewer learns nothing by typing passwords here.
        await vault.check(context, credential_id, Permission.REVEAL_CREDENTIALS, "reveal")
        await _reauthenticate(request, principal, context, credential_id, body.password)
    fields = await vault.reveal(context, credential_id, reason=body.reason)
    return {name: value.reveal() for name, value in fields.items()}


@router.post("/credentials/{credential_id}/test")
async def test(credential_id: str, principal: SignedIn, request: Request) -> CredentialOut:
    context = await _home(request, principal, credential_id)
    return await _out(request, await request.state.services.health.test(context, credential_id))


@router.delete("/credentials/{credential_id}", status_code=204)
async def delete(credential_id: str, principal: SignedIn, request: Request) -> Response:
    context = await _home(request, principal, credential_id)
    await request.state.services.vault.delete(context, credential_id)
    return Response(status_code=204)


class AlertOut(BaseModel):
    id: int
    credential_id: str
    credential_name: str
    workspace_id: int
    kind: str
    message: str
    raised_at: datetime
    resolved_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None

    @classmethod
    def of(cls, alert: CredentialAlert, credential: Credential) -> AlertOut:
        return cls(
            id=alert.id,
            credential_id=credential.id,
            credential_name=credential.name,
            workspace_id=credential.workspace_id,
            kind=alert.kind,
            message=alert.message,
            raised_at=alert.raised_at,
            resolved_at=alert.resolved_at,
            acknowledged_at=alert.acknowledged_at,
            acknowledged_by=alert.acknowledged_by,
        )


def _visible(principal: Principal, permission: Permission = Permission.READ) -> list[int] | None:
    if principal.is_admin:
        return None
    return [ws for ws in principal.roles if principal.can(permission, ws)]


@router.get("/credential-alerts")
async def list_alerts(
    principal: SignedIn, request: Request, include_resolved: bool = False
) -> list[AlertOut]:
    async with request.state.services.db.session() as session:
        rows = await alerts.list_alerts(
            session, _visible(principal), include_resolved=include_resolved
        )
    return [AlertOut.of(alert, credential) for alert, credential in rows]


@router.post("/credential-alerts/{alert_id}/acknowledge")
async def acknowledge(alert_id: int, principal: SignedIn, request: Request) -> AlertOut:
    async with request.state.services.db.transaction() as session:
        alert = await alerts.acknowledge(
            session,
            alert_id,
            f"user:{principal.username}",
            _visible(principal, Permission.MANAGE_CREDENTIALS),
        )
        credential = await session.get(Credential, alert.credential_id)
        assert credential is not None
        return AlertOut.of(alert, credential)
