"""Webhook ingress: from an HTTP delivery to a durably queued run.

Order matters, and it is the fix for the original platform, which ran a health check and
an audit write before authentication and never counted failures:

1. find the trigger (unknown and disabled answer alike: 404) and check the method;
2. refuse an address that keeps failing authentication, before reading its body;
3. authenticate: the secret comes from an in-memory cache, so a flood of bad signatures
   touches neither the vault nor the audit chain; failures are counted per address and
   written to the audit trail as one aggregate record per trigger and minute;
4. validate required headers, query values and the content type;
5. rate-limit per trigger and per source address (shared by all servers with Redis);
6. de-duplicate on the event id, store the run (health guard and audit inside the same
   transaction), and only then answer 202.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from prometheus_client import Counter
from sqlalchemy import delete

from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.db.tables import Trigger, WebhookDelivery, Workflow
from bastion.db.types import utcnow
from bastion.errors import (
    BastionError,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    Unavailable,
    UnsupportedMediaType,
)
from bastion.runs.records import Trigger as TriggerKind
from bastion.stores.ratelimit import RateLimiter
from bastion.triggers import signatures
from bastion.triggers.deliveries import Accepted, DeliveryWriter
from bastion.triggers.errors import InvalidTrigger, SignatureInvalid
from bastion.triggers.gate import Gate, Origin, RunRequest
from bastion.triggers.store import Triggers, WebhookSettings, settings_of
from bastion.vault.credentials import Vault
from bastion.vault.policy import AccessContext
from bastion.workflows.store import Workflows

log = logging.getLogger("bastion.triggers")
REFUSED = Counter(
    "bastion_webhook_auth_failures", "Webhook deliveries refused by authentication", ["trigger"]
)
TRIGGER_TTL_SECONDS = 2.0  # an edit or a disable reaches every server within this
SECRET_TTL_SECONDS = 10.0  # a rotation reaches every server within this
AUTH_FAILURES = "30/minute"  # per source address, across triggers
DEDUP_RETENTION = timedelta(days=7)
V = TypeVar("V")


@dataclass(frozen=True)
class Intake:
    """A trigger that may take this delivery, as far as can be told before its body."""

    trigger: Trigger
    workflow: Workflow
    settings: WebhookSettings


@dataclass(frozen=True)
class Delivery:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names; values decoded as latin-1
    body: bytes
    source_ip: str
    request_id: str = ""


class _Cache(Generic[V]):
    """Values kept `ttl` seconds. Concurrent misses of a key share one load: a flood that
    meets an expired entry would otherwise run the same queries once per request."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._values: dict[str, tuple[float, V]] = {}
        self._loading: dict[str, asyncio.Task[V]] = {}

    async def get(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        cached = self._values.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.create_task(self._load(key, load))
        # Shielded: a client that hangs up must not cancel the load others wait for.
        return await asyncio.shield(task)

    async def _load(self, key: str, load: Callable[[], Awaitable[V]]) -> V:
        task = asyncio.current_task()
        try:
            value = await load()
            if self._loading.get(key) is task:  # not forgotten meanwhile
                if len(self._values) >= self.max_entries:
                    self._values.clear()
                self._values[key] = (time.monotonic() + self.ttl, value)
            return value
        finally:
            if self._loading.get(key) is task:
                del self._loading[key]

    def forget(self, key: str) -> None:
        """Drop `key`; a load in progress keeps its answer for its waiters only."""
        self._values.pop(key, None)
        self._loading.pop(key, None)


@dataclass
class _Failures:
    count: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    addresses: set[str] = field(default_factory=set)


class Webhooks:
    def __init__(
        self,
        gate: Gate,
        triggers: Triggers,
        workflows: Workflows,
        vault: Vault,
        limiter: RateLimiter,
        audit: AuditLog,
    ) -> None:
        self.gate = gate
        self.triggers = triggers
        self.vault = vault
        self.limiter = limiter
        self.audit = audit
        self.workflows = workflows
        self.writer = DeliveryWriter(gate)
        # Bounded: trigger ids in paths are the sender's choice.
        self._triggers = _Cache[Intake | None](TRIGGER_TTL_SECONDS, max_entries=10_000)
        self._keys = _Cache[list[bytes]](SECRET_TTL_SECONDS, max_entries=10_000)
        self._failures: dict[str, _Failures] = {}

    def forget(self, trigger_id: str) -> None:
        """Drop what this process cached of a trigger (it was edited or deleted here)."""
        self._triggers.forget(trigger_id)
        self._keys.forget(trigger_id)

    async def check_secret(self, workspace_id: int, settings: WebhookSettings) -> None:
        """Fail closed at configuration time: an enabled webhook with a scheme must name
        a credential of its workspace that has the secret's field."""
        if settings.scheme == "none":
            return
        name = settings.secret_credential
        if name is None:
            raise InvalidTrigger(
                f"scheme {settings.scheme} needs secret_credential (a vault credential "
                "holding the secret) before the webhook can be enabled"
            )
        try:
            credential_id = await self.vault.id_named(workspace_id, name)
        except NotFound:
            raise InvalidTrigger(f"no credential named {name!r} in this workspace") from None
        fields = await self.vault.current_field_names(credential_id)
        if settings.secret_field not in fields:
            raise InvalidTrigger(f"credential {name!r} has no field {settings.secret_field!r}")

    # -- before the body ----------------------------------------------------------------

    async def open(self, trigger_id: str, method: str, source_ip: str) -> Intake:
        intake = await self._intake(trigger_id)
        if intake is None:
            raise NotFound("no such webhook")
        if method not in intake.settings.methods:
            raise MethodNotAllowed(f"{method} is not accepted here", list(intake.settings.methods))
        if not await self.limiter.test(AUTH_FAILURES, "hook-auth-failures", source_ip):
            retry = await self.limiter.retry_after(AUTH_FAILURES, "hook-auth-failures", source_ip)
            raise TooManyRequests("too many failed attempts from this address", retry)
        return intake

    async def _intake(self, trigger_id: str) -> Intake | None:
        # Cut as Triggers.get cuts it: a cached miss then costs at most 64 characters,
        # however long the path an attacker sends.
        trigger_id = trigger_id[:64]
        return await self._triggers.get(trigger_id, lambda: self._load_intake(trigger_id))

    async def _load_intake(self, trigger_id: str) -> Intake | None:
        try:
            trigger = await self.triggers.get(trigger_id)
            if trigger.kind != "webhook" or not trigger.enabled:
                return None
            settings = settings_of(trigger)
            assert isinstance(settings, WebhookSettings)
            return Intake(trigger, await self.workflows.get(trigger.workflow_id), settings)
        except NotFound:
            return None

    # -- with the body ------------------------------------------------------------------

    async def accept(self, intake: Intake, delivery: Delivery) -> str:
        """Authenticate, validate, rate-limit and store; the run id (the original run's
        for a replayed event id)."""
        trigger, settings = intake.trigger, intake.settings
        secret_keys = await self._secret_keys(intake)
        if settings.scheme != "none" and not secret_keys:
            # Fail closed, but as our fault: counted against the sender, a secret the
            # operator broke (deleted, its field renamed) would lock out the sender's
            # address for every other webhook too.
            raise Unavailable("this webhook's secret cannot be used; see the server log")
        try:
            verified = signatures.verify(
                settings.scheme,
                secret_keys,
                delivery.headers,
                delivery.body,
                now=time.time(),
                tolerance=settings.tolerance_seconds,
                secret_header=settings.secret_header,
                event_id_header=settings.event_id_header,
            )
        except SignatureInvalid as exc:
            await self.limiter.hit(AUTH_FAILURES, "hook-auth-failures", delivery.source_ip)
            self._count_failure(trigger.id, delivery.source_ip, str(exc))
            raise
        _validate(settings, delivery)
        # The sender's own limit first: a delivery it refuses must not spend the budget
        # all senders share, or one noisy sender would lock the others out.
        for limit, keys in (
            (settings.ip_rate_limit, ("hook-ip", trigger.id, delivery.source_ip)),
            (settings.rate_limit, ("hook", trigger.id)),
        ):
            if not await self.limiter.hit(limit, *keys):
                retry = await self.limiter.retry_after(limit, *keys)
                raise TooManyRequests("rate limit exceeded for this webhook", retry)
        origin = Origin(
            TriggerKind.WEBHOOK,
            f"webhook:{trigger.id}",
            trigger.id,
            delivery.source_ip,
            delivery.request_id,
        )
        data = _stored_request(settings, delivery, verified.event_id)
        try:
            run = self.gate.build(intake.workflow, RunRequest(data, trigger.version), origin)
        except InvalidInput:
            raise PayloadTooLarge("the request is too large to store with its run") from None
        run_id = await self.writer.store(Accepted(run, origin, trigger.id, verified.event_id))
        if run_id == run.id:
            await self.gate.dispatcher.submit([run])
        return run_id

    async def _secret_keys(self, intake: Intake) -> list[bytes]:
        settings = intake.settings
        if settings.scheme == "none" or settings.secret_credential is None:
            return []
        return await self._keys.get(intake.trigger.id, lambda: self._load_keys(intake))

    async def _load_keys(self, intake: Intake) -> list[bytes]:
        trigger, settings = intake.trigger, intake.settings
        assert settings.secret_credential is not None
        context = AccessContext(
            f"trigger:{trigger.id}", trigger.workspace_id, workflow_id=trigger.workflow_id
        )
        try:
            credential_id = await self.vault.id_named(
                trigger.workspace_id, settings.secret_credential
            )
            versions = await self.vault.resolve_recent(
                context, credential_id, timedelta(seconds=settings.rotation_grace_seconds)
            )
            return [
                signatures.key_bytes(settings.scheme, fields[settings.secret_field].reveal())
                for fields in versions
                if settings.secret_field in fields
            ]
        except BastionError as exc:
            # Fail closed: no key, so every delivery is refused until it is fixed.
            log.warning("webhook %s: its secret cannot be used: %s", trigger.id, exc)
            return []

    # -- failed authentication, aggregated ----------------------------------------------

    def _count_failure(self, trigger_id: str, source_ip: str, reason: str) -> None:
        REFUSED.labels(trigger_id).inc()
        failures = self._failures.setdefault(trigger_id, _Failures())
        failures.count += 1
        failures.reasons[reason] += 1
        if len(failures.addresses) < 20:
            failures.addresses.add(source_ip)

    async def report_failures(self) -> None:
        """One audit record per trigger for the failures counted since the last report."""
        pending, self._failures = self._failures, {}
        for trigger_id, failures in pending.items():
            log.warning(
                "webhook %s: %d failed authentications from %d address(es)",
                trigger_id,
                failures.count,
                len(failures.addresses),
            )
            await self.audit.record(
                Event(
                    action="webhook.auth_failed",
                    actor="anonymous",
                    target=trigger_id,
                    outcome="denied",
                    reason=f"{failures.count} failed authentication(s)",
                    details={
                        "count": failures.count,
                        "reasons": dict(failures.reasons),
                        "addresses": sorted(failures.addresses),
                    },
                )
            )

    async def prune(self) -> None:
        """Event ids are kept long enough to outlive any sender's retries."""
        cutoff = utcnow() - DEDUP_RETENTION
        await self.gate.dispatcher.ledger.write(
            lambda s: s.execute(delete(WebhookDelivery).where(WebhookDelivery.received_at < cutoff))
        )


def _validate(settings: WebhookSettings, delivery: Delivery) -> None:
    for name, expected in settings.required_headers.items():
        if not _matches(delivery.headers.get(name), expected):
            raise InvalidInput(f"header {name} is missing or has the wrong value")
    query = dict(delivery.query)
    for name, expected in settings.required_query.items():
        if not _matches(query.get(name), expected):
            raise InvalidInput(f"query parameter {name[:100]!r} is missing or has the wrong value")
    if settings.content_types:
        media = delivery.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media not in settings.content_types:
            raise UnsupportedMediaType(
                f"content type must be one of {', '.join(settings.content_types)}"
            )


def _matches(value: str | None, expected: str | None) -> bool:
    """Present, and equal to `expected` when one is pinned: compared in constant time, as
    an operator may pin something close to a secret despite the docs."""
    if value is None:
        return False
    return expected is None or hmac.compare_digest(value.encode(), expected.encode())


def _stored_request(
    settings: WebhookSettings, delivery: Delivery, event_id: str | None
) -> dict[str, Any]:
    """What the run gets: the request without any header that carries a credential."""
    scrubbed = settings.scrubbed()
    data: dict[str, Any] = {
        "method": delivery.method,
        "path": delivery.path,
        "query": [list(pair) for pair in delivery.query],
        "headers": {k: v for k, v in delivery.headers.items() if k not in scrubbed},
        "source_ip": delivery.source_ip,
        "event_id": event_id,
    }
    try:
        body = json.loads(delivery.body, parse_constant=_no_constants) if delivery.body else None
        if not delivery.body.isascii() or b"\\u" in delivery.body:
            # JSON can carry an unpaired surrogate (\ud800 escaped, or as raw bytes), which no
            # UTF-8 store can hold: UnicodeEncodeError (a ValueError) keeps the body as text.
            json.dumps(body, ensure_ascii=False).encode("utf-8")
        data["body"] = body
    except (ValueError, RecursionError):
        try:
            data["body_text"] = delivery.body.decode("utf-8")
        except UnicodeDecodeError:
            data["body_base64"] = base64.b64encode(delivery.body).decode("ascii")
    return data


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: kept as text instead
