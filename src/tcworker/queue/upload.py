"""Artifact uploads to the Taskcluster queue: :class:`ArtifactUploader`.

Protocol (``../shared/reference/queue-contract.md`` 2.2-2.4, peer-workers.md 3.14), per artifact:

- ``object`` (``createObjectArtifacts``, default): createArtifact → ``taskcluster.aio.upload.upload``
  with the answer's ``uploadId``/``projectId``/``name``/``expires`` unchanged (< 8 KiB goes
  ``dataInline``) → finishArtifact. Always stored identity-encoded.
- ``s3``: createArtifact → PUT to ``putUrl`` with an explicit ``Content-Length`` (never chunked;
  0 for an empty file, FM-04), gzipped through a temp file when ``content_encoding`` is ``gzip``.
- ``error``, ``link``, ``reference``: createArtifact only; links and references go last.

Every call reads ``credentials()`` afresh (task credentials change at each reclaim). Once the
client's own retries are spent, transient failures (5xx, 408/429, connection errors, timeouts)
are retried per stage with bounded jittered backoff (FM-14). Retrying an ``object`` createArtifact
is safe when the failed attempt never reached the handler; when it did (answer lost), the queue
answers 409 and the artifact fails, as no one can learn the first ``uploadId``. A createArtifact
409 while the run is not ``running`` ends that upload quietly (``run-resolved``) and skips the
later ones. A file gone since :func:`~tcworker.artifacts.collect` becomes an ``error`` artifact
(FM-02). One failure never cancels the other uploads; :meth:`ArtifactUploader.upload_all` raises
:class:`ArtifactUploadFailed` (a ``ResourceUnavailable``) once all have finished.

Not here: what to upload (:mod:`tcworker.artifacts`), request bodies and readers
(:mod:`tcworker.artifact_bodies`), the time budget (the caller's ``asyncio.timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Awaitable, BinaryIO, Callable, Iterable, Mapping, TypeVar

import aiohttp
import yarl
from taskcluster import exceptions as tc_exceptions
from taskcluster.aio.upload import upload as object_upload

from tcworker.artifact_bodies import BodyReader, create_request, format_expires, gzip_to_temp, sha256_of
from tcworker.artifacts import (
    Artifact,
    ArtifactGone,
    DataArtifact,
    ErrorArtifact,
    LinkArtifact,
    ReferenceArtifact,
    open_artifact,
)
from tcworker.artifact_results import ArtifactUploadFailed, UploadResult
from tcworker.queue.client import ClientFactory, QueueCallError, is_transient, status_of

log = logging.getLogger(__name__)

T = TypeVar("T")
Credentials = Mapping[str, str]

# What a transient failure looks like once the client gave up (client.is_transient) plus the
# 408/429 a storage backend may send.
_RETRYABLE_STATUSES = frozenset({408, 429})
# Failures of a call, as the client, the upload helper and aiohttp raise them. Anything else is a
# bug and propagates (→ internal-error), ArtifactGone (an OSError) is handled before.
_CALL_ERRORS = (QueueCallError, tc_exceptions.TaskclusterFailure, aiohttp.ClientError, OSError, TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """Our retries of one upload stage, on top of the client's own ``maxRetries``.

    Attributes:
        attempts: tries per stage (createArtifact, data, finishArtifact), >= 1.
        base_delay_s: first backoff in seconds, doubled per attempt, with 50-100 % jitter.
        max_delay_s: cap of one backoff, seconds.
    """

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay_s(self, attempt: int) -> float:
        """Backoff before try ``attempt + 1`` (``attempt`` counts from 1)."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class _StageFailed(Exception):
    """One stage failed for good (permanent, or retries exhausted)."""

    def __init__(self, stage: str, err: BaseException) -> None:
        self.status = status_of(err)
        where = f"HTTP {self.status}" if self.status is not None else type(err).__name__
        if isinstance(err, QueueCallError):  # its str() already starts with "<api>: HTTP <status>: "
            text = str(err).removeprefix(f"{err.api}: ").removeprefix(f"HTTP {err.status}: ")
        elif isinstance(err, aiohttp.ClientResponseError):
            text = err.message
        else:
            text = str(err)
        detail = text.split("\n\n---", 1)[0].strip().splitlines()
        super().__init__(f"{stage}: {where}" + (f": {detail[0][:300]}" if detail else ""))


