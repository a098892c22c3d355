"""Cron schedule computation: DST, chaining from persisted UTC values, DOM/DOW, windows,
catch-up counting, jitter and validation."""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import cache
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.triggers.cron import (
    COUNT_CAP,
    Schedule,
    check,
    due_between,
    explain,
    jitter,
    next_due,
)
from bastion.triggers.errors import InvalidTrigger

BERLIN = "Europe/Berlin"  # 2026-03-29 02:00 -> 03:00 (01:00Z); 2026-10-25 03:00 -> 02:00 (01:00Z)
NEW_YORK = "America/New_York"  # 2026-03-08 02:00 -> 03:00 (07:00Z); 2026-11-01 02:00 -> 01:00
TRANSITIONS = {
    BERLIN: [datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC)],
    NEW_YORK: [datetime(2026, 3, 8, 7, tzinfo=UTC), datetime(2026, 11, 1, 6, tzinfo=UTC)],
}
YEAR_START = datetime(2025, 12, 31, 12, tzinfo=UTC)
YEAR_END = datetime(2027, 1, 1, 12, tzinfo=UTC)
# Several shapes: fixed time in the skipped/repeated hour (Debian DST rule), a list of fixed
# minutes, minute and hour wildcards/steps, a DOM/DOW OR, 6-field (seconds first) forms.
CHAIN_EXPRESSIONS = [
    "30 2 * * *",
    "0,30 2 * * *",
    "30 1 * * *",
    "59 1-3 * * *",
    "*/30 1-3 * * *",
    "0 * * * *",
    "15 */2 * * *",
    "0 0 13 * 5",
    "30 0 */6 * * *",
    "0 30 2 * * *",
    "*/30 */20 1,2 * * *",
]


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def occurrences(expression: str, zone: str, after: datetime, until: datetime) -> list[datetime]:
    found, more = due_between(Schedule(expression, zone), after, until, 100_000)
    assert more == 0
    return found


@cache
def continuous(expression: str, zone: str) -> tuple[datetime, ...]:
    """One uninterrupted cronsim iteration in local time over 2026, as UTC instants."""
    out: list[datetime] = []
    for local in CronSim(expression, YEAR_START.astimezone(ZoneInfo(zone))):
        due = local.astimezone(UTC)
        if due > YEAR_END:
            return tuple(out)
        out.append(due)
    raise AssertionError("unreachable")


# --- DST -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        (BERLIN, utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
        (NEW_YORK, utc(2026, 3, 7, 17), [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
    ],
)
def test_fixed_time_job_in_skipped_hour_fires_at_the_end_of_the_gap(
    zone: str, after: datetime, expected: list[datetime]
) -> None:
    # 02:30 does not exist that day: it runs at 03:00 local, then at 02:30 again.
    schedule = Schedule("30 2 * * *", zone)
    first = next_due(schedule, after)
    assert first is not None
    assert [first, next_due(schedule, first)] == expected


@pytest.mark.parametrize(
    ("zone", "expression", "expected"),
    [
        (BERLIN, "30 2 * * *", [utc(2026, 10, 25, 0, 30)]),
        (BERLIN, "0,30 2 * * *", [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30)]),
        (NEW_YORK, "30 1 * * *", [utc(2026, 11, 1, 5, 30)]),
    ],
)
def test_fixed_time_job_in_repeated_hour_fires_once_in_the_first_pass(
    zone: str, expression: str, expected: list[datetime]
) -> None:
    day = expected[0].replace(hour=0, minute=0) - timedelta(hours=6)
    assert occurrences(expression, zone, day, day + timedelta(hours=24)) == expected


def test_fixed_time_job_restarted_inside_the_second_pass_does_not_fire_again() -> None:
    # 01:15Z is 02:15 CET, the second pass; the 02:30 run already happened at 00:30Z.
    assert next_due(Schedule("30 2 * * *", BERLIN), utc(2026, 10, 25, 1, 15)) == utc(
        2026, 10, 26, 1, 30
    )


BERLIN_HALF_HOURS = [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1)]
NEW_YORK_HALF_HOURS = [utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6)]


def quarters(year: int, month: int, day: int, hour: int, count: int) -> list[datetime]:
    return [utc(year, month, day, hour) + timedelta(minutes=15 * i) for i in range(count)]


