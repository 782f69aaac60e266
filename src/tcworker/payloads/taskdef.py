"""Filling in partial task definitions, the way the Queue's ``createTask`` would.

Used by ``tcworker validate`` and ``tcworker exec``: a task author writes only the fields that
matter (often just ``payload``) and gets a complete definition with the Queue's defaults.

What does not live here: checking the definition (:func:`tcworker.payloads.validate_task`).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import slugid

from tcworker.payloads.common import parse_rfc3339

DEFAULT_TASK_QUEUE_ID = "tcworker/exec"
"""Task queue given to definitions naming none (``tcworker exec`` does not claim from it)."""


def format_time(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC, the Queue's timestamp format."""
    when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def complete_task_definition(
    raw: Mapping[str, Any], *, task_id: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Return a copy of ``raw`` with what the Queue would fill in.

    Defaults: ``created`` now, ``deadline`` created + 1 day, ``expires`` deadline + 1 year (the
    Queue's default), ``taskGroupId`` the task's own id, ``schedulerId`` ``-``, ``taskQueueId``
    :data:`DEFAULT_TASK_QUEUE_ID` (unless ``provisionerId``/``workerType`` are given, which are then
    joined), empty ``routes``/``scopes``/``dependencies``/``tags``/``extra``, ``requires``
    ``all-completed``, ``priority`` ``lowest``, ``retries`` 5, and placeholder ``metadata``.
    Present fields are kept as they are, even when invalid (validation reports them).

    Args:
        raw: a (partial) task definition; must contain ``payload`` to be useful.
        task_id: the task's id (a slugid), used for ``taskGroupId``; a task definition does not
            hold its own id, so callers needing it pass one in (default: a new slugid).
        now: the time for ``created`` (default: now, UTC).
    """
    task = copy.deepcopy(dict(raw))
    task_id = task_id or slugid.nice()
    now = now or datetime.now(timezone.utc)
    task.setdefault("created", format_time(now))
    deadline = _time_or(task.get("created"), now) + timedelta(days=1)
    task.setdefault("deadline", format_time(deadline))
    expires = _time_or(task.get("deadline"), deadline) + timedelta(days=365)
    task.setdefault("expires", format_time(expires))
    task.setdefault("taskGroupId", task_id)
    task.setdefault("schedulerId", "-")
    if "taskQueueId" not in task:
        if "provisionerId" in task and "workerType" in task:
            task["taskQueueId"] = f"{task['provisionerId']}/{task['workerType']}"
        else:
            task["taskQueueId"] = DEFAULT_TASK_QUEUE_ID
    for key, empty in (("routes", []), ("scopes", []), ("dependencies", []), ("tags", {}),
                       ("extra", {})):
        task.setdefault(key, empty)
    task.setdefault("requires", "all-completed")
    task.setdefault("priority", "lowest")
    task.setdefault("retries", 5)
    metadata = task.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata.setdefault("name", "tcworker task")
        metadata.setdefault("description", "")
        metadata.setdefault("owner", "nobody@example.com")
        metadata.setdefault("source", "https://github.com/taskcluster/taskcluster")
    return task


def _time_or(value: Any, fallback: datetime) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError:
        return fallback
