"""Reading the server log back: newest first, filtered, bounded in the bytes it reads.

The files are the ones logs.py writes (`bastion.log`, then `bastion.log.1` … older). Each
record is one physical line that starts with its UTC time, so a time filter is a string
comparison and reading can stop at the first line older than the range. A page ends after
`limit` matches or MAX_SCAN_BYTES read, with a cursor (file number and byte offset) to go
on; a rotation between two pages shifts the files, so a cursor is a best effort.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LOG_NAME = "bastion.log"
BLOCK = 64 * 1024
MAX_SCAN_BYTES = 8 * 1024 * 1024
MAX_FILES = 101  # logs.py allows up to 100 backups
LINE_LIMIT = 8192  # characters shown per line; the rest is cut
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (\w+) (\S+) \[([^\]]*)\] ")
_CURSOR = re.compile(r"(\d{1,3}):(\d{1,15})")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LogLine:
    time: str  # as written: "2025-01-02T03:04:05.678Z", or "" when the line has none
    level: str
    logger: str
    request_id: str
    message: str


@dataclass(frozen=True)
class LogQuery:
    text: str = ""
    level: str = ""  # this level and above
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    cursor: str = ""  # "file:offset" from a previous page
    limit: int = 200


@dataclass(frozen=True)
class LogPage:
    lines: list[LogLine]
    next_cursor: str | None  # None: nothing older matches
    scanned_bytes: int


def _stamp(moment: datetime) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_line(raw: str) -> LogLine:
    match = _STAMP.match(raw)
    text = raw[:LINE_LIMIT] + ("…" if len(raw) > LINE_LIMIT else "")
    if match is None:
        return LogLine("", "", "", "", text)
    return LogLine(match[1], match[2], match[3], match[4], text[match.end() :])


def _files(log_dir: Path) -> list[Path]:
    base = log_dir / LOG_NAME
    found = [base] if base.exists() else []
    for n in range(1, MAX_FILES):
        older = log_dir / f"{LOG_NAME}.{n}"
        if not older.exists():
            break
        found.append(older)
    return found


def _blocks(path: Path, end: int | None) -> Iterator[list[tuple[int, bytes]]]:
    """The lines before `end` (default: the file's end), newest first, a block at a time:
    each as (offset of the line's start, line)."""
    with path.open("rb") as handle:
        position = os.fstat(handle.fileno()).st_size if end is None else end
        pending = b""
        while position > 0:
            size = min(BLOCK, position)
            position -= size
            handle.seek(position)
            pending = handle.read(size) + pending
            parts = pending.split(b"\n")
            pending = parts[0]
            offset = position + len(parts[0]) + 1
            block = []
            for part in parts[1:]:
                if part:
                    block.append((offset, part))
                offset += len(part) + 1
            if block:
                yield block[::-1]
        if pending:
            yield [(0, pending)]


def _level_rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 0


def read(log_dir: Path, query: LogQuery) -> LogPage:
    files = _files(log_dir)
    first_file, end = 0, None
    if match := _CURSOR.fullmatch(query.cursor):
        first_file, end = int(match[1]), int(match[2])
    since = _stamp(query.since) if query.since else None
    until = _stamp(query.until) if query.until else None
    needle = query.text.casefold()
    # A block without the (ASCII) text anywhere is skipped whole, without parsing a line:
    # searching a 10 MiB log for something absent then costs milliseconds, not a second.
    quick = needle.encode() if needle.isascii() else None
    floor = _level_rank(query.level) if query.level else 0
    lines: list[LogLine] = []
    scanned = 0
    for number in range(first_file, len(files)):
        for block in _blocks(files[number], end if number == first_file else None):
            oldest_offset, oldest = block[-1]
            if quick and quick not in b"\n".join(raw for _, raw in block).lower():
                scanned += sum(len(raw) + 1 for _, raw in block)
                stamp = parse_line(oldest.decode("utf-8", "replace")).time
                if since is not None and stamp and stamp < since:
                    return LogPage(lines, None, scanned)
                if scanned > MAX_SCAN_BYTES:
                    return LogPage(lines, f"{number}:{oldest_offset}", scanned)
                continue
            for offset, raw in block:
                scanned += len(raw) + 1
                decoded = raw.decode("utf-8", "replace")
                line = parse_line(decoded)
                if since is not None and line.time and line.time < since:
                    return LogPage(lines, None, scanned)
                if scanned > MAX_SCAN_BYTES or len(lines) >= query.limit:
                    return LogPage(lines, f"{number}:{offset + len(raw) + 1}", scanned)
                if until is not None and line.time and line.time >= until:
                    continue
                if floor and _level_rank(line.level) < floor:
                    continue
                if needle and needle not in decoded.casefold():
                    continue
                lines.append(line)
    return LogPage(lines, None, scanned)
