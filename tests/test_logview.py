from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bastion import logview


def line(n: int, level: str = "INFO", day: int = 2) -> str:
    return f"2025-01-{day:02d}T10:00:{n % 60:02d}.000Z {level} bastion.x [-] message {n}"


def write(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{text}\n" for text in lines))


def test_reads_newest_first_across_rotated_files_and_pages_with_a_cursor(tmp_path: Path) -> None:
    write(tmp_path / "bastion.log.1", [line(n) for n in range(0, 5)])
    write(tmp_path / "bastion.log", [line(n) for n in range(5, 10)])
    seen: list[str] = []
    cursor = ""
    while True:
        page = logview.read(tmp_path, logview.LogQuery(cursor=cursor, limit=3))
        seen += [entry.message for entry in page.lines]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"message {n}" for n in range(9, -1, -1)]


def test_filters_by_text_level_and_time_and_stops_before_the_range(tmp_path: Path) -> None:
    write(
        tmp_path / "bastion.log",
        [line(1, day=1), line(2, "ERROR", day=2), line(3, day=2), line(4, "WARNING", day=3)],
    )

    def messages(**query: object) -> list[str]:
        page = logview.read(tmp_path, logview.LogQuery(**query))  # type: ignore[arg-type]
        return [entry.message for entry in page.lines]

    assert messages(text="MESSAGE 3") == ["message 3"]
    assert messages(level="WARNING") == ["message 4", "message 2"]
    day = datetime(2025, 1, 2, tzinfo=UTC)
    assert messages(since=day, until=datetime(2025, 1, 3, tzinfo=UTC)) == [
        "message 3",
        "message 2",
    ]


def test_long_lines_are_cut_and_foreign_lines_kept(tmp_path: Path) -> None:
    write(tmp_path / "bastion.log", ["no stamp here", line(1) + "x" * 10_000])
    page = logview.read(tmp_path, logview.LogQuery())
    assert page.lines[0].message.endswith("…") and len(page.lines[0].message) < 9000
    assert page.lines[1].time == "" and page.lines[1].message == "no stamp here"


def test_a_large_block_boundary_does_not_split_lines(tmp_path: Path) -> None:
    lines = [line(n) + " " + "y" * (n % 700) for n in range(2000)]
    write(tmp_path / "bastion.log", lines)
    page = logview.read(tmp_path, logview.LogQuery(limit=5000))
    assert [entry.message for entry in page.lines] == [
        text.split("[-] ", 1)[1] for text in reversed(lines)
    ]


def test_no_log_yet_is_an_empty_page(tmp_path: Path) -> None:
    page = logview.read(tmp_path, logview.LogQuery())
    assert page.lines == [] and page.next_cursor is None


def test_a_search_for_rare_text_skips_blocks_and_pages_by_the_scan_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [line(n) + " " + "z" * 200 for n in range(3000)]
    lines[10] += " needle"
    write(tmp_path / "bastion.log", lines)
    monkeypatch.setattr(logview, "MAX_SCAN_BYTES", 200_000)
    found, cursor, pages = [], "", 0
    while True:
        page = logview.read(tmp_path, logview.LogQuery(text="NEEDLE", cursor=cursor))
        pages += 1
        found += page.lines
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [entry.message.split()[1] for entry in found] == ["10"]
    assert pages > 2
    later = datetime(2025, 1, 2, 10, 0, 30, tzinfo=UTC)
    assert logview.read(tmp_path, logview.LogQuery(text="needle", since=later)).lines == []
