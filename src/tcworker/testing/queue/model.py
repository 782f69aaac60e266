"""Plain data of the emulated queue: tasks, runs and artifacts, and their JSON views.

Lives here: :class:`Task`, :class:`Run`, :class:`Artifact` (dataclasses, times as epoch seconds on
the emulator clock) and how each renders into upstream JSON (``task-status``, ``artifact-response``).

Does not live here: the transitions between states (``state.py``), artifact rules
(``artifacts.py``), HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .clock import iso

PRIORITIES = ("highest", "very-high", "high", "medium", "low", "very-low", "lowest")
RESOLVED_STATES = ("completed", "failed", "exception")


@dataclass
class Artifact:
    """One artifact of one run.

    ``details`` per storage type: s3 ``{"blobId"}``; object ``{"projectId", "uploadId", "name"}``
    (the object name ``t/<taskId>/<runId>/<name>``); reference ``{"url"}``; link
    ``{"artifact"}``; error ``{"reason", "message"}``. ``present`` is False for an object
    artifact until finishArtifact.
    """

    name: str
    storage_type: str
    content_type: str
    expires: float
    details: dict[str, Any]
    present: bool = True
    content_length: int | None = None

    def to_json(self) -> dict:
        """``artifact-response`` / an entry of ``list-artifacts-response``."""
        out = {"storageType": self.storage_type, "name": self.name, "expires": iso(self.expires),
               "contentType": self.content_type}
        if self.content_length is not None:
            out["contentLength"] = self.content_length
        return out


@dataclass
class Run:
    """One run of a task. ``state`` is pending | running | completed | failed | exception."""

    run_id: int
    state: str
    reason_created: str
    scheduled: float
    started: float | None = None
    resolved: float | None = None
    reason_resolved: str | None = None
    worker_group: str | None = None
    worker_id: str | None = None
    taken_until: float | None = None
    artifacts: dict[str, Artifact] = field(default_factory=dict)

    def to_json(self) -> dict:
        """One entry of ``task-status.runs``."""
        out: dict[str, Any] = {"runId": self.run_id, "state": self.state,
                               "reasonCreated": self.reason_created, "scheduled": iso(self.scheduled)}
        if self.reason_resolved is not None:
            out["reasonResolved"] = self.reason_resolved
        if self.worker_group is not None:
            out["workerGroup"] = self.worker_group
            out["workerId"] = self.worker_id
        if self.taken_until is not None:
            out["takenUntil"] = iso(self.taken_until)
        if self.started is not None:
            out["started"] = iso(self.started)
        if self.resolved is not None:
            out["resolved"] = iso(self.resolved)
        return out


@dataclass
class Task:
    """A task: its normalized definition (``task.json`` shape), runs and retry budget."""

    task_id: str
    definition: dict[str, Any]
    deadline: float
    expires: float
    retries_left: int
    runs: list[Run] = field(default_factory=list)
    pending_since: float = 0.0

    @property
    def task_queue_id(self) -> str:
        return self.definition["taskQueueId"]

    @property
    def latest(self) -> Run | None:
        return self.runs[-1] if self.runs else None

    @property
    def state(self) -> str:
        """State of the latest run, or ``unscheduled``."""
        return self.runs[-1].state if self.runs else "unscheduled"

    @property
    def priority_rank(self) -> int:
        return PRIORITIES.index(self.definition["priority"])

    def run(self, run_id: int) -> Run | None:
        return self.runs[run_id] if 0 <= run_id < len(self.runs) else None

    def status_json(self) -> dict:
        """``task-status``."""
        d = self.definition
        return {
            "taskId": self.task_id, "provisionerId": d["provisionerId"], "workerType": d["workerType"],
            "taskQueueId": d["taskQueueId"], "schedulerId": d["schedulerId"],
            "projectId": d["projectId"], "taskGroupId": d["taskGroupId"],
            "priority": d["priority"], "deadline": d["deadline"], "expires": d["expires"],
            "retriesLeft": self.retries_left, "state": self.state,
            "runs": [r.to_json() for r in self.runs],
        }