@pytest.mark.parametrize(
    ("zone", "expression", "after", "until", "expected"),
    [
        # Berlin: 02:00, 02:30 CEST (00:00Z, 00:30Z), 02:00, 02:30 CET (01:00Z, 01:30Z), 03:00.
        (
            BERLIN,
            "*/30 * * * *",
            utc(2026, 10, 24, 23, 45),
            utc(2026, 10, 25, 2),
            [*BERLIN_HALF_HOURS, utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2)],
        ),
        (
            BERLIN,
            "0,30 * * * *",
            utc(2026, 10, 24, 23, 45),
            utc(2026, 10, 25, 2),
            [*BERLIN_HALF_HOURS, utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2)],
        ),
        # New York: 01:00, 01:30 EDT (05:00Z, 05:30Z), 01:00, 01:30 EST (06:00Z, 06:30Z), 02:00.
        (
            NEW_YORK,
            "*/30 * * * *",
            utc(2026, 11, 1, 4, 45),
            utc(2026, 11, 1, 7),
            [*NEW_YORK_HALF_HOURS, utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7)],
        ),
        # Every quarter of both passes: eight runs with the local hour 02 (Berlin) / 01 (NY).
        (
            BERLIN,
            "*/15 * * * *",
            utc(2026, 10, 24, 23, 50),
            utc(2026, 10, 25, 2),
            quarters(2026, 10, 25, 0, 9),
        ),
        (
            NEW_YORK,
            "*/15 * * * *",
            utc(2026, 11, 1, 4, 50),
            utc(2026, 11, 1, 7),
            quarters(2026, 11, 1, 5, 9),
        ),
        (
            BERLIN,
            "*/15 2 * * *",
            utc(2026, 10, 24, 23, 50),
            utc(2026, 10, 25, 2),
            quarters(2026, 10, 25, 0, 8),
        ),
    ],
)
def test_wildcard_job_fires_in_both_passes_of_the_repeated_hour(
    zone: str, expression: str, after: datetime, until: datetime, expected: list[datetime]
) -> None:
    assert occurrences(expression, zone, after, until) == expected


def test_wildcard_job_has_no_runs_in_the_skipped_hour() -> None:
    # 01:30 CET (00:30Z), then 03:00 CEST (01:00Z): 02:00 and 02:30 never exist.
    got = occurrences("*/30 * * * *", BERLIN, utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 1, 30))
    assert got == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)]


def test_hour_step_job_follows_the_wall_clock_across_both_transitions() -> None:
    # "*/2" in the hour field is a wildcard: 02:00 is skipped in spring, twice in autumn.
    spring = occurrences("0 */2 * * *", BERLIN, utc(2026, 3, 28, 22), utc(2026, 3, 29, 4))
    assert spring == [utc(2026, 3, 28, 23), utc(2026, 3, 29, 2), utc(2026, 3, 29, 4)]
    autumn = occurrences("0 */2 * * *", BERLIN, utc(2026, 10, 24, 23), utc(2026, 10, 25, 3))
    assert autumn == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 3)]


def test_six_field_fixed_time_job_gets_no_debian_dst_treatment() -> None:
    # cronsim applies the Debian rule to 5-field expressions only: with seconds, 02:30:00 is
    # a plain wall-clock match — absent on the spring day, twice on the autumn day.
    spring = occurrences("0 30 2 * * *", BERLIN, utc(2026, 3, 28, 12), utc(2026, 3, 30, 12))
    assert spring == [utc(2026, 3, 30, 0, 30)]
    autumn = occurrences("0 30 2 * * *", BERLIN, utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))
    assert autumn == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]


def test_fixed_time_runs_moved_out_of_the_skipped_hour_merge_with_the_next_run() -> None:
    # cronsim moves 02:00 to 03:00, which is also the 03:00 run: one run, not two.
    got = occurrences("0 1-3 * * *", BERLIN, utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 12))
    assert got == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1)]


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
def test_daily_job_is_23_hours_apart_in_spring_and_25_hours_apart_in_autumn(zone: str) -> None:
    gaps = {}
    for transition in TRANSITIONS[zone]:
        runs = occurrences("0 12 * * *", zone, transition - timedelta(days=2), transition)
        runs += occurrences("0 12 * * *", zone, transition, transition + timedelta(days=1))
        gaps[transition.month] = [b - a for a, b in pairwise(runs)]
    day = timedelta(hours=24)
    assert gaps[3] == [day, day - timedelta(hours=1)]
    assert gaps[10 if zone == BERLIN else 11] == [day, day + timedelta(hours=1)]


