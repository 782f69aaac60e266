"""Taskcluster clients for the worker and for one run, and the error boundary around them.

Lives here:

- :class:`ClientFactory`: builds ``taskcluster.aio`` clients (Queue, Object, PurgeCache, Index, Auth) for
  any credentials, all sharing one ``aiohttp.ClientSession``, and :meth:`ClientFactory.call`, which
  runs one API call under a total timeout (a hung call never wedges the worker) and translates the
  client's exceptions into :class:`QueueCallError`.
- :func:`status_of`, :func:`is_transient`, :func:`is_auth_failure`: the classification every other
  module uses, for our own errors and for raw ``taskcluster``/``aiohttp`` exceptions alike.
- :class:`WorkerQueue` (worker credentials: claimWork, status) and :class:`RunQueue` (one run's task
  credentials: reclaim, report*, a Queue client for uploads). Both have replaceable credentials.

Does not live here: when to reclaim (:mod:`tcworker.queue.reclaimer`), cancellation
(:mod:`tcworker.queue.cancellation`), artifact uploads (:mod:`tcworker.queue.upload`), and the
mapping of task errors to report calls (:mod:`tcworker.resolution`).

Error facts this follows (``../shared/reference/queue-contract.md`` section 1): the client raises
``TaskclusterAuthFailure`` for 401, ``TaskclusterRestFailure`` (``status_code``) for other 4xx,
and after its own ``maxRetries`` a raw ``aiohttp.ClientResponseError`` for 5xx or a
``TaskclusterConnectionError`` for connection errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import taskcluster.aio
from taskcluster import exceptions as tc_exceptions

from tcworker.errors import QueueError, RunResolvedElsewhere

log = logging.getLogger(__name__)

T = TypeVar("T")
Credentials = dict[str, str]
CredentialsListener = Callable[[Credentials], None]

# claimWork long-polls for up to 20 s on the server side: its HTTP timeout must be well above that.
CLAIM_WORK_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 60.0


class QueueCallError(QueueError):
    """One Taskcluster API call failed, after the client's own retries.

    Attributes:
        api: API method name, e.g. ``"reclaimTask"``.
        status: HTTP status (int), or None for connection errors and timeouts.
        transient: True for 5xx, connection errors and timeouts (worth retrying later).
        body: the parsed error body (dict; empty when there was none).
    """

    def __init__(self, api: str, message: str, *, status: int | None, transient: bool,
                 body: dict | None = None) -> None:
        where = f"{api}: HTTP {status}" if status is not None else api
        super().__init__(f"{where}: {message}")
        self.api = api
        self.status = status
        self.transient = transient
        self.body = body or {}


# ------------------------------------------------------------------ classification (pure)
def status_of(err: BaseException) -> int | None:
    """HTTP status of a failed call, or None (connection error, timeout, anything else)."""
    if isinstance(err, QueueCallError):
        return err.status
    if isinstance(err, (tc_exceptions.TaskclusterRestFailure, tc_exceptions.TaskclusterAuthFailure)):
        status = getattr(err, "status_code", None)
        return status if isinstance(status, int) else None
    if isinstance(err, aiohttp.ClientResponseError):
        return err.status
    return None


def is_transient(err: BaseException) -> bool:
    """True when retrying later may succeed: 5xx, connection errors, timeouts.

    4xx (409 conflict, 401/403 auth, 404) are never transient. CancelledError is never transient.
    """
    if isinstance(err, QueueCallError):
        return err.transient
    if isinstance(err, asyncio.CancelledError):
        return False
    status = status_of(err)
    if status is not None:
        return status >= 500
    return isinstance(err, (tc_exceptions.TaskclusterConnectionError, aiohttp.ClientError,
                            TimeoutError, ConnectionError))


def is_auth_failure(err: BaseException) -> bool:
    """True for 401 (bad or expired credentials) and 403 (missing scopes)."""
    return status_of(err) in (401, 403)


def translate(err: BaseException, api: str) -> QueueCallError:
    """The :class:`QueueCallError` for any exception a ``taskcluster.aio`` call raised."""
    if isinstance(err, QueueCallError):
        return err
    status = status_of(err)
    if isinstance(err, TimeoutError):
        message = "timed out"
    elif isinstance(err, aiohttp.ClientResponseError):
        message = err.message or "server error"
    else:
        message = str(err).split("\n\n---", 1)[0] or type(err).__name__
    body = getattr(err, "body", None)
    return QueueCallError(api, message, status=status, transient=is_transient(err),
                          body=body if isinstance(body, dict) else None)


def parse_time(value: str) -> dt.datetime:
    """RFC 3339 string (``Z`` or an offset such as ``+00:00``) → aware UTC datetime.

    Raises:
        ValueError: not a date-time.
    """
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


# ------------------------------------------------------------------ clients
class ClientFactory:
    """Builds ``taskcluster.aio`` clients that share one ``aiohttp.ClientSession``.

    Args:
        root_url: the deployment's root URL, e.g. ``https://tc.example.com``.
        session: the shared session; :meth:`open` creates (and closes) one for you.
        max_retries: the client's own retries of 5xx and connection errors (default 5).
        call_timeout_s: total seconds per call, the client's retries included (default 60).
    """

    def __init__(self, root_url: str, session: aiohttp.ClientSession, *, max_retries: int = 5,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.root_url = root_url.rstrip("/")
        self.session = session
        self.max_retries = max_retries
        self.call_timeout_s = call_timeout_s

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, root_url: str, **kwargs: Any) -> AsyncIterator["ClientFactory"]:
        """``async with ClientFactory.open(root_url, max_retries=...) as clients:`` owns a session.

        The session bounds connecting (30 s) and each socket read (90 s, above claimWork's 20 s
        long poll); :meth:`call` bounds the whole call.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=90)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield cls(root_url, session, **kwargs)

    def _options(self, credentials: Credentials | None, extra: dict | None) -> dict:
        options: dict[str, Any] = {"rootUrl": self.root_url, "maxRetries": self.max_retries}
        if credentials:
            # The client encodes credential values in place: hand it a copy.
            options["credentials"] = dict(credentials)
        if extra:
            options.update(extra)
        return options

    def queue(self, credentials: Credentials | None, **extra: Any) -> taskcluster.aio.Queue:
        """A Queue client for ``credentials`` (``{clientId, accessToken[, certificate]}``)."""
        return taskcluster.aio.Queue(self._options(credentials, extra), session=self.session)

    def object(self, credentials: Credentials | None, **extra: Any) -> taskcluster.aio.Object:
        """An Object client (artifact uploads use the createArtifact response's credentials)."""
        return taskcluster.aio.Object(self._options(credentials, extra), session=self.session)

    def purge_cache(self, credentials: Credentials | None, **extra: Any) -> taskcluster.aio.PurgeCache:
        """A PurgeCache client."""
        return taskcluster.aio.PurgeCache(self._options(credentials, extra), session=self.session)

    def index(self, credentials: Credentials | None, **extra: Any) -> taskcluster.aio.Index:
        """An Index client."""
        return taskcluster.aio.Index(self._options(credentials, extra), session=self.session)

    def auth(self, credentials: Credentials | None, **extra: Any) -> taskcluster.aio.Auth:
        """An Auth client (``expandScopes`` of a task's ``assume:`` scopes)."""
        return taskcluster.aio.Auth(self._options(credentials, extra), session=self.session)

    async def call(self, method: Callable[..., Awaitable[T]], *args: Any,
                   timeout_s: float | None = None, **kwargs: Any) -> T:
        """Await ``method(*args, **kwargs)`` (a bound client method) under a total timeout.

        Args:
            timeout_s: total seconds, the client's retries included (default ``call_timeout_s``).

        Raises:
            QueueCallError: any failure, with ``status``/``transient`` set; a timeout is transient
                with ``status=None``. ``CancelledError`` passes through untouched.
        """
        api = getattr(method, "__name__", "call")
        limit = self.call_timeout_s if timeout_s is None else timeout_s
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await method(*args, **kwargs)
        except (tc_exceptions.TaskclusterFailure, aiohttp.ClientError, TimeoutError,
                ConnectionError) as err:
            if deadline.expired():
                raise QueueCallError(api, f"no answer within {limit:g} s", status=None,
                                     transient=True) from err
            raise translate(err, api) from err


