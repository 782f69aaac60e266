"""The one mapping from a run's outcome (an exception, or none) to a queue call. Pure and sync.

=========================  =================  ===================  =========================
outcome                    queue call         reason               order
=========================  =================  ===================  =========================
no error                   reportCompleted    completed            upload, then report
TaskFailed                 reportFailed       failed               upload, then report
TaskException subclasses   reportException    ``err.reason``       report, then upload
RunResolvedElsewhere       (none)             (none)               upload best-effort only
any other exception        reportException    internal-error       report, then upload
=========================  =================  ===================  =========================

Artifacts go up before ``reportCompleted``/``reportFailed`` because the queue refuses uploads
after those; after an exception resolution the queue schedules the retry at once and still
accepts uploads for 25 minutes, so reporting first frees the task sooner
(``../shared/reference/queue-contract.md`` section 3).

The first error of a run decides, as in generic-worker (``main.go`` ``resolve``): use
:func:`first_error` to fold a later error (say, an upload failure) into the outcome.

What does not live here: the calls themselves (:mod:`tcworker.queue`), the exec summary (CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tcworker.errors import InternalError, ResourceUnavailable, RunResolvedElsewhere, TaskException, TaskFailed

State = Literal["completed", "failed", "exception"]


@dataclass(frozen=True)
class Resolution:
    """What to tell the queue about one run.

    Attributes:
        state: ``completed``, ``failed`` or ``exception``; ``None`` when the queue already resolved
            the run elsewhere (cancel, deadline, claim expiry) and nothing is reported.
        reason: the queue's ``reasonResolved``: ``completed``, ``failed``, or an exception reason
            such as ``malformed-payload``; ``None`` with ``state``.
        upload_first: upload artifacts and the log before the report call.
        message: the error text for the log (``""`` when completed).
    """

    state: State | None
    reason: str | None
    upload_first: bool
    message: str = ""

    @property
    def report_call(self) -> str | None:
        """``reportCompleted``, ``reportFailed``, ``reportException`` or ``None`` (report nothing)."""
        return {
            "completed": "reportCompleted",
            "failed": "reportFailed",
            "exception": "reportException",
            None: None,
        }[self.state]

    @property
    def exit_code(self) -> int:
        """Exit status of ``tcworker exec``: 0 completed, 1 failed, 2 exception or resolved elsewhere."""
        return {"completed": 0, "failed": 1}.get(self.state or "", 2)


def resolve(error: BaseException | None) -> Resolution:
    """Map a run's deciding error (or ``None``) to its :class:`Resolution`.

    Args:
        error: the first error of the run, ``None`` when every stage succeeded.
            ``asyncio.CancelledError`` must never reach here: cancellation is re-raised.
    """
    if error is None:
        return Resolution("completed", "completed", upload_first=True)
    message = str(error) or type(error).__name__
    if isinstance(error, TaskFailed):
        return Resolution("failed", "failed", upload_first=True, message=message)
    if isinstance(error, TaskException):
        return Resolution("exception", error.reason, upload_first=False, message=message)
    if isinstance(error, RunResolvedElsewhere):
        return Resolution(None, None, upload_first=False, message=message)
    return Resolution(
        "exception",
        InternalError.reason,
        upload_first=False,
        message=f"internal error: {type(error).__name__}: {message}",
    )


def first_error(current: BaseException | None, new: BaseException | None) -> BaseException | None:
    """Keep the first error of a run; a later one only counts when there was none.

    One exception: a run resolved elsewhere (cancel, deadline) overrides everything, because the
    queue will accept no report whatever happened before.
    """
    if isinstance(new, RunResolvedElsewhere):
        return new
    return current if current is not None else new


def after_upload(error: BaseException | None, upload_error: BaseException | None) -> BaseException | None:
    """Fold an upload failure into the outcome of a run that uploads before reporting.

    The first error decides, except that a failed upload beats a failed task: a ``failed`` run
    must carry its artifacts and log (the queue refuses uploads after reportFailed), so it
    resolves ``exception/resource-unavailable`` instead.
    """
    if isinstance(upload_error, ResourceUnavailable) and isinstance(error, TaskFailed):
        return upload_error
    return first_error(error, upload_error)