# --- Chaining from persisted UTC values ----------------------------------------------------


@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK])
@pytest.mark.parametrize("expression", CHAIN_EXPRESSIONS)
def test_chaining_from_utc_results_equals_one_continuous_iteration_over_a_year(
    zone: str, expression: str
) -> None:
    schedule = Schedule(expression, zone)
    chained: list[datetime] = []
    cursor = next_due(schedule, YEAR_START)
    while cursor is not None and cursor <= YEAR_END:
        assert cursor.tzinfo is UTC
        chained.append(cursor)
        cursor = next_due(schedule, cursor)  # restart from the persisted UTC value
    assert chained == list(continuous(expression, zone))
    assert all(a < b for a, b in pairwise(chained))  # no duplicates
    assert due_between(schedule, YEAR_START, YEAR_END, len(chained)) == (chained, 0)


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from([BERLIN, NEW_YORK]),
    expression=st.sampled_from(CHAIN_EXPRESSIONS),
    transition=st.integers(0, 1),
    offset=st.integers(-3 * 3600 * 1000, 3 * 3600 * 1000),
)
def test_next_due_from_any_instant_near_a_transition_is_the_next_continuous_occurrence(
    zone: str, expression: str, transition: int, offset: int
) -> None:
    # Restarting from an arbitrary instant (not just a previous result), millisecond-granular,
    # including the second pass of the repeated hour.
    after = TRANSITIONS[zone][transition] + timedelta(milliseconds=offset)
    reference = continuous(expression, zone)
    expected = reference[bisect_right(reference, after)]
    assert next_due(Schedule(expression, zone), after) == expected
    assert next_due(Schedule(expression, zone), after.astimezone(ZoneInfo(zone))) == expected


# --- Day-of-month / day-of-week ------------------------------------------------------------


def midnights(expression: str) -> list[date]:
    runs = occurrences(expression, "UTC", utc(2025, 12, 31), utc(2026, 4, 1))
    return [run.date() for run in runs]


def days_where(predicate: Callable[[date], bool]) -> list[date]:
    first = date(2026, 1, 1)
    days = [first + timedelta(days=i) for i in range(90)]
    return [d for d in days if predicate(d)]


def test_day_of_month_and_day_of_week_both_restricted_are_ored() -> None:
    # Debian cron: neither field starts with "*", so a day matches if EITHER matches.
    got = midnights("0 0 13 * 5")
    assert got == days_where(lambda d: d.day == 13 or d.weekday() == 4)
    assert date(2026, 1, 13) in got  # a Tuesday
    assert date(2026, 1, 2) in got  # a Friday


def test_day_of_week_alone_fires_only_on_that_weekday() -> None:
    assert midnights("0 0 * * 5") == days_where(lambda d: d.weekday() == 4)


def test_day_of_month_field_starting_with_a_star_is_anded_with_day_of_week() -> None:
    # cronsim follows Debian cron: a field STARTING with "*" (here "*/2" = days 1, 3, 5, …)
    # makes the relation AND, so only odd-numbered Fridays fire.
    got = midnights("0 0 */2 * 5")
    assert got == days_where(lambda d: d.day % 2 == 1 and d.weekday() == 4)
    assert got[:2] == [date(2026, 1, 9), date(2026, 1, 23)]


# --- Start/end window ----------------------------------------------------------------------


def test_nothing_is_due_before_start_and_an_occurrence_at_start_counts() -> None:
    schedule = Schedule("0 * * * *", "UTC", start=utc(2026, 5, 1, 10))
    assert next_due(schedule, utc(2026, 1, 1)) == utc(2026, 5, 1, 10)
    assert next_due(schedule, utc(2026, 5, 1, 10)) == utc(2026, 5, 1, 11)


