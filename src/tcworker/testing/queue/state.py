"""The run state machine of the emulated queue (contract §3).

Lives here: :class:`QueueState`, which holds every task and enforces the transitions: createTask
(defaults, checks, idempotence, dependencies), claim, reclaim, report completed / failed /
exception (retry runs), cancel, and the two time-driven resolvers (claim expiry, deadline) run by
:meth:`QueueState.tick`. Each transition raises :class:`~.errors.ApiError` with upstream's status
(404 / 409 / 400) where upstream does. Long-poll waiters are woken here when work becomes pending.

Does not live here: artifacts (``artifacts.py``), HTTP and auth, credentials.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable

from .clock import Clock, iso, parse_time
from .errors import ApiError, conflict, input_error, not_found
from .model import PRIORITIES, Run, Task

YEAR_S = 365 * 24 * 3600
MAX_DEADLINE_S = 5 * 24 * 3600 + 15 * 60
SKEW_S = 15 * 60
EXCEPTION_REASONS = ("worker-shutdown", "malformed-payload", "resource-unavailable",
                     "internal-error", "intermittent-task")
RETRY_CREATED = {"worker-shutdown": "retry", "intermittent-task": "task-retry", "claim-expired": "retry"}

# (event name, task, run or None) → for Pulse and tests.
Listener = Callable[[str, Task, "Run | None"], None]


class QueueState:
    """All tasks of the emulator, and the transitions between their run states.

    Args:
        clock: the injectable :class:`~.clock.Clock`.
        claim_timeout_s: seconds a claim or reclaim lasts (upstream ``TASK_CLAIM_TIMEOUT``, 1200).
        deadline_delay_s: seconds after a deadline before the deadline resolver acts (upstream 60).
    """

    def __init__(self, clock: Clock, claim_timeout_s: float = 1200, deadline_delay_s: float = 60) -> None:
        self.clock = clock
        self.claim_timeout_s = claim_timeout_s
        self.deadline_delay_s = deadline_delay_s
        self.tasks: dict[str, Task] = {}
        self.listeners: list[Listener] = []
        self._pending: dict[str, dict[str, None]] = {}   # taskQueueId → ordered taskIds
        self._active: set[str] = set()                    # unscheduled, pending or running
        self._dependents: dict[str, list[str]] = {}
        self._waiters: dict[str, set[asyncio.Event]] = {}

    # -- lookups ---------------------------------------------------------------------------
    def get(self, task_id: str) -> Task:
        """Raises ApiError 404 when the task does not exist."""
        task = self.tasks.get(task_id)
        if task is None:
            raise not_found(f"Task {task_id} not found")
        return task

    def get_run(self, task_id: str, run_id: int) -> tuple[Task, Run]:
        """Raises ApiError 404 when the task or run does not exist."""
        task = self.get(task_id)
        run = task.run(run_id)
        if run is None:
            raise not_found(f"Run {run_id} of task {task_id} not found")
        return task, run

    # -- createTask ------------------------------------------------------------------------
    def create_task(self, task_id: str, request: dict) -> Task:
        """Define (and schedule, when dependencies allow) a task from a ``create-task-request``.

        Returns the new Task, or the existing one when the definition is identical.
        Raises: ApiError 400 (times, taskQueueId, unknown dependency), 409 (different definition).
        """
        definition = self._normalize(task_id, request)
        existing = self.tasks.get(task_id)
        if existing is not None:
            if existing.definition != definition:
                raise conflict(f"taskId {task_id} already used by another task")
            return existing
        for dep in definition["dependencies"]:
            if dep != task_id and dep not in self.tasks:
                raise input_error(f"task {task_id} depends on missing task {dep}")
        task = Task(task_id, definition, deadline=parse_time(definition["deadline"]),
                    expires=parse_time(definition["expires"]), retries_left=definition["retries"])
        self.tasks[task_id] = task
        self._active.add(task_id)
        self._emit("task-defined", task, None)
        for dep in definition["dependencies"]:
            self._dependents.setdefault(dep, []).append(task_id)
        if self._dependencies_met(task):
            self._add_run(task, "scheduled", "pending")
        return task

    def _normalize(self, task_id: str, request: dict) -> dict:
        d = copy.deepcopy(request)
        now = self.clock.now()
        queue_id = d.get("taskQueueId")
        split = (d.get("provisionerId"), d.get("workerType"))
        if queue_id is None:
            if None in split:
                raise input_error("taskQueueId (or provisionerId and workerType) is required")
            queue_id = f"{split[0]}/{split[1]}"
        elif split != (None, None) and f"{split[0]}/{split[1]}" != queue_id:
            raise input_error("taskQueueId must match provisionerId/workerType")
        prov, _, wtype = queue_id.partition("/")
        created, deadline = parse_time(d["created"], "created"), parse_time(d["deadline"], "deadline")
        expires = parse_time(d["expires"], "expires") if "expires" in d else deadline + YEAR_S
        if abs(created - now) > SKEW_S:
            raise input_error("created must be within 15 minutes of the current time")
        if deadline <= now:
            raise input_error("deadline must be in the future")
        if deadline > now + MAX_DEADLINE_S:
            raise input_error("deadline cannot be more than 5 days into the future")
        if expires < deadline:
            raise input_error("expires cannot be before the deadline")
        priority = d.get("priority", "lowest")
        d.update(
            taskQueueId=queue_id, provisionerId=prov, workerType=wtype,
            schedulerId=d.get("schedulerId", "-"), projectId=d.get("projectId", "none"),
            taskGroupId=d.get("taskGroupId", task_id), dependencies=d.get("dependencies", []),
            requires=d.get("requires", "all-completed"), routes=d.get("routes", []),
            priority="lowest" if priority == "normal" else priority,
            retries=d.get("retries", 5), created=iso(created), deadline=iso(deadline),
            expires=iso(expires), scopes=d.get("scopes", []), tags=d.get("tags", {}),
            extra=d.get("extra", {}),
        )
        if d["priority"] not in PRIORITIES:
            raise input_error(f"unknown priority {d['priority']!r}")
        return d

    def _dependencies_met(self, task: Task) -> bool:
        ok_states = ("completed",) if task.definition["requires"] == "all-completed" else (
            "completed", "failed", "exception")
        for dep in task.definition["dependencies"]:
            if dep == task.task_id:
                continue
            dep_task = self.tasks.get(dep)
            if dep_task is None or dep_task.state not in ok_states or dep_task.task_id in self._active:
                return False
        return True

    # -- claim / reclaim -------------------------------------------------------------------
    def claimable(self, task_queue_id: str, count: int) -> list[Task]:
        """Up to ``count`` tasks with a pending latest run, by priority then FIFO, skipping
        tasks past their deadline."""
        now = self.clock.now()
        ids = self._pending.get(task_queue_id, {})
        tasks = [self.tasks[t] for t in ids if self.tasks[t].deadline > now]
        tasks.sort(key=lambda t: (t.priority_rank, t.pending_since))
        return tasks[:count]

    def claim(self, task: Task, worker_group: str, worker_id: str) -> Run:
        """Move the pending latest run to running; sets takenUntil = now + claim timeout."""
        run = task.latest
        assert run is not None and run.state == "pending", "claim() needs a pending run"
        now = self.clock.now()
        run.state, run.started = "running", now
        run.worker_group, run.worker_id = worker_group, worker_id
        run.taken_until = now + self.claim_timeout_s
        self._pending.get(task.task_queue_id, {}).pop(task.task_id, None)
        self._emit("task-running", task, run)
        return run

    def reclaim(self, task_id: str, run_id: int) -> tuple[Task, Run]:
        """Extend the claim of a running latest run.

        Raises: 404 (task/run), 409 (deadline passed, run not latest or not running).
        """
        task, run = self.get_run(task_id, run_id)
        if task.deadline <= self.clock.now():
            raise conflict("Task deadline exceeded", taskId=task_id, runId=run_id)
        if run is not task.latest or run.state != "running":
            raise conflict(f"Run {run_id} of task {task_id} is not running (state {run.state})",
                           taskId=task_id, runId=run_id)
        run.taken_until = self.clock.now() + self.claim_timeout_s
        return task, run

    # -- resolution ------------------------------------------------------------------------
    def report(self, task_id: str, run_id: int, state: str, reason: str | None = None) -> Task:
        """reportCompleted (``state="completed"``), reportFailed (``"failed"``) or
        reportException (``"exception"``, ``reason`` one of :data:`EXCEPTION_REASONS`).

        Repeating the same report is idempotent. Raises: 400 (reason), 404, 409 (run resolved
        otherwise, or not the latest run).
        """
        reason = reason if state == "exception" else state
        if reason not in EXCEPTION_REASONS + ("completed", "failed"):
            raise ApiError(400, "InputValidationError", f"reason {reason!r} is not allowed")
        task, run = self.get_run(task_id, run_id)
        if run.state == state and run.reason_resolved == reason:
            return task
        if run is not task.latest or run.state != "running":
            raise conflict(f"Run {run_id} of task {task_id} is {run.state} "
                           f"({run.reason_resolved or 'unresolved'}), not running",
                           taskId=task_id, runId=run_id)
        self._resolve(task, run, state, reason)
        return task

    def cancel(self, task_id: str) -> Task:
        """cancelTask: pending/running → exception/canceled; unscheduled → a canceled run.

        Raises: 404, 409 (deadline passed).
        """
        task = self.get(task_id)
        if task.deadline <= self.clock.now():
            raise conflict("Task deadline exceeded: it cannot be canceled", taskId=task_id)
        run = task.latest
        if run is None:
            run = self._add_run(task, "exception", "exception")
        if run.state in ("pending", "running", "exception") and run.resolved is None:
            self._resolve(task, run, "exception", "canceled")
        return task

    def _resolve(self, task: Task, run: Run, state: str, reason: str) -> None:
        if run.state == "pending":
            self._pending.get(task.task_queue_id, {}).pop(task.task_id, None)
        run.state, run.reason_resolved, run.resolved = state, reason, self.clock.now()
        retry = RETRY_CREATED.get(reason) if state == "exception" else None
        self._emit(f"task-{state}", task, run)
        if retry and task.retries_left > 0:
            task.retries_left -= 1
            self._add_run(task, retry, "pending")
            return
        self._active.discard(task.task_id)
        for dependent_id in self._dependents.get(task.task_id, []):
            dependent = self.tasks[dependent_id]
            if not dependent.runs and self._dependencies_met(dependent):
                self._add_run(dependent, "scheduled", "pending")

    def _add_run(self, task: Task, reason_created: str, state: str) -> Run:
        now = self.clock.now()
        run = Run(run_id=len(task.runs), state=state, reason_created=reason_created, scheduled=now)
        task.runs.append(run)
        self._active.add(task.task_id)
        if state == "pending":
            task.pending_since = now
            self._pending.setdefault(task.task_queue_id, {})[task.task_id] = None
            self._emit("task-pending", task, run)
            for event in self._waiters.get(task.task_queue_id, ()):
                event.set()
        return run

    # -- time-driven resolvers -------------------------------------------------------------
    def tick(self) -> None:
        """Run the claim resolver (running past takenUntil → claim-expired + retry) and the
        deadline resolver (deadline + delay passed → deadline-exceeded), as of ``clock.now()``."""
        now = self.clock.now()
        for task_id in list(self._active):
            task = self.tasks[task_id]
            run = task.latest
            if task.deadline + self.deadline_delay_s <= now:
                if run is None:
                    run = self._add_run(task, "exception", "exception")
                if run.resolved is None:
                    self._resolve(task, run, "exception", "deadline-exceeded")
            elif (run is not None and run.state == "running" and run.taken_until is not None
                  and run.taken_until < now and task.deadline > now):
                self._resolve(task, run, "exception", "claim-expired")

    # -- long-poll support -----------------------------------------------------------------
    def waiter(self, task_queue_id: str) -> asyncio.Event:
        """An Event set when a run becomes pending in ``task_queue_id``; call :meth:`unwait`."""
        event = asyncio.Event()
        self._waiters.setdefault(task_queue_id, set()).add(event)
        return event

    def unwait(self, task_queue_id: str, event: asyncio.Event) -> None:
        self._waiters.get(task_queue_id, set()).discard(event)

    def wake_all(self) -> None:
        """Wake every long-poll (used at shutdown)."""
        for events in self._waiters.values():
            for event in events:
                event.set()

    def pending_count(self, task_queue_id: str) -> int:
        now = self.clock.now()
        return sum(1 for t in self._pending.get(task_queue_id, {}) if self.tasks[t].deadline > now)

    def _emit(self, event: str, task: Task, run: Run | None) -> None:
        for listener in self.listeners:
            listener(event, task, run)
