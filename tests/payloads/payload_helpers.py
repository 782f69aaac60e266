"""Builders of tasks and payloads for the payload tests (imported as ``payload_helpers``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tcworker.payloads.taskdef import format_time

NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def make_task(payload: Any, *, deadline: timedelta = timedelta(hours=1),
              expires: timedelta = timedelta(days=1), **extra: Any) -> dict[str, Any]:
    """A task definition around ``payload``, created at NOW with deadline/expires relative to it."""
    task = {
        "taskQueueId": "proj-test/python-worker",
        "created": format_time(NOW),
        "deadline": format_time(NOW + deadline),
        "expires": format_time(NOW + expires),
        "payload": payload,
    }
    task.update(extra)
    return task


def native(**fields: Any) -> dict[str, Any]:
    """A minimal valid generic-worker payload, with ``fields`` set on top."""
    payload: dict[str, Any] = {"command": [["echo", "hi"]], "maxRunTime": 30}
    payload.update(fields)
    return payload


def docker(**fields: Any) -> dict[str, Any]:
    """A minimal valid docker-worker payload, with ``fields`` set on top."""
    payload: dict[str, Any] = {"image": "ubuntu:24.04", "maxRunTime": 30}
    payload.update(fields)
    return payload
