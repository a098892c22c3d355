"""Logging: one file per server in BASTION_LOG_DIR, rotated by size, safe to read.

Every line is redacted (registered secrets, token shapes) and then escaped, so a record is
always exactly one physical line and attacker-controlled text cannot forge lines or drive
a terminal. Security events log under `bastion.security.*`.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from contextvars import ContextVar
from pathlib import Path
from typing import TextIO

request_id: ContextVar[str] = ContextVar("request_id", default="-")

REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 4


def _escape_table() -> dict[int, str]:
    table = {cp: f"\\x{cp:02x}" for cp in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]}
    table.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})
    # Line/paragraph separators end lines in some viewers; bidi controls reorder what a
    # reader sees ("Trojan Source"), so a forged entry could look like a real one.
    for cp in (0x2028, 0x2029, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)):
        table[cp] = f"\\u{cp:04x}"
    return table


_ESCAPES = _escape_table()


def escape_controls(text: str) -> str:
    return text.translate(_ESCAPES)


_ALWAYS_REDACTED = [
    re.compile(r"bst_[A-Za-z0-9_-]{43}"),
    re.compile(r"whsec_[A-Za-z0-9+/=_-]+"),
    re.compile(r"(?i)(?<=authorization: )(bearer|basic) \S+"),
    re.compile(r"(?i)(?<=authorization': ')(bearer|basic) [^']+"),
]


MAX_TRACKED_SECRETS = 1_000  # the oldest are forgotten first


class Redactor:
    """Replaces known secret values (fed at run time, e.g. by the vault) in log text."""

    def __init__(self, limit: int = MAX_TRACKED_SECRETS) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        # Insertion-ordered, bounded: every refreshed OAuth token registers itself, and a
        # long-running server must not grow this (and its pattern) without end.
        self._secrets: dict[str, None] = {}
        self._pattern: re.Pattern[str] | None = None

    def register(self, secret: str) -> None:
        # Very short values would redact ordinary words and hide real log content.
        if len(secret) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if secret not in self._secrets:
                self._secrets[secret] = None
                while len(self._secrets) > self._limit:
                    del self._secrets[next(iter(self._secrets))]
                self._rebuild()

    def forget(self, secret: str) -> None:
        with self._lock:
            if secret in self._secrets:
                del self._secrets[secret]
                self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        for always in _ALWAYS_REDACTED:
            text = always.sub(REDACTED, text)
        return text


redactor = Redactor()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class SafeFormatter(logging.Formatter):
    """Formats, then redacts, then escapes the whole line (tracebacks included).

    Redaction runs first so a secret that contains a control character is still found.
    """

    def __init__(self, redactor: Redactor = redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        self._redactor = redactor

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return escape_controls(self._redactor.redact(super().format(record)))


_installed: list[logging.Handler] = []


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


def configure_logging(
    *,
    log_dir: Path,
    level: str = "INFO",
    max_bytes: int = 10 * 1024 * 1024,
    backup_count: int = 5,
    stream: TextIO | None = sys.stderr,
) -> Path:
    """Install Bastion's handlers on the root logger (replacing any it installed before)."""
    _private_dir(log_dir)
    log_file = log_dir / "bastion.log"
    if not log_file.exists():
        os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
        handler.close()
    _installed.clear()

    formatter = SafeFormatter()
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(
            log_file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
        )
    ]
    if stream is not None:
        handlers.append(logging.StreamHandler(stream))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_RequestIdFilter())
        root.addHandler(handler)
        _installed.append(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # httpx logs every request URL at INFO: a workflow's query string may carry an API
    # key that is not a vault secret, so the redactor would not know to mask it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return log_file
