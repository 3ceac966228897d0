"""Structured logs: one JSON object per line on stderr (or plain text with HARMONY_LOG_FORMAT=console)."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

import msgspec

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry, enc_hook=str).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED)
        return f"{record.levelname.lower():7} {record.name}: {record.getMessage()} {fields}".rstrip()


def configure(log_format: str, level: str = "INFO") -> None:
    """`log_format`: "json" or "console" (HARMONY_LOG_FORMAT)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter() if log_format == "console" else JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Chatty libraries: keep their warnings, drop their info noise.
    for noisy in ("aiokafka", "faust", "mode", "botocore", "urllib3", "uvicorn.access", "httpx", "cassandra"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
