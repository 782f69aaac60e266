"""Artifact rules of the emulated queue (contract §2.2), independent of HTTP.

Lives here: :class:`ArtifactRules` with create (all five storage types, validation order, the
25-minute window after an exception resolution, idempotence/compatibility rules), finish (object
artifacts become present), link-following lookup with per-name scope checks, listing with
pagination, and the storage URL each artifact is served from.

Does not live here: the HTTP handlers (``artifact_api.py``), the object service (``objects.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import slugid

from .auth import AuthService
from .clock import iso, parse_time
from .errors import ApiError, conflict, input_error, not_found
from .model import Artifact, Run, Task
from .objects import PUT_URL_LIFETIME_S, ObjectStore
from .state import QueueState

EXCEPTION_UPLOAD_WINDOW_S = 25 * 60
EXPIRES_SKEW_S = 15 * 60
UPLOAD_CREDS_MAX_S = 24 * 3600
DOWNLOAD_CREDS_S = 3600


class ArtifactRules:
    """Create, finish, find and list artifacts on the runs of a :class:`QueueState`."""

    def __init__(self, state: QueueState, objects: ObjectStore, auth: AuthService) -> None:
        self.state = state
        self.objects = objects
        self.auth = auth

    # -- createArtifact --------------------------------------------------------------------
    def create(self, task_id: str, run_id: int, name: str, req: dict) -> dict:
        """createArtifact → ``post-artifact-response``.

        Raises: 400 (expires too old or after task.expires, task/run missing, run never claimed),
        409 (run not running and not within 25 min of an exception; incompatible repeat).
        """
        now = self.state.clock.now()
        expires = parse_time(req["expires"], "expires")
        if expires < now - EXPIRES_SKEW_S:
            raise input_error("expires is more than 15 minutes in the past")
        task = self.state.tasks.get(task_id)
        run = task.run(run_id) if task else None
        if task is None or run is None:
            raise input_error(f"Task {task_id} or run {run_id} does not exist")
        if run.worker_group is None:
            raise input_error(f"Run {run_id} of task {task_id} was never claimed")
        if expires > task.expires:
            raise input_error("Artifact expires cannot be later than task.expires")
        in_window = (run.state == "exception" and run.resolved is not None
                     and now - run.resolved < EXCEPTION_UPLOAD_WINDOW_S)
        if run.state != "running" and not in_window:
            raise conflict(f"Run {run_id} of task {task_id} is {run.state}: artifacts cannot be "
                           "created", taskId=task_id, runId=run_id, name=name)
        storage = req["storageType"]
        content_type = "application/binary" if storage == "error" else req.get(
            "contentType", "application/binary")
        details = self._details(storage, req)
        existing = run.artifacts.get(name)
        if existing is not None:
            self._check_compatible(existing, storage, content_type, expires, details)
            if storage == "s3":
                details = existing.details
        if storage == "object":
            return self._create_object(task, run, name, content_type, expires, req)
        if storage == "s3" and existing is None:
            blob = self.objects.new_blob("s3", expected_type=content_type,
                                         expected_length=req.get("contentLength"))
            details = {"blobId": blob.blob_id}
        run.artifacts[name] = Artifact(name, storage, content_type, expires, details,
                                       content_length=req.get("contentLength"))
        self.state._emit("artifact-created", task, run)
        if storage == "s3":
            blob = self.objects.blobs[details["blobId"]]
            return {"storageType": "s3", "putUrl": self.objects.blob_url(blob, True),
                    "expires": iso(now + PUT_URL_LIFETIME_S), "contentType": content_type}
        return {"storageType": storage}

    @staticmethod
    def _details(storage: str, req: dict) -> dict:
        if storage == "reference":
            return {"url": req["url"]}
        if storage == "link":
            return {"artifact": req["artifact"]}
        if storage == "error":
            return {"reason": req["reason"], "message": req["message"]}
        return {}

    @staticmethod
    def _check_compatible(old: Artifact, storage: str, content_type: str, expires: float,
                          details: dict) -> None:
        """``createArtifactCallsCompatible``: raise 409 unless the repeat may replace ``old``."""
        if old.storage_type == "reference" and storage == "link":
            return
        if old.storage_type != storage or storage == "object":
            # object: the queue would lock in a new uploadId, which the object service refuses.
            raise conflict(f"Artifact {old.name} already exists with storageType {old.storage_type}")
        if storage != "link" and old.content_type != content_type:
            raise conflict(f"Artifact {old.name} already exists with contentType {old.content_type}")
        if expires < old.expires:
            raise conflict(f"Artifact {old.name} already exists with a later expires")
        if storage not in ("s3", "reference") and old.details != details:
            raise conflict(f"Artifact {old.name} already exists with different details")

    def _create_object(self, task: Task, run: Run, name: str, content_type: str, expires: float,
                       req: dict) -> dict:
        project_id = task.definition["projectId"]
        object_name = f"t/{task.task_id}/{run.run_id}/{name}"
        upload_id = slugid.nice()
        expires_s = iso(expires)
        self.objects.create_upload(object_name, {"projectId": project_id, "uploadId": upload_id,
                                                 "expires": expires_s, "proposedUploadMethods": {}})
        run.artifacts[name] = Artifact(
            name, "object", content_type, expires, present=False,
            details={"projectId": project_id, "uploadId": upload_id, "name": object_name},
            content_length=req.get("contentLength"))
        lifetime = min(expires - self.state.clock.now(), UPLOAD_CREDS_MAX_S)
        creds = self.auth.mint(
            f"artifact-upload/{task.task_id}/{run.run_id}/on/{run.worker_group}/{run.worker_id}",
            [f"object:upload:{project_id}:{object_name}"], lifetime)
        return {"storageType": "object", "name": object_name, "projectId": project_id,
                "uploadId": upload_id, "expires": expires_s, "credentials": creds}

    # -- finishArtifact --------------------------------------------------------------------
    def finish(self, task_id: str, run_id: int, name: str, upload_id: str) -> None:
        """finishArtifact. Raises: 404 (task/run/artifact), 400 (not object, uploadId mismatch,
        object missing or unfinished). Idempotent once present; never checks the run state."""
        task, run = self.state.get_run(task_id, run_id)
        art = run.artifacts.get(name)
        if art is None:
            raise not_found(f"Artifact {name} of run {run_id} of task {task_id} not found")
        if art.storage_type != "object":
            raise input_error(f"Artifact {name} is a {art.storage_type} artifact, not object")
        if art.details["uploadId"] != upload_id:
            raise input_error("uploadId does not match the one of createArtifact")
        if art.present:
            return
        obj = self.objects.objects.get(art.details["name"])
        if obj is None or not obj.finished:
            raise input_error(f"Object for artifact {name} is missing or not finished")
        art.present = True
        self.state._emit("artifact-created", task, run)

    # -- lookups ---------------------------------------------------------------------------
    def latest_run(self, task_id: str) -> tuple[Task, Run]:
        """Raises 404 when the task is missing or has no runs."""
        task = self.state.get(task_id)
        if task.latest is None:
            raise not_found(f"Task {task_id} has no runs")
        return task, task.latest

    def find(self, run: Run, name: str, authorize: Callable[[str], None]) -> Artifact:
        """Follow links from ``name`` (checking ``queue:get-artifact:<n>`` for every name).

        Raises: 403 (scopes), 404 (missing / not present), 410 (expired), 400 (link cycle).
        """
        seen: set[str] = set()
        while True:
            authorize(f"queue:get-artifact:{name}")
            art = run.artifacts.get(name)
            if art is None or not art.present:
                raise not_found(f"Artifact {name} not found on run {run.run_id}")
            if art.expires < self.state.clock.now():
                raise ApiError(410, "ResourceExpired", f"Artifact {name} has expired")
            if art.storage_type != "link":
                return art
            seen.add(name)
            name = art.details["artifact"]
            if name in seen:
                raise input_error("Artifact links form a cycle")

    def info(self, run: Run, name: str) -> Artifact:
        """artifactInfo: no link following; 404 until present."""
        art = run.artifacts.get(name)
        if art is None or not art.present:
            raise not_found(f"Artifact {name} not found on run {run.run_id}")
        return art

    def url(self, art: Artifact) -> str:
        """Where getArtifact redirects: a storage URL (no credentials needed) or the reference."""
        if art.storage_type == "reference":
            return art.details["url"]
        if art.storage_type == "s3":
            return self.objects.blob_url(self.objects.blobs[art.details["blobId"]], False)
        return self.objects.blob_url(self.objects.objects[art.details["name"]].blob, False)

    def content(self, task: Task, run: Run, art: Artifact) -> dict:
        """``artifact-content-response`` for the artifact/latestArtifact methods."""
        if art.storage_type == "error":
            return {"storageType": "error", "reason": art.details["reason"],
                    "message": art.details["message"]}
        if art.storage_type == "object":
            object_name = art.details["name"]
            creds = self.auth.mint(f"artifact-download/{task.task_id}/{run.run_id}/{art.name}",
                                   [f"object:download:{object_name}"], DOWNLOAD_CREDS_S)
            return {"storageType": "object", "name": object_name, "credentials": creds}
        return {"storageType": art.storage_type, "url": self.url(art)}

    @staticmethod
    def page(run: Run, continuation: str | None, limit: int | None) -> dict:
        """One ``list-artifacts-response`` page, sorted by name, at most 1000 (or ``limit``)."""
        names = sorted(run.artifacts)
        try:
            start = int(continuation) if continuation else 0
        except ValueError as err:
            raise input_error("invalid continuationToken") from err
        size = min(limit or 1000, 1000)
        chunk = names[start:start + size]
        out: dict = {"artifacts": [run.artifacts[n].to_json() for n in chunk]}
        if start + size < len(names):
            out["continuationToken"] = str(start + size)
        return out
