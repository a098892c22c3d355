"""Triggers of a workflow, webhooks and cron schedules: their settings, checked, stored.

Settings hold what a trigger does and the *name* of the vault credential with its
secret, never a secret: the original platform stored webhook secrets in clear and
echoed them from its API.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from limits import parse as parse_limit
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bastion.db import Database
from bastion.db.tables import CronOccurrence, Trigger, Workflow
from bastion.db.types import utcnow
from bastion.errors import Conflict, NotFound
from bastion.triggers import cron, signatures
from bastion.triggers.errors import InvalidTrigger
from bastion.workflows.store import NAME_PATTERN, check_name

Kind = Literal["webhook", "cron"]
MAX_BODY_BYTES = 16 * 2**20
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
# Never kept with a stored request, whatever the scheme: they carry credentials.
ALWAYS_SCRUBBED = frozenset({"authorization", "cookie", "proxy-authorization"})


def _limit(value: str) -> str:
    try:
        parse_limit(value)
    except ValueError:
        raise ValueError("must be a rate like '100/second' or '600/minute'") from None
    return value


def _header(value: str) -> str:
    if not _HEADER_NAME.fullmatch(value):
        raise ValueError("is not a valid header name")
    return value.lower()


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal[
        "none", "shared_secret", "hmac_sha256", "standard_webhooks", "stripe", "slack"
    ] = Field(description="'none' must be chosen explicitly")
    secret_credential: str | None = Field(default=None, pattern=f"^{NAME_PATTERN}$")
    secret_field: str = Field(default="value", min_length=1, max_length=64)
    secret_header: str = signatures.DEFAULT_SECRET_HEADER
    event_id_header: str | None = None
    tolerance_seconds: int = Field(default=signatures.DEFAULT_TOLERANCE, ge=1, le=3600)
    rotation_grace_seconds: int = Field(default=86400, ge=0, le=30 * 86400)
    methods: list[Literal["GET", "POST", "PUT", "PATCH", "DELETE"]] = Field(
        default=["POST"], min_length=1
    )
    required_headers: dict[str, str | None] = Field(default_factory=dict, max_length=20)
    required_query: dict[str, str | None] = Field(default_factory=dict, max_length=20)
    content_types: list[str] = Field(default_factory=list, max_length=20)
    max_body_bytes: int = Field(default=2**20, ge=0, le=MAX_BODY_BYTES)
    scrub_headers: list[str] = Field(default_factory=list, max_length=50)
    rate_limit: str = "100/second"  # for the trigger, all senders together
    ip_rate_limit: str = "20/second"  # for each source address

    _limits = field_validator("rate_limit", "ip_rate_limit")(_limit)
    _one_header = field_validator("secret_header")(_header)

    @field_validator("event_id_header")
    @classmethod
    def _optional_header(cls, value: str | None) -> str | None:
        return None if value is None else _header(value)

    @field_validator("scrub_headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        return [_header(v) for v in value]

    @field_validator("required_headers")
    @classmethod
    def _header_keys(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        return {_header(k): v for k, v in value.items()}

    @field_validator("content_types")
    @classmethod
    def _media_types(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value]

    def scrubbed(self) -> frozenset[str]:
        """Headers dropped before the request is stored with its run."""
        return (
            ALWAYS_SCRUBBED
            | signatures.credential_headers(self.scheme, self.secret_header)
            | frozenset(self.scrub_headers)
        )


class CronSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expression: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    jitter_seconds: int = Field(default=0, ge=0, le=3600)
    overlap: Literal["skip", "queue_one", "allow"] = "skip"
    catch_up: Literal["skip_missed", "run_once", "run_all"] = "skip_missed"
    catch_up_window_seconds: int = Field(default=3600, ge=1, le=7 * 86400)
    input: Any = None  # given to every run, under "data"

    def schedule(self) -> cron.Schedule:
        return cron.Schedule(
            self.expression, self.timezone, self.start, self.end, self.jitter_seconds
        )


def parse_settings(kind: str, raw: dict[str, Any]) -> WebhookSettings | CronSettings:
    model: type[WebhookSettings | CronSettings] = (
        WebhookSettings if kind == "webhook" else CronSettings
    )
    try:
        settings = model.model_validate(raw)
    except ValidationError as exc:
        # Location and rule only, never the submitted value.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()[:10]
        )
        raise InvalidTrigger(f"invalid {kind} settings: {problems}") from None
    if isinstance(settings, CronSettings):
        cron.check(settings.schedule())
    return settings


@functools.lru_cache(maxsize=4096)
def _stored(kind: str, text: str) -> WebhookSettings | CronSettings:
    model = WebhookSettings if kind == "webhook" else CronSettings
    return model.model_validate_json(text)


def settings_of(trigger: Trigger) -> WebhookSettings | CronSettings:
    """A stored trigger's settings: checked when they were saved, so only parsed here
    (and once per distinct text: the scheduler reads every due schedule's each pass)."""
    return _stored(trigger.kind, trigger.settings)


def first_fire(
    trigger_id: str, settings: CronSettings, after: datetime
) -> tuple[datetime | None, datetime | None]:
    """(due, fire) of a schedule's next occurrence after `after`: fire adds the jitter."""
    schedule = settings.schedule()
    due = cron.next_due(schedule, after)
    if due is None:
        return None, None
    return due, due + cron.jitter(trigger_id, due, schedule.jitter_seconds)


class Triggers:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        workflow: Workflow,
        *,
        kind: Kind,
        name: str,
        settings: WebhookSettings | CronSettings,
        enabled: bool,
        version: int | None,
        actor: str,
        now: datetime | None = None,
    ) -> Trigger:
        check_name(name)
        now = now or utcnow()
        trigger = Trigger(
            id=secrets.token_hex(16),
            workspace_id=workflow.workspace_id,
            workflow_id=workflow.id,
            kind=kind,
            name=name,
            enabled=enabled,
            version=version,
            settings=settings.model_dump_json(),
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        _schedule(trigger, settings, now)
        try:
            async with self.db.transaction() as session:
                session.add(trigger)
        except IntegrityError:
            raise Conflict(f"workflow already has a trigger named {name!r}") from None
        return trigger

    async def get(self, trigger_id: str) -> Trigger:
        async with self.db.session() as session:
            trigger = await session.get(Trigger, trigger_id[:64])
        if trigger is None:
            raise NotFound(f"no trigger {trigger_id[:40]!r}")
        return trigger

    async def of_workflow(self, workflow_id: str) -> Sequence[Trigger]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Trigger).where(Trigger.workflow_id == workflow_id).order_by(Trigger.name)
            )
            return rows.all()

    async def update(
        self,
        trigger_id: str,
        *,
        name: str | None = None,
        enabled: bool | None = None,
        version: int | Literal["keep"] | None = "keep",
        settings: WebhookSettings | CronSettings | None = None,
        now: datetime | None = None,
    ) -> Trigger:
        now = now or utcnow()
        try:
            async with self.db.transaction() as session:
                trigger = await session.get(Trigger, trigger_id, populate_existing=True)
                if trigger is None:
                    raise NotFound(f"no trigger {trigger_id[:40]!r}")
                if name is not None:
                    check_name(name)
                    trigger.name = name
                if enabled is not None:
                    trigger.enabled = enabled
                if version != "keep":
                    trigger.version = version
                if settings is not None:
                    trigger.settings = settings.model_dump_json()
                trigger.updated_at = now
                if settings is not None or enabled is not None:
                    _schedule(trigger, settings or settings_of(trigger), now)
        except IntegrityError:
            raise Conflict(f"workflow already has a trigger named {name!r}") from None
        return trigger

    async def delete(self, trigger_id: str) -> None:
        async with self.db.transaction() as session:
            trigger = await session.get(Trigger, trigger_id)
            if trigger is None:
                raise NotFound(f"no trigger {trigger_id[:40]!r}")
            await session.delete(trigger)

    async def occurrences(self, trigger_id: str, limit: int = 100) -> Sequence[CronOccurrence]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CronOccurrence)
                .where(CronOccurrence.trigger_id == trigger_id)
                .order_by(CronOccurrence.due_at.desc(), CronOccurrence.id.desc())
                .limit(limit)
            )
            return rows.all()


def _schedule(trigger: Trigger, settings: WebhookSettings | CronSettings, now: datetime) -> None:
    """A schedule (re)starts from now: enabling it does not fire what it missed while off."""
    if isinstance(settings, CronSettings) and trigger.enabled:
        trigger.next_due_at, trigger.next_fire_at = first_fire(trigger.id, settings, now)
    else:
        trigger.next_due_at = trigger.next_fire_at = None