# ------------------------------------------------------------------ claims
@dataclass(frozen=True)
class Claim:
    """One claimed run, from a claimWork answer.

    Attributes:
        task: the task definition (dict).
        task_id, run_id: identify the run.
        credentials: temporary task credentials ``{clientId, accessToken, certificate}``.
        taken_until: aware UTC datetime, server time; the claim lapses then unless reclaimed.
        clock_offset_s: server clock minus ours, seconds, estimated from the run's ``started``.
        status: the task status (dict) as claimWork returned it.
    """

    task: dict
    task_id: str
    run_id: int
    credentials: Credentials
    taken_until: dt.datetime
    clock_offset_s: float = 0.0
    status: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_response(cls, item: dict, received_at: float | None = None) -> "Claim":
        """Build from one ``claimWork`` ``tasks[]`` item; ``received_at`` is our epoch seconds."""
        status = item["status"]
        run_id = int(item["runId"])
        offset = 0.0
        runs = status.get("runs") or []
        if received_at is not None and run_id < len(runs) and runs[run_id].get("started"):
            offset = parse_time(runs[run_id]["started"]).timestamp() - received_at
        return cls(task=item["task"], task_id=status["taskId"], run_id=run_id,
                   credentials=dict(item["credentials"]), taken_until=parse_time(item["takenUntil"]),
                   clock_offset_s=offset, status=status)


