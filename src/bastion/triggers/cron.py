"""Cron schedules: pure occurrence computation over cronsim (Debian cron semantics).

Nothing here reads the clock or the database: every function takes the instants it needs,
and every instant it returns is an aware UTC datetime — the form the scheduler persists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from bastion.triggers.errors import InvalidTrigger

MAX_EXPRESSION_LENGTH = 200
MAX_JITTER_SECONDS = 3600
# due_between() counts skipped occurrences up to this many, then stops: the answer is "at
# least COUNT_CAP". Counting is iteration (no closed form), and a minute-granular expression
# in a DST zone costs ~40 µs per step, so the cap bounds a catch-up call to well under 1 s.
COUNT_CAP = 10_000
# A fixed reference instant for parsing and explaining: no clock reads.
_REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)
# cronsim gives up on a single step after 50 years without a match. Weekdays and leap years
# repeat every 400 years, so probing 2000-2400 in 50-year windows decides "never fires".
_PROBE_YEARS = range(2000, 2400, 50)


@dataclass(frozen=True)
class Schedule:
    expression: str
    timezone: str  # IANA name, e.g. "Europe/Berlin"
    start: datetime | None = None  # aware; no occurrence before it
    end: datetime | None = None  # aware; no occurrence after it
    jitter_seconds: int = 0  # 0..MAX_JITTER_SECONDS


def check(schedule: Schedule) -> None:
    """Raise InvalidTrigger, with a message saying why, unless the schedule can be used."""
    if not any(_fires(schedule.expression, datetime(y, 1, 1, tzinfo=UTC)) for y in _PROBE_YEARS):
        raise InvalidTrigger(f"cron expression {schedule.expression!r} never fires")
    _zone(schedule.timezone)
    for name, value in (("start", schedule.start), ("end", schedule.end)):
        if value is not None and value.utcoffset() is None:
            raise InvalidTrigger(f"{name} must include a time zone or UTC offset")
    if schedule.start is not None and schedule.end is not None:
        if schedule.end <= schedule.start:
            raise InvalidTrigger("end must be after start")
        if next_due(schedule, schedule.start - timedelta(seconds=1)) is None:
            raise InvalidTrigger(f"{schedule.expression!r} never fires between start and end")
    if not 0 <= schedule.jitter_seconds <= MAX_JITTER_SECONDS:
        raise InvalidTrigger(f"jitter must be between 0 and {MAX_JITTER_SECONDS} seconds")


def next_due(schedule: Schedule, after: datetime) -> datetime | None:
    """The first nominal occurrence strictly after `after` (aware, any zone), in UTC; never
    before `start`; None past `end` (or when nothing matches within cronsim's 50 years)."""
    return next(_occurrences(schedule, after), None)


def due_between(
    schedule: Schedule, after: datetime, until: datetime, limit: int
) -> tuple[list[datetime], int]:
    """Occurrences in (after, until], in UTC, oldest first: the first `limit` of them, and how
    many more there were beyond those (counted, not kept; capped at COUNT_CAP)."""
    if limit < 0:
        raise ValueError("limit must not be negative")
    _require_aware(until, "until")
    in_range = takewhile(lambda due: due <= until, _occurrences(schedule, after))
    first = list(islice(in_range, limit))
    return first, sum(1 for _ in islice(in_range, COUNT_CAP))


def newest(schedule: Schedule, *, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """Occurrences in (after, until], in UTC, newest first, at most `limit`: a catch-up
    after downtime looks back from now instead of walking the whole gap.

    cronsim's reverse walk only finds how far back to look; the occurrences are then read
    off the forward walk of next_due, the one exact across DST changes. (Begun inside a
    repeated hour, the reverse walk of a fixed-time expression, which steps through wall
    time, passes over that hour's first-pass run although it already happened.)"""
    _require_aware(after, "after")
    _require_aware(until, "until")
    if schedule.end is not None and schedule.end < until:
        until = schedule.end  # nothing is due after the end: do not walk back through it
    if limit <= 0 or until <= after:
        return []
    # cronsim answers strictly before its instant, truncated to the second.
    begin = (until + timedelta(seconds=1)).astimezone(_zone(schedule.timezone))
    steps = CronSim(schedule.expression, begin, reverse=True)
    since, seen = after, 0
    while seen < limit:
        try:
            due = next(steps).astimezone(UTC)
        except (StopIteration, OverflowError):
            break
        if due <= after or (schedule.start is not None and due < schedule.start):
            break
        if due <= until:
            seen += 1
            if seen == limit:
                since = due - timedelta(microseconds=1)
    found = list(takewhile(lambda due: due <= until, _occurrences(schedule, since)))
    return found[::-1][:limit]


def jitter(key: str, due: datetime, seconds: int) -> timedelta:
    """A delay in [0, seconds], millisecond resolution, derived from sha256(key, due) so every
    process computes the same fire time for the same occurrence."""
    if seconds < 0:
        raise ValueError("seconds must not be negative")
    if seconds == 0:
        return timedelta(0)
    _require_aware(due, "due")
    # Normalise to UTC so equal instants written in different zones jitter alike; the NUL
    # keeps ("a1", "2026…") and ("a", "12026…")-style concatenations apart.
    material = f"{key}\x00{due.astimezone(UTC).isoformat()}".encode()
    number = int.from_bytes(hashlib.sha256(material).digest()[:8], "big")
    return timedelta(milliseconds=number % (seconds * 1000 + 1))


def explain(schedule: Schedule) -> str:
    """English description plus the zone, e.g. "At 02:30 every day (Europe/Berlin)"."""
    try:
        text = CronSim(schedule.expression, _REFERENCE).explain()
    except Exception:  # explanation is cosmetic: any failure falls back to the expression
        text = schedule.expression
    return f"{text} ({schedule.timezone})"


def _occurrences(schedule: Schedule, after: datetime) -> Iterator[datetime]:
    """Occurrences strictly after `after` within [start, end], in UTC, oldest first."""
    _require_aware(after, "after")
    begin = after
    if schedule.start is not None and schedule.start > after:
        # cronsim answers strictly after its instant, truncated to the second: begin a second
        # early and let the filter below drop anything before `start`.
        begin = schedule.start - timedelta(seconds=1)
    # Start cronsim in the schedule's zone from the UTC instant: astimezone() sets `fold`, so
    # wildcard expressions (which cronsim steps through UTC) resume in the right pass of a
    # repeated hour (a wrong fold restarts an hour off: late would skip runs). Chaining from
    # persisted UTC values then equals one continuous iteration in local time.
    steps = _cronsim(schedule.expression, begin.astimezone(_zone(schedule.timezone)))
    while True:
        try:
            due = next(steps).astimezone(UTC)
        except (StopIteration, OverflowError):  # nothing within 50 years / past year 9999
            return
        if schedule.end is not None and due > schedule.end:
            return
        # For fixed-time 5-field expressions cronsim iterates naive wall time (Debian cron's
        # DST rule: a run in the repeated hour happens once, in its first pass), so `fold` is
        # lost: begun in the second pass it would answer that first-pass run, which lies
        # before `after` and already happened. Dropping it keeps "once" once.
        if due > after and (schedule.start is None or due >= schedule.start):
            yield due


def _fires(expression: str, at: datetime) -> bool:
    try:
        next(_cronsim(expression, at))
    except StopIteration:
        return False
    return True


def _cronsim(expression: str, at: datetime) -> CronSim:
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise InvalidTrigger(f"cron expression longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        return CronSim(expression, at)
    except CronSimError as exc:
        reason = str(exc)
        fields = expression.split()
        if reason == "Bad day-of-month" and len(fields) in (5, 6):
            # cronsim also says this when the day is valid but no chosen month has it
            # ("0 0 30 2 *"); retrying with every month tells the two apart.
            fields[-2] = "*"
            try:
                CronSim(" ".join(fields), at)
                reason = "no selected month has that day, so it never fires"
            except CronSimError:
                pass
        raise InvalidTrigger(f"invalid cron expression {expression!r}: {reason}") from exc


def _zone(name: str) -> ZoneInfo:
    # "localtime" resolves to the host's own zone: not a stable name for a stored schedule.
    if name != "localtime":
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # ValueError: malformed key; OSError: e.g. a directory such as "Europe"
    raise InvalidTrigger(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin")


def _require_aware(value: datetime, name: str) -> None:
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