def test_start_with_a_fraction_of_a_second_excludes_the_whole_second_before_it() -> None:
    schedule = Schedule("* * * * * *", "UTC", start=utc(2026, 5, 1, 10) + timedelta(0, 0, 500))
    assert next_due(schedule, utc(2026, 1, 1)) == utc(2026, 5, 1, 10, 0, 1)


def test_nothing_is_due_after_end_and_an_occurrence_at_end_counts() -> None:
    schedule = Schedule("0 * * * *", BERLIN, end=utc(2026, 5, 1, 10))
    assert next_due(schedule, utc(2026, 5, 1, 9)) == utc(2026, 5, 1, 10)
    assert next_due(schedule, utc(2026, 5, 1, 10)) is None
    assert next_due(schedule, utc(2027, 1, 1)) is None


def test_due_between_keeps_to_the_window() -> None:
    schedule = Schedule("0 * * * *", "UTC", start=utc(2026, 5, 1, 3), end=utc(2026, 5, 1, 5))
    assert due_between(schedule, utc(2026, 5, 1), utc(2026, 5, 2), 10) == (
        [utc(2026, 5, 1, 3), utc(2026, 5, 1, 4), utc(2026, 5, 1, 5)],
        0,
    )


# --- due_between (catch-up) ----------------------------------------------------------------


def test_due_between_returns_the_oldest_up_to_limit_and_counts_the_rest() -> None:
    schedule = Schedule("0 * * * *", "UTC")
    due, more = due_between(schedule, utc(2026, 5, 1, 0), utc(2026, 5, 1, 10), 3)
    assert due == [utc(2026, 5, 1, 1), utc(2026, 5, 1, 2), utc(2026, 5, 1, 3)]
    assert more == 7  # 04:00 … 10:00: `after` excluded, `until` included


def test_due_between_with_limit_zero_only_counts() -> None:
    assert due_between(Schedule("0 * * * *", "UTC"), utc(2026, 5, 1), utc(2026, 5, 2), 0) == (
        [],
        24,
    )


def test_due_between_stops_counting_at_the_cap() -> None:
    schedule = Schedule("* * * * * *", "UTC")  # every second: 172,800 in two days
    due, more = due_between(schedule, utc(2026, 5, 1), utc(2026, 5, 3), 5)
    assert len(due) == 5
    assert more == COUNT_CAP


def test_due_between_with_until_not_after_after_is_empty() -> None:
    schedule = Schedule("* * * * *", "UTC")
    assert due_between(schedule, utc(2026, 5, 1), utc(2026, 5, 1), 5) == ([], 0)
    assert due_between(schedule, utc(2026, 5, 2), utc(2026, 5, 1), 5) == ([], 0)


def test_due_between_rejects_a_negative_limit_and_naive_instants() -> None:
    schedule = Schedule("* * * * *", "UTC")
    with pytest.raises(ValueError, match="limit"):
        due_between(schedule, utc(2026, 5, 1), utc(2026, 5, 2), -1)
    with pytest.raises(ValueError, match="until must be timezone-aware"):
        due_between(schedule, utc(2026, 5, 1), datetime(2026, 5, 2), 1)
    with pytest.raises(ValueError, match="after must be timezone-aware"):
        next_due(schedule, datetime(2026, 5, 1))


# --- Jitter --------------------------------------------------------------------------------


def test_jitter_is_deterministic_and_independent_of_how_the_instant_is_written() -> None:
    due = utc(2026, 10, 25, 0, 30)
    assert jitter("trigger-1", due, 600) == jitter("trigger-1", due, 600)
    in_berlin = due.astimezone(ZoneInfo(BERLIN))
    assert jitter("trigger-1", due, 600) == jitter("trigger-1", in_berlin, 600)


def test_jitter_stays_within_range_at_millisecond_resolution() -> None:
    delays = [jitter("t", utc(2026, 1, 1) + timedelta(minutes=i), 30) for i in range(500)]
    assert all(timedelta(0) <= d <= timedelta(seconds=30) for d in delays)
    assert all(d.microseconds % 1000 == 0 for d in delays)
    assert max(delays) > timedelta(seconds=25)
    assert min(delays) < timedelta(seconds=5)


def test_jitter_differs_between_keys_and_between_occurrences() -> None:
    due = utc(2026, 5, 1, 12)
    assert len({jitter(f"trigger-{i}", due, 3600) for i in range(50)}) > 45
    assert len({jitter("t", due + timedelta(hours=i), 3600) for i in range(50)}) > 45


