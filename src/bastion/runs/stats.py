"""How many runs started per hour, by status: one grouped query over the run id index.

Run ids begin with their creation time, so each hour's boundary is an id and bucketing is
a CASE over id ranges: portable across SQLite and PostgreSQL, and it never reads a row
outside the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, literal, select

from bastion.db import Database
from bastion.db.tables import Run
from bastion.runs.records import Status, id_at

MAX_HOURS = 24 * 7


@dataclass(frozen=True)
class Bucket:
    start: datetime
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class RunCounts:
    start: datetime
    hours: int
    buckets: list[Bucket]

    @property
    def totals(self) -> dict[str, int]:
        found = {status.value: 0 for status in Status}
        for bucket in self.buckets:
            for status, count in bucket.counts.items():
                found[status] = found.get(status, 0) + count
        return found

    def as_dict(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(),
            "hours": self.hours,
            "statuses": [status.value for status in Status],
            "totals": self.totals,
            "buckets": [{"start": b.start.isoformat(), "counts": b.counts} for b in self.buckets],
        }


async def hourly_counts(
    db: Database, workspaces: tuple[int, ...] | None, now: datetime, hours: int = 24
) -> RunCounts:
    """Runs created in the `hours` whole hours up to and including the current one."""
    if not 1 <= hours <= MAX_HOURS:
        raise ValueError(f"hours must be between 1 and {MAX_HOURS}")
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    starts = [start + timedelta(hours=n) for n in range(hours)]
    buckets = [Bucket(moment) for moment in starts]
    if workspaces is not None and not workspaces:
        return RunCounts(start, hours, buckets)
    whens = [(Run.id < id_at(moment), n) for n, moment in enumerate(starts[1:])]
    bucket = (case(*whens, else_=hours - 1) if whens else literal(0)).label("bucket")
    query = (
        select(bucket, Run.status, func.count())
        .where(Run.id >= id_at(start))
        .group_by(bucket, Run.status)
    )
    if workspaces is not None:
        query = query.where(Run.workspace_id.in_(workspaces))
    async with db.session() as session:
        for index, status, count in await session.execute(query):
            buckets[int(index)].counts[status] = int(count)
    return RunCounts(start, hours, buckets)
