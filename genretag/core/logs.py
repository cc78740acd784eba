"""Logs on stderr: JSON objects (one per line) for machines, ``LEVEL logger: event k=v`` for people.

Which one (``--log-format``): ``json`` or ``plain`` as asked; ``auto`` (the default) is plain on
a terminal, and when stderr is not a terminal JSON for the services (``work``, ``produce``:
what log collectors read) and plain for every other command.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON: time, level, logger, event, plus the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class PlainFormatter(logging.Formatter):
    """``LEVEL logger: event key=value ...``: readable, and the event's fields are kept."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        fields = [f"{k}={_plain(v)}" for k, v in record.__dict__.items()
                  if k not in _STANDARD and not k.startswith("_")]
        if fields:
            text += " " + " ".join(fields)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _plain(value: object) -> str:
    """A field value on one line: strings quoted only when they hold spaces or quotes."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return value if value.isprintable() else json.dumps(value)
    return json.dumps(value, default=str, ensure_ascii=True)


LOG_FORMATS = ("auto", "json", "plain")
#: Commands whose logs go to collectors when not on a terminal: JSON under ``auto``.
SERVICE_COMMANDS = frozenset({"work", "produce"})


def wants_json(log_format: str, command: str, stream: object = None) -> bool:
    """Whether ``command``'s logs are JSON under ``--log-format log_format`` (see the module)."""
    if log_format != "auto":
        return log_format == "json"
    isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
    if isatty is not None and isatty():
        return False
    return command in SERVICE_COMMANDS


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """Install one stderr handler on the root logger (called once by the CLI)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else PlainFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
