"""Logging set-up shared by the daemons: JSON lines for the controller, text for the LISP ones.

One place for the formats, so every daemon's log lines look the same wherever
they are set up (``pacao controller run``, ``pacao lisp map-server|xtr``).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, ClassVar, TextIO

#: The LISP daemons' plain-text line.
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    _std: ClassVar[frozenset[str]] = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in self._std and k not in doc:
                doc[k] = v
        return json.dumps(doc, default=str)


def setup_logging(stream: TextIO | None = None, level: str = "info") -> None:
    """JSON lines from the ``pacao`` loggers only (a library's own logs stay out)."""
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(JsonFormatter())
    root = logging.getLogger("pacao")
    root.handlers[:] = [h]
    root.setLevel(level.upper())
    root.propagate = False


def setup_text_logging(verbose: bool = False) -> None:
    """Plain-text lines from every logger, at debug level with ``verbose``."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=TEXT_FORMAT)