class _RunResolved(Exception):
    """createArtifact answered 409 and the run is no longer running."""


def _retryable(err: BaseException) -> bool:
    return is_transient(err) or status_of(err) in _RETRYABLE_STATUSES


class ArtifactUploader:
    """Uploads one run's artifacts.

    Args:
        clients: the shared :class:`~tcworker.queue.client.ClientFactory` (session, root URL,
            the client's ``maxRetries``, per-call timeout).
        task_id, run_id: the run.
        credentials: returns the run's current task credentials (``RunQueue.credentials``);
            called before every call.
        object_artifacts: ``config.create_object_artifacts`` (True: ``object``, False: ``s3``).
        concurrency: uploads in flight at once (``config.upload_concurrency``).
        retry: our backoff per stage.
        run_status: returns the task status dict (``RunQueue.status``), asked after a 409;
            default: ``queue.status`` with the task credentials.
        warn: one line per retry or skip for the task log (``TaskLog.warn``); default: logger.
    """

    def __init__(
        self,
        clients: ClientFactory,
        *,
        task_id: str,
        run_id: int,
        credentials: Callable[[], Credentials],
        object_artifacts: bool = True,
        concurrency: int = 10,
        retry: RetryPolicy = RetryPolicy(),
        run_status: Callable[[], Awaitable[dict]] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.clients = clients
        self.task_id = task_id
        self.run_id = run_id
        self.credentials = credentials
        self.object_artifacts = object_artifacts
        self.retry = retry
        self._limit = asyncio.Semaphore(max(1, concurrency))
        self._run_status = run_status
        self._warn = warn or log.warning
        self._run_resolved = False

    @classmethod
    def for_run(cls, run_queue: Any, config: Any, **kwargs: Any) -> "ArtifactUploader":
        """Build for a :class:`~tcworker.queue.client.RunQueue` and a ``WorkerConfig``."""
        return cls(
            run_queue.clients,
            task_id=run_queue.task_id,
            run_id=run_queue.run_id,
            credentials=lambda: run_queue.credentials,
            object_artifacts=config.create_object_artifacts,
            concurrency=config.upload_concurrency,
            run_status=run_queue.status,
            **kwargs,
        )

    @property
    def run_resolved(self) -> bool:
        """True once a createArtifact 409 showed the run is no longer running."""
        return self._run_resolved

    # ------------------------------------------------------------------ public API

    async def upload_all(self, artifacts: Iterable[Artifact]) -> list[UploadResult]:
        """Upload ``artifacts`` concurrently (links and references after the rest).

        Returns:
            one :class:`UploadResult` per artifact, in input order.

        Raises:
            ArtifactUploadFailed: after every upload finished, when any result is ``failed``.
        """
        items = list(artifacts)
        results: list[UploadResult] = [None] * len(items)  # type: ignore[list-item]
        for links_phase in (False, True):
            async with asyncio.TaskGroup() as group:
                tasks = {i: group.create_task(self._limited(a)) for i, a in enumerate(items)
                         if isinstance(a, (LinkArtifact, ReferenceArtifact)) == links_phase}
            for i, task in tasks.items():
                results[i] = task.result()
        failures = [r for r in results if r.status == "failed"]
        if failures:
            raise ArtifactUploadFailed(failures, results)
        return results

    async def upload(self, artifact: Artifact) -> UploadResult:
        """Upload one artifact; a failure is returned as ``status="failed"``, never raised.

        ``CancelledError`` and unexpected exceptions (bugs) propagate.
        """
        if self._run_resolved:
            return self._resolved_result(artifact)
        try:
            if isinstance(artifact, DataArtifact):
                return await self._upload_data(artifact)
            return await self._create_only(artifact)
        except _RunResolved:
            self._run_resolved = True
            return self._resolved_result(artifact)
        except _StageFailed as err:
            self._warn(f"artifact {artifact.name!r} not uploaded: {err}")
            return UploadResult(
                artifact.name, self._storage_type(artifact), "failed",
                fails_task=True, message=str(err), http_status=err.status,
            )

    # ------------------------------------------------------------------ per kind

    async def _limited(self, artifact: Artifact) -> UploadResult:
        async with self._limit:
            return await self.upload(artifact)

    def _storage_type(self, artifact: Artifact) -> str:
        if isinstance(artifact, DataArtifact):
            return "object" if self.object_artifacts else "s3"
        if isinstance(artifact, ErrorArtifact):
            return "error"
        return "link" if isinstance(artifact, LinkArtifact) else "reference"

    def _resolved_result(self, artifact: Artifact) -> UploadResult:
        return UploadResult(artifact.name, self._storage_type(artifact), "run-resolved",
                            message="the run is no longer running (createArtifact answered 409)",
                            http_status=409)

    async def _create_only(self, artifact: ErrorArtifact | LinkArtifact | ReferenceArtifact) -> UploadResult:
        body = create_request(artifact)
        await self._create(artifact.name, body)
        fails = artifact.fails_task if isinstance(artifact, ErrorArtifact) else False
        return UploadResult(artifact.name, body["storageType"], "uploaded",
                            content_type=body.get("contentType"), fails_task=fails,
                            message=getattr(artifact, "message", ""))

    async def _upload_data(self, artifact: DataArtifact) -> UploadResult:
        try:
            source, size = open_artifact(artifact)
        except ArtifactGone as gone:
            return await self._replace_by_error(artifact, gone)
        with source:
            try:
                if self.object_artifacts:
                    return await self._upload_object(artifact, source, size)
                return await self._upload_s3(artifact, source, size)
            except ArtifactGone as gone:  # shrank while uploading: createArtifact already ran
                self._warn(f"artifact {artifact.name!r} skipped: {gone}")
                return UploadResult(artifact.name, self._storage_type(artifact), "skipped",
                                    fails_task=artifact.required, message=str(gone))

    async def _replace_by_error(self, artifact: DataArtifact, gone: ArtifactGone) -> UploadResult:
        self._warn(f"artifact {artifact.name!r}: {gone}; publishing an error artifact instead")
        error = ErrorArtifact(artifact.name, gone.reason, str(gone), artifact.expires, artifact.required)
        await self._create_only(error)
        return UploadResult(artifact.name, "error", "replaced-by-error",
                            fails_task=artifact.required, message=str(gone))

    async def _upload_object(self, artifact: DataArtifact, source: BinaryIO, size: int) -> UploadResult:
        answer = await self._create(artifact.name, create_request(artifact, storage_type="object", size_bytes=size))
        readers: list[BodyReader] = []

        async def reader_factory() -> BodyReader:
            source.seek(0)
            readers.append(BodyReader(source, size))
            return readers[-1]

        object_service = self.clients.object(dict(answer["credentials"]))

        attempts = 0

        async def send() -> None:
            nonlocal attempts
            attempts += 1
            try:
                await object_upload(
                    projectId=answer["projectId"], name=answer["name"], uploadId=answer["uploadId"],
                    expires=answer["expires"], contentType=artifact.content_type, contentLength=size,
                    readerFactory=reader_factory, objectService=object_service,
                    maxRetries=self.clients.max_retries,
                )
            except tc_exceptions.TaskclusterRestFailure as err:
                if attempts > 1 and err.status_code == 409:
                    return  # an earlier attempt finished the object; finishArtifact checks that
                raise

        await self._stage("object upload", artifact.name, send)
        await self._stage("finishArtifact", artifact.name, lambda: self.clients.call(
            self._queue().finishArtifact, self.task_id, str(self.run_id), artifact.name,
            {"uploadId": answer["uploadId"]}))
        sha256 = next((r.hexdigest() for r in reversed(readers) if r.complete), None)
        if sha256 is None:  # the helper never read the whole file (cannot happen today)
            sha256 = await asyncio.to_thread(sha256_of, source, size)
        return UploadResult(artifact.name, "object", "uploaded", sha256=sha256, size_bytes=size,
                            content_type=artifact.content_type, content_encoding="identity")

    async def _upload_s3(self, artifact: DataArtifact, source: BinaryIO, size: int) -> UploadResult:
        # An empty body stays empty (FM-04: Content-Length 0), rather than a 20-byte gzip stream.
        encoding = artifact.content_encoding if size else "identity"
        sha256: str | None = None
        if encoding == "gzip":  # compress first: the PUT needs the final Content-Length
            body, body_size, sha256 = await asyncio.to_thread(gzip_to_temp, source, size)
        else:
            body, body_size = source, size
        with body:
            request = create_request(artifact, storage_type="s3", size_bytes=None if encoding == "gzip" else size)
            answer = await self._create(artifact.name, request)
            content_type = answer.get("contentType") or artifact.content_type
            readers: list[BodyReader] = []

            async def send() -> None:
                body.seek(0)
                readers.append(BodyReader(body, body_size))
                await self._put(answer["putUrl"], content_type, encoding, readers[-1], body_size)

            await self._stage("PUT", artifact.name, send)
        if sha256 is None:
            sha256 = readers[-1].hexdigest()
        return UploadResult(artifact.name, "s3", "uploaded", sha256=sha256, size_bytes=size,
                            content_type=content_type, content_encoding=encoding)

    # ------------------------------------------------------------------ calls

    def _queue(self) -> Any:
        return self.clients.queue(dict(self.credentials()))

    async def _create(self, name: str, body: dict[str, Any]) -> dict:
        """createArtifact with retries; a 409 while the run is not running raises _RunResolved."""
        async def call() -> dict:
            return await self.clients.call(self._queue().createArtifact, self.task_id, str(self.run_id), name, body)

        try:
            return await self._stage("createArtifact", name, call)
        except _StageFailed as err:
            if err.status == 409 and not await self._run_is_running():
                raise _RunResolved() from err
            raise

    async def _run_is_running(self) -> bool:
        """Ask the queue whether the run is still ``running`` (after a createArtifact 409)."""
        try:
            if self._run_status is not None:
                status = await self._run_status()
            else:
                status = (await self.clients.call(self._queue().status, self.task_id))["status"]
        except _CALL_ERRORS as err:
            # A 409 most often means exactly this; without an answer, take it at its word.
            self._warn(f"cannot check the run state after a 409 ({err}); taking it as resolved")
            return False
        runs = status.get("runs") or []
        return self.run_id < len(runs) and runs[self.run_id].get("state") == "running"

    async def _stage(self, stage: str, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` with bounded retries of transient failures.

        Raises:
            _StageFailed: a permanent failure, or the last transient one.
        """
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await fn()
            except ArtifactGone:
                raise
            except _CALL_ERRORS as err:
                if not _retryable(err) and not _is_connection_error(err):
                    raise _StageFailed(stage, err) from err
                if attempt == self.retry.attempts:
                    raise _StageFailed(f"{stage} (after {attempt} attempts)", err) from err
                delay = self.retry.delay_s(attempt)
                self._warn(f"artifact {name!r}: {_StageFailed(stage, err)}; retrying in {delay:.1f} s")
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _put(self, url: str, content_type: str, encoding: str, reader: BodyReader, size: int) -> None:
        headers = {"Content-Type": content_type, "Content-Encoding": encoding, "Content-Length": str(size)}
        data: Any = reader.chunks() if size else b""
        async with self.clients.session.put(yarl.URL(url, encoded=True), data=data, headers=headers) as resp:
            if resp.status >= 300:
                text = (await resp.text(errors="replace"))[:300]
                raise aiohttp.ClientResponseError(resp.request_info, resp.history, status=resp.status,
                                                  message=text or resp.reason or "", headers=resp.headers)


def _is_connection_error(err: BaseException) -> bool:
    return isinstance(err, (aiohttp.ClientError, ConnectionError, TimeoutError)) and status_of(err) is None


__all__ = ["ArtifactUploadFailed", "ArtifactUploader", "RetryPolicy", "UploadResult", "format_expires"]
