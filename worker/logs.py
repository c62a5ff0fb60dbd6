"""How the command's log lines look: text for people, or one JSON object per line for a log
shipper (``CHEM_LOG_FORMAT=json``).

Every line of the project is written ``action=NAME free text key=value ...``; the JSON form
keeps the whole message and lifts ``action`` into a field of its own, so a shipper can filter
on it without parsing.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import msgspec

from chem_persistence.domain.settings import InvalidSetting

ENV_LOG_FORMAT = "CHEM_LOG_FORMAT"
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_ACTION = re.compile(r"^action=(\S+)\s?")
_encode = msgspec.json.Encoder().encode


class JsonLines(logging.Formatter):
    """``{"time", "level", "logger", "action", "message"[, "error"]}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        found = _ACTION.match(message)
        if found:
            line["action"] = found.group(1)
            message = message[found.end() :]
        line["message"] = message
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def log_format(configured: str | None) -> str:
    """``CHEM_LOG_FORMAT``: ``text`` (the default) or ``json``."""
    chosen = (configured or "").strip().lower() or "text"
    if chosen not in FORMATS:
        raise InvalidSetting(ENV_LOG_FORMAT, configured, "is not text or json")
    return chosen


def configure(level: int, chosen_format: str) -> None:
    """Send every log line to stderr at ``level``, in ``chosen_format``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if chosen_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