def test_jitter_is_zero_without_a_window_and_rejects_negative_seconds() -> None:
    assert jitter("t", utc(2026, 5, 1), 0) == timedelta(0)
    with pytest.raises(ValueError, match="seconds"):
        jitter("t", utc(2026, 5, 1), -1)


# --- check() -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule("30 2 * * *", BERLIN),
        Schedule("*/20 * * * * *", "UTC", jitter_seconds=3600),
        Schedule("0 0 29 2 *", NEW_YORK),  # leap years only
        Schedule("0 0 * 2 MON#5", "UTC"),  # Feb 29 on a Monday: 2016, 2044, …
        Schedule("0 9 * * 1-5", BERLIN, start=utc(2026, 1, 1), end=utc(2026, 1, 6)),
    ],
)
def test_check_accepts_valid_schedules(schedule: Schedule) -> None:
    check(schedule)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (Schedule("61 * * * *", "UTC"), r"invalid cron expression '61 \* \* \* \*': Bad minute"),
        (Schedule("* * *", "UTC"), "Wrong number of fields"),
        (Schedule("0 0 32 * *", "UTC"), "Bad day-of-month"),
        (Schedule("0 " * 101, "UTC"), "longer than 200 characters"),
        (Schedule("0 0 * * *", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (Schedule("0 0 * * *", "Europe"), "unknown time zone 'Europe'"),
        (Schedule("0 0 * * *", "../etc/passwd"), "unknown time zone"),
        (Schedule("0 0 * * *", ""), "unknown time zone"),
        (Schedule("0 0 * * *", "localtime"), "unknown time zone"),
        (Schedule("0 0 * * *", "UTC", start=datetime(2026, 1, 1)), "start must include"),
        (Schedule("0 0 * * *", "UTC", end=datetime(2026, 1, 1)), "end must include"),
        (Schedule("0 0 * * *", "UTC", utc(2026, 2, 1), utc(2026, 2, 1)), "end must be after"),
        (Schedule("0 0 * * *", "UTC", utc(2026, 2, 1), utc(2026, 1, 1)), "end must be after"),
        (
            Schedule("0 0 * 2 *", "UTC", utc(2026, 3, 1), utc(2026, 12, 31)),
            "never fires between start and end",
        ),
        (Schedule("0 0 * * *", "UTC", jitter_seconds=-1), "jitter must be between 0 and 3600"),
        (Schedule("0 0 * * *", "UTC", jitter_seconds=3601), "jitter must be between 0 and 3600"),
    ],
)
def test_check_rejects_with_a_clear_message(schedule: Schedule, message: str) -> None:
    with pytest.raises(InvalidTrigger, match=message):
        check(schedule)


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 30 2 *",  # cronsim refuses it at parse time
        "0 0 31 4,6,9,11 *",
        "0 0 */3 2 MON#5",  # AND: days 1,4,…,28 vs the fifth Monday, always Feb 29: no match
        "* * * */3 2 MON#5",  # the same with a seconds field
    ],
)
def test_check_rejects_a_never_firing_expression_promptly(expression: str) -> None:
    began = time.perf_counter()
    with pytest.raises(InvalidTrigger, match="never fires"):
        check(Schedule(expression, BERLIN))
    assert time.perf_counter() - began < 2


def test_next_due_of_a_never_firing_expression_returns_none_promptly() -> None:
    began = time.perf_counter()
    assert next_due(Schedule("0 0 */3 2 MON#5", BERLIN), utc(2026, 1, 1)) is None
    assert time.perf_counter() - began < 1


# --- explain() -----------------------------------------------------------------------------


def test_explain_describes_the_expression_and_names_the_zone() -> None:
    assert explain(Schedule("30 2 * * *", BERLIN)) == "At 02:30 every day (Europe/Berlin)"
    assert explain(Schedule("0 0 13 * 5", "UTC")) == (
        "At 00:00 on the 13th day of month and on Friday (UTC)"
    )


def test_explain_falls_back_to_the_expression_when_it_cannot_parse() -> None:
    assert explain(Schedule("not a cron", "Nowhere/City")) == "not a cron (Nowhere/City)"
