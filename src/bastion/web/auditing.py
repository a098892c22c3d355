"""Audit records for HTTP events: who, from which address, under which request id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from bastion.audit.chain import Event
from bastion.logs import request_id
from bastion.web.middleware.client_ip import client_ip


def event(
    request: Request,
    action: str,
    actor: str,
    *,
    target: str = "",
    outcome: str = "success",
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> Event:
    """An audit event naming the caller's address and the request id."""
    return Event(
        action=action,
        actor=actor,
        target=target,
        outcome=outcome,
        reason=reason,
        client_ip=client_ip(request),
        request_id=request_id.get(),
        details=details or {},
    )


async def record(
    request: Request,
    action: str,
    actor: str,
    *,
    target: str = "",
    outcome: str = "success",
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """In its own transaction; in fail-closed mode a lost record refuses the request."""
    await request.state.services.audit.record(
        event(
            request,
            action,
            actor,
            target=target,
            outcome=outcome,
            reason=reason,
            details=details,
        )
    )
