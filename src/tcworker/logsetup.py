"""The worker's own logging (never task output): text or JSON lines on stderr.

- :func:`setup_logging`: one handler on the root logger, text or JSON lines (``logFormat``).
- :func:`log_event`: one line per event of a run (claim, reclaim, cancellation, resolution) with
  its fields both in the text (``task-reclaimed taskId=... runId=...``) and, through
  ``extra=``, as keys of the JSON line (``event``, ``taskId``, ``runId``, ``durationSecs``...).
- :class:`IdleReporter`: why the worker is not claiming (no work, low disk, draining), at most once
  a minute per reason.

What does not live here: the task log (:mod:`tcworker.logs`); task output never goes through
Python logging.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcworker.config import WorkerConfig


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (RFC 3339 UTC), ``level``, ``logger``, ``message``,
    plus any ``extra`` fields given to the logging call (task id, run id, durations)."""

    STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in self.STANDARD})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: object) -> None:
    """Log ``<event> key=value ...``; with JSON lines each field is a key (``extra=``).

    Args:
        logger: where to log.
        event: kebab-case event name, such as ``task-reclaimed``.
        level: logging level.
        fields: camelCase names as the queue's (``taskId``, ``runId``), durations in seconds
            named ``...Secs``; values must be JSON-serializable (else ``str`` is used).
    """
    text = " ".join(f"{key}={value}" for key, value in fields.items())
    logger.log(level, "%s %s", event, text, extra={"event": event, **fields})


class IdleReporter:
    """Logs why the worker is idle, at most once per ``interval_s`` per reason.

    Args:
        logger: where to log (event ``worker-idle``, fields ``reason``, ``idleSecs`` and any given).
        interval_s: minimum seconds between two lines with the same reason.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, logger: logging.Logger, *, interval_s: float = 60.0, clock=time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._idle_since: float | None = None
        self._last: dict[str, float] = {}

    def report(self, reason: str, **fields: object) -> bool:
        """Note that the worker is idle because of ``reason`` (``no-work``, ``low-disk``,
        ``draining``); returns True when a line was logged."""
        now = self.clock()
        if self._idle_since is None:
            self._idle_since = now
        last = self._last.get(reason)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[reason] = now
        log_event(self.logger, "worker-idle", reason=reason,
                  idleSecs=round(now - self._idle_since, 1), **fields)
        return True

    def busy(self) -> None:
        """The worker has work again: the next idle period is reported at once."""
        self._idle_since = None
        self._last.clear()


def setup_logging(config: "WorkerConfig", *, level: int = logging.INFO) -> None:
    """Send the worker's log records to stderr, as text or JSON lines (``logFormat``)."""
    handler = logging.StreamHandler(sys.stderr)
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
                                      "%Y-%m-%dT%H:%M:%S")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
