"""The emulator itself: :class:`QueueEmulator`, its life cycle and its test-facing API.

Lives here: building the aiohttp app (``/api/<service>/v1/...`` for queue, object, purge-cache
and index, plus ``/storage/blob/<id>``), starting it on 127.0.0.1 (port 0 by default), the
background resolver (claim expiry, deadlines), and the helpers tests use: clients and
credentials, task definitions, task creation, inspection (runs, artifacts and their bytes, the
call log), faults and the clock.

Does not live here: the rules (``state.py``, ``artifacts.py``, ``objects.py``), auth
(``auth.py``), the per-request pipeline (``pipeline.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import slugid
from aiohttp import web

from . import artifact_api, auth_api, misc_api, object_api, queue_api  # noqa: F401  (register endpoints)
from .artifacts import ArtifactRules
from .auth import AuthService
from .clock import Clock, iso
from .faults import Call, FaultInjector
from .misc_api import IndexState, PurgeCacheState
from .model import Run
from .objects import Blob, ObjectStore
from .pipeline import handle_api
from .schemas import SchemaMismatch, SchemaSet, find_schema_dir
from .state import QueueState
from .storage import handle_storage

log = logging.getLogger(__name__)
DEFAULT_TASK_QUEUE_ID = "proj-test/python-worker"
ROOT_CLIENT_ID = "static/taskcluster/root"


class QueueEmulator:
    """A local Taskcluster Queue + Object + Purge-Cache + Index, over real HTTP with Hawk.

    Use as ``async with QueueEmulator(...) as emu:`` (or ``await emu.start()`` /
    ``await emu.stop()``).

    Args:
        port: TCP port on 127.0.0.1; 0 (default) picks a free one.
        claim_timeout_s: seconds a claim lasts (upstream 1200).
        long_poll_s: seconds claimWork waits for work before answering ``{"tasks": []}`` (20).
        deadline_delay_s: seconds after a deadline before runs resolve ``deadline-exceeded`` (60).
        resolver_interval_s: how often (real seconds) the background resolver checks expiries.
        validate_schemas: True = validate every body against ``../shared`` schemas (error if they
            are missing), False = never, None (default) = when the schemas are found.
        anonymous_scopes: scopes of the ``anonymous`` role; None = what a public deployment grants.
        strict: on exit, raise AssertionError if a response failed its schema or a handler crashed.
        pulse_url, pulse_prefix: when an AMQP URL is given, publish the queue's Pulse messages to
            ``<pulse_prefix><exchange>`` (``pulse.py``; ``emu.pulse`` is the publisher).
    """

    def __init__(self, *, port: int = 0, claim_timeout_s: float = 1200, long_poll_s: float = 20,
                 deadline_delay_s: float = 60, resolver_interval_s: float = 0.1,
                 validate_schemas: bool | None = None, anonymous_scopes: list[str] | None = None,
                 strict: bool = True, pulse_url: str | None = None,
                 pulse_prefix: str = "exchange/taskcluster-queue/v1/") -> None:
        self.port = port
        self.long_poll_s = long_poll_s
        self.resolver_interval_s = resolver_interval_s
        self.strict = strict
        self.clock = Clock()
        self.auth = AuthService(anonymous_scopes)
        self.root_credentials = self.auth.add_client(ROOT_CLIENT_ID, ["*"])
        self.state = QueueState(self.clock, claim_timeout_s, deadline_delay_s)
        self.objects = ObjectStore(self.clock, self._blob_url)
        self.artifacts = ArtifactRules(self.state, self.objects, self.auth)
        self.purge_cache = PurgeCacheState(self.clock)
        self.index = IndexState(self.clock)
        self.faults = FaultInjector()
        self.calls: list[Call] = []
        self.schema_errors: list[str] = []
        self.errors: list[str] = []
        self.schemas = self._load_schemas(validate_schemas)
        self.pulse_url, self.pulse_prefix = pulse_url, pulse_prefix
        self.pulse = None  # a .pulse.PulsePublisher once started with pulse_url
        self.closing = False
        self._closing_event = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._resolver: asyncio.Task | None = None
        self.clock.on_advance(self.state.tick)

    @staticmethod
    def _load_schemas(validate: bool | None) -> SchemaSet | None:
        if validate is False:
            return None
        schema_dir = find_schema_dir()
        if schema_dir is None:
            if validate:
                raise RuntimeError("validate_schemas=True but no schemas found (set TCWORKER_SHARED)")
            return None
        return SchemaSet(schema_dir)

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> QueueEmulator:
        """Listen on 127.0.0.1 and start the resolver. Returns self."""
        app = web.Application(client_max_size=10 * 1024 * 1024 + 1)

        async def storage(request: web.Request) -> web.StreamResponse:
            return await handle_storage(self, request)

        async def api(request: web.Request) -> web.StreamResponse:
            return await handle_api(self, request)

        app.router.add_route("*", "/storage/blob/{blob_id}", storage)
        app.router.add_route("*", "/{tail:.*}", api)
        # auto_decompress off: storage keeps gzip-encoded s3 bodies as sent, like S3 does.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                                     shutdown_timeout=1.0, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._resolver = asyncio.create_task(self._resolve_forever(), name="queue-emulator-resolver")
        if self.pulse_url:
            from .pulse import PulsePublisher

            self.pulse = await PulsePublisher(self.pulse_url, self.pulse_prefix).start(self.state)
        return self

    async def stop(self) -> None:
        """Wake long-polls and hung faults, stop the resolver and the server."""
        self.closing = True
        self._closing_event.set()
        self.state.wake_all()
        if self._resolver is not None:
            self._resolver.cancel()
            try:
                await self._resolver
            except asyncio.CancelledError:
                pass
        if self._runner is not None:
            await self._runner.cleanup()
        if self.pulse is not None:
            await self.pulse.stop()

    async def __aenter__(self) -> QueueEmulator:
        return await self.start()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.stop()
        if self.strict and exc_type is None and (self.schema_errors or self.errors):
            raise AssertionError("queue emulator saw bugs:\n" + "\n".join(self.schema_errors + self.errors))

    async def _resolve_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resolver_interval_s)
            self.state.tick()

    # -- clients ---------------------------------------------------------------------------
    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` (valid once started)."""
        return f"http://127.0.0.1:{self.port}"

    def _blob_url(self, blob: Blob, for_put: bool) -> str:
        url = f"{self.root_url}/storage/blob/{blob.blob_id}"
        return f"{url}?token={blob.put_token}" if for_put else url

    def add_client(self, client_id: str, scopes: list[str]) -> dict[str, str]:
        """Create a permanent client → ``{"clientId", "accessToken"}``."""
        return self.auth.add_client(client_id, scopes)

    def add_role(self, role_id: str, scopes: list[str]) -> None:
        """Create (or replace) role ``role_id`` (may end with ``*``) granting ``scopes``."""
        self.auth.roles[role_id] = list(scopes)

    def worker_credentials(self, task_queue_id: str = DEFAULT_TASK_QUEUE_ID,
                           worker_group: str = "test-group", worker_id: str = "test-worker") -> dict[str, str]:
        """A client with exactly what a worker needs to claim: ``queue:claim-work:<queue>`` and
        ``queue:worker-id:<group>/<id>`` → ``{"clientId", "accessToken"}``."""
        return self.add_client(f"worker/{task_queue_id}/{worker_group}/{worker_id}", [
            f"queue:claim-work:{task_queue_id}", f"queue:worker-id:{worker_group}/{worker_id}"])

    def client_options(self, credentials: dict | None = None, **extra: Any) -> dict:
        """Options for ``taskcluster.aio.Queue(...)`` etc.: rootUrl, credentials (root's by
        default; pass ``{}`` for anonymous), ``maxRetries`` 0 unless given."""
        options = {"rootUrl": self.root_url, "maxRetries": 0}
        creds = self.root_credentials if credentials is None else credentials
        if creds:
            options["credentials"] = dict(creds)   # the client rewrites it in place (bytes)
        options.update(extra)
        return options

    # -- tasks -----------------------------------------------------------------------------
    def make_task(self, *, deadline_in_s: float = 3600, **overrides: Any) -> dict:
        """A valid ``create-task-request`` (taskQueueId ``proj-test/python-worker``, created now on
        the emulator clock, deadline ``deadline_in_s`` later); ``overrides`` replace keys."""
        now = self.clock.now()
        task = {
            "taskQueueId": DEFAULT_TASK_QUEUE_ID,
            "created": iso(now), "deadline": iso(now + deadline_in_s),
            "expires": iso(now + deadline_in_s + 30 * 24 * 3600),
            "payload": {}, "scopes": [], "retries": 5,
            "metadata": {"name": "emulator test task", "description": "made by QueueEmulator.make_task",
                         "owner": "tester@example.com", "source": "https://github.com/taskcluster/tcworker"},
        }
        task.update(overrides)
        return task

    async def create_task(self, task_id: str | None = None, task_def: dict | None = None,
                          **overrides: Any) -> str:
        """Create a task directly in the state (no HTTP, no scopes) → its taskId.

        ``task_def`` defaults to ``make_task(**overrides)``. Validated against
        ``create-task-request`` when schemas are on. Raises ApiError as createTask would.
        """
        task_id = task_id or slugid.nice()
        task_def = task_def if task_def is not None else self.make_task(**overrides)
        if self.schemas is not None:
            self.schemas.validate("queue", "create-task-request", task_def)
        self.state.create_task(task_id, task_def)
        return task_id

    def cancel_task(self, task_id: str) -> None:
        """cancelTask, directly on the state."""
        self.state.cancel(task_id)

    # -- inspection ------------------------------------------------------------------------
    def task_state(self, task_id: str) -> str:
        """unscheduled | pending | running | completed | failed | exception."""
        return self.state.get(task_id).state

    def status(self, task_id: str) -> dict:
        """The task's ``task-status`` JSON."""
        return self.state.get(task_id).status_json()

    def runs(self, task_id: str) -> list[Run]:
        """The task's runs: ``.state``, ``.reason_created``, ``.reason_resolved``,
        ``.taken_until``, ``.artifacts`` (name → Artifact), ..."""
        return list(self.state.get(task_id).runs)

    def artifact_blob(self, task_id: str, run_id: int, name: str) -> Blob:
        """The stored bytes of an s3 or object artifact (links followed): ``.data`` (bytes, None
        if never uploaded), ``.content_type``, ``.content_encoding``. Raises KeyError."""
        run = self.state.get_run(task_id, run_id)[1]
        art = run.artifacts[name]
        while art.storage_type == "link":
            art = run.artifacts[art.details["artifact"]]
        if art.storage_type == "s3":
            return self.objects.blobs[art.details["blobId"]]
        if art.storage_type == "object":
            return self.objects.objects[art.details["name"]].blob
        raise KeyError(f"artifact {name} is a {art.storage_type} artifact: it has no bytes")

    def calls_to(self, api_name: str) -> list[Call]:
        """The logged calls whose apiName (or ``service.apiName``) is ``api_name``."""
        return [c for c in self.calls if api_name in (c.api_name, f"{c.service}.{c.api_name}")]

    def add_purge_request(self, worker_pool_id: str, cache_name: str, before: float | None = None) -> None:
        """Ask workers of ``worker_pool_id`` to purge ``cache_name`` (caches older than ``before``)."""
        self.purge_cache.add(worker_pool_id, cache_name, before)

    def check_response_schema(self, service: str, name: str, body: Any) -> None:
        """Validate ``body`` against an upstream schema (no-op when schemas are off).

        Raises: SchemaMismatch."""
        if self.schemas is not None:
            self.schemas.validate(service, name, body)


__all__ = ["QueueEmulator", "SchemaMismatch", "DEFAULT_TASK_QUEUE_ID"]