class WorkerQueue:
    """Queue calls made with the worker's own credentials.

    Args:
        clients: the shared :class:`ClientFactory`.
        worker_pool_id: ``<provisionerId>/<workerType>`` (the task queue id).
        worker_group, worker_id: this worker's identity (``[a-zA-Z0-9_-]{1,38}``).
        credentials: the worker's credentials; replace them with :meth:`set_credentials`.
    """

    def __init__(self, clients: ClientFactory, *, worker_pool_id: str, worker_group: str,
                 worker_id: str, credentials: Credentials) -> None:
        self.clients = clients
        self.worker_pool_id = worker_pool_id
        self.worker_group = worker_group
        self.worker_id = worker_id
        self._credentials = dict(credentials)
        self._queue = clients.queue(self._credentials)

    @classmethod
    def from_config(cls, clients: ClientFactory, config: Any) -> "WorkerQueue":
        """Build from a :class:`~tcworker.config.WorkerConfig`."""
        return cls(clients, worker_pool_id=config.worker_pool_id, worker_group=config.worker_group,
                   worker_id=config.worker_id, credentials=config.credentials)

    @property
    def credentials(self) -> Credentials:
        """The worker credentials in use (a copy)."""
        return dict(self._credentials)

    def set_credentials(self, credentials: Credentials) -> None:
        """Use ``credentials`` for every later worker call (worker-runner's ``new-credentials``)."""
        self._credentials = dict(credentials)
        self._queue = self.clients.queue(self._credentials)

    async def claim_work(self, tasks: int, *, timeout_s: float = CLAIM_WORK_TIMEOUT_S) -> list[Claim]:
        """Claim up to ``tasks`` (1..32) runs; the server long-polls up to 20 s when idle.

        Returns:
            list of :class:`Claim`, possibly empty.

        Raises:
            QueueCallError: (a QueueError) the call failed; back off and poll again.
        """
        payload = {"workerGroup": self.worker_group, "workerId": self.worker_id, "tasks": tasks}
        answer = await self.clients.call(self._queue.claimWork, self.worker_pool_id, payload,
                                         timeout_s=timeout_s)
        received_at = time.time()
        return [Claim.from_response(item, received_at) for item in answer.get("tasks", [])]

    async def status(self, task_id: str, *, timeout_s: float | None = None) -> dict:
        """``queue.status(taskId)`` → the task status dict (``{taskId, state, runs: [...]}``).

        Raises:
            QueueCallError: e.g. status 403 when the worker lacks ``queue:status:<taskId>``.
        """
        answer = await self.clients.call(self._queue.status, task_id, timeout_s=timeout_s)
        return answer["status"]

    def run_queue(self, claim: Claim) -> "RunQueue":
        """The :class:`RunQueue` for one claimed run."""
        return RunQueue(self, claim)


