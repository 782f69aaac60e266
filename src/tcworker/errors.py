"""The exception tree of tcworker, and nothing else.

Every failure that can end a run or stop the worker is one of these classes. The single place that
turns them into queue calls is :mod:`tcworker.resolution`; code elsewhere raises, never reports.

::

    WorkerError
    ├── TaskError                 ends one run
    │   ├── TaskFailed            reportFailed        (non-zero exit, maxRunTime, missing required
    │   │                                             artifact, mount content missing or wrong)
    │   └── TaskException         reportException(reason)
    │       ├── MalformedPayload      malformed-payload     (before any task code runs)
    │       ├── ResourceUnavailable   resource-unavailable  (5xx/timeouts after retries)
    │       ├── WorkerShutdown        worker-shutdown
    │       ├── IntermittentTask      intermittent-task     (exit code in onExitStatus.retry)
    │       └── InternalError         internal-error        (any unexpected exception: a bug)
    ├── RunResolvedElsewhere      409 / cancelled / deadline / claim expired: stop, report nothing,
    │                             upload best-effort
    ├── ConfigError               bad worker config: worker-level, never a task resolution
    └── QueueError                a worker-level queue call failed (claimWork): never a resolution
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base of every error tcworker raises on purpose."""


class TaskError(WorkerError):
    """An error that ends one run. ``str(err)`` is the message written to the task log."""


class TaskFailed(TaskError):
    """The task itself failed → ``reportFailed``."""


class TaskException(TaskError):
    """The run ends as ``exception`` with :attr:`reason` (the queue's ``reasonResolved``)."""

    reason = "internal-error"


class MalformedPayload(TaskException):
    """The payload (or task definition) cannot run here → ``exception/malformed-payload``."""

    reason = "malformed-payload"


class ResourceUnavailable(TaskException):
    """A needed resource stayed unreachable after retries → ``exception/resource-unavailable``."""

    reason = "resource-unavailable"


class WorkerShutdown(TaskException):
    """The worker is shutting down and aborted the run → ``exception/worker-shutdown``."""

    reason = "worker-shutdown"


class IntermittentTask(TaskException):
    """A command exited with a code listed in ``onExitStatus.retry`` → ``exception/intermittent-task``."""

    reason = "intermittent-task"


class InternalError(TaskException):
    """An unexpected exception inside the worker (a bug) → ``exception/internal-error``."""

    reason = "internal-error"


class RunResolvedElsewhere(WorkerError):
    """The queue no longer lets this worker resolve the run (cancelled, deadline, claim expired).

    Stop the task, upload what can be uploaded best-effort, and call no ``report*`` endpoint.
    """


class ConfigError(WorkerError):
    """The worker config is invalid; the message names the key."""


class QueueError(WorkerError):
    """A worker-level queue call failed (for example ``claimWork``); never a task resolution."""