class RunQueue:
    """Queue calls of one run, made with its current task credentials (replaced at each reclaim).

    Attributes:
        task_id, run_id, task: from the claim.
        taken_until: aware UTC datetime (server time) of the current claim.
        clock_offset_s: server clock minus ours, seconds.
        resolving: True once a ``report*`` call was sent (a status poll that then sees the run
            resolved is seeing our own resolution).
    """

    def __init__(self, worker: WorkerQueue, claim: Claim) -> None:
        self.worker = worker
        self.clients = worker.clients
        self.task_id = claim.task_id
        self.run_id = claim.run_id
        self.task = claim.task
        self.taken_until = claim.taken_until
        self.clock_offset_s = claim.clock_offset_s
        self.resolving = False
        self._credentials = dict(claim.credentials)
        self._queue = self.clients.queue(self._credentials)
        self._listeners: list[CredentialsListener] = []

    # -- credentials
    @property
    def credentials(self) -> Credentials:
        """The current task credentials (a copy)."""
        return dict(self._credentials)

    def on_credentials(self, listener: CredentialsListener) -> None:
        """Call ``listener(credentials)`` after every credentials change (proxy, uploaders)."""
        self._listeners.append(listener)

    def set_credentials(self, credentials: Credentials) -> None:
        """Replace the task credentials and tell every listener; a failing listener is logged."""
        self._credentials = dict(credentials)
        self._queue = self.clients.queue(self._credentials)
        for listener in list(self._listeners):
            try:
                listener(dict(credentials))
            except Exception:  # a listener's bug must not stop the reclaim loop
                log.exception("credentials listener failed for %s/%s", self.task_id, self.run_id)

    def queue_client(self, **extra: Any) -> taskcluster.aio.Queue:
        """A Queue client with the current task credentials (for createArtifact and friends).

        Build a fresh one per upload step, or register :meth:`on_credentials`: after a reclaim the
        old credentials keep working only until the old ``takenUntil`` (+5 min).
        """
        if extra:
            return self.clients.queue(self._credentials, **extra)
        return self._queue

    def seconds_left(self, now: float | None = None) -> float:
        """Seconds until ``taken_until`` by the server's clock (negative once passed)."""
        now = time.time() if now is None else now
        return self.taken_until.timestamp() - (now + self.clock_offset_s)

    # -- calls
    async def reclaim(self, *, timeout_s: float | None = None) -> dt.datetime:
        """``reclaimTask``; on success swap in the new credentials and ``takenUntil``.

        Returns:
            the new ``taken_until`` (aware UTC datetime).

        Raises:
            RunResolvedElsewhere: 409, the run is cancelled, past its deadline or expired.
            QueueCallError: any other failure (``transient`` says whether to retry).
        """
        try:
            answer = await self.clients.call(self._queue.reclaimTask, self.task_id, self.run_id,
                                             timeout_s=timeout_s)
        except QueueCallError as err:
            raise self._gone_or(err) from err
        self.taken_until = parse_time(answer["takenUntil"])
        self.set_credentials(answer["credentials"])
        return self.taken_until

    async def report_completed(self) -> dict:
        """``reportCompleted`` → task status dict. Raises as :meth:`_report`."""
        return await self._report(self._queue.reportCompleted, self.task_id, self.run_id)

    async def report_failed(self) -> dict:
        """``reportFailed`` → task status dict. Raises as :meth:`_report`."""
        return await self._report(self._queue.reportFailed, self.task_id, self.run_id)

    async def report_exception(self, reason: str) -> dict:
        """``reportException`` with ``reason`` (one of the queue's five) → task status dict."""
        return await self._report(self._queue.reportException, self.task_id, self.run_id,
                                  {"reason": reason})

    async def status(self) -> dict:
        """The task status (worker credentials: task credentials may lack ``queue:status``)."""
        return await self.worker.status(self.task_id)

    async def _report(self, method: Callable[..., Awaitable[dict]], *args: Any) -> dict:
        """Send one report call.

        Raises:
            RunResolvedElsewhere: 409, the run was already resolved another way.
            QueueCallError: any other failure after the client's retries.
        """
        self.resolving = True
        try:
            answer = await self.clients.call(method, *args)
        except QueueCallError as err:
            raise self._gone_or(err) from err
        return answer["status"]

    def _gone_or(self, err: QueueCallError) -> Exception:
        if err.status == 409:
            return RunResolvedElsewhere(f"run {self.task_id}/{self.run_id}: {err}")
        return err
