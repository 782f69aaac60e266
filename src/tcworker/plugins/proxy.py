"""The taskcluster-proxy feature (``features.taskclusterProxy``, both payload kinds):
:class:`ProxyPlugin` and :class:`ProxyRun` (one :class:`~tcworker.proxy.TaskclusterProxy` per run).

Per run (``../shared/reference/peer-workers.md`` sections 1.7 and 3.13):

- ``prepare``: pick the credentials. ``tcworker run``: the run's task credentials
  (``TaskRun.queue``, a :class:`~tcworker.queue.client.RunQueue`), replaced after every reclaim
  through ``RunQueue.on_credentials``. ``tcworker exec``: the config's ``rootURL``, ``clientId``
  and ``accessToken`` (no claim, so no task credentials); without them the task resolves
  ``malformed-payload`` saying so. Calls are restricted to ``task.scopes`` plus
  ``queue:create-artifact:<taskId>/<runId>`` either way.
- ``build_sandbox``: start the proxy and set ``TASKCLUSTER_PROXY_URL`` (overrides the payload).
  Native: on 127.0.0.1, a free port, a per-run secret as URL path prefix, and, when the sandbox
  runs the task as its own OS user (``sandbox.owner``, ``(uid, gid)``), a check that connecting sockets
  belong to that user. Docker: the sandbox must offer ``proxy_endpoint()`` →
  ``(host IP to bind, allowed network CIDR)`` (the gateway of its per-task network); the proxy
  binds port 80 there without a secret and the task uses ``http://taskcluster``; an engine
  without it refuses the feature as ``malformed-payload``.
- ``stopped`` and ``dispose``: stop the proxy (the next run never sees these credentials).

What does not live here: the HTTP server and request signing (:mod:`tcworker.proxy`).
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from tcworker.errors import MalformedPayload
from tcworker.plugins.base import Plugin, TaskPlugin

if TYPE_CHECKING:
    from tcworker.engines.base import ExitResult
    from tcworker.proxy import TaskclusterProxy
    from tcworker.taskrun import SandboxBuilder, TaskRun

log = logging.getLogger(__name__)

ENV_NAME = "TASKCLUSTER_PROXY_URL"
DOCKER_URL = "http://taskcluster"


def authorized_scopes(task: dict, task_id: str, run_id: int) -> list[str]:
    """``task.scopes`` plus ``queue:create-artifact:<taskId>/<runId>``, as generic-worker gives
    its proxy."""
    scopes = [s for s in task.get("scopes") or [] if isinstance(s, str)]
    return [*scopes, f"queue:create-artifact:{task_id}/{run_id}"]


class ProxyPlugin(Plugin):
    """Provides ``taskclusterProxy``; listed when ``enableTaskclusterProxy`` is on."""

    name = "taskclusterProxy"
    provides = frozenset({"taskclusterProxy"})

    def new_run(self, run: "TaskRun") -> TaskPlugin | None:
        if run.parsed is None or not run.parsed.features.taskcluster_proxy:
            return None
        return ProxyRun(run)


class ProxyRun(TaskPlugin):
    """The proxy of one run."""

    def __init__(self, run: "TaskRun") -> None:
        super().__init__(run)
        self.proxy: TaskclusterProxy | None = None
        self._credentials: dict[str, str] = {}

    async def prepare(self) -> None:
        run, config = self.run, self.run.config
        if getattr(run.parsed.payload, "taskcluster_proxy_interface", "localhost") != "localhost":
            raise MalformedPayload("payload.taskclusterProxyInterface: only 'localhost' is supported "
                                   "by this worker")
        run_queue = getattr(run, "queue", None)
        if run_queue is not None:
            self._credentials = run_queue.credentials
            run_queue.on_credentials(self._new_credentials)
        elif config.root_url and config.client_id and config.access_token:
            self._credentials = config.credentials
        else:
            raise MalformedPayload(
                "payload.features.taskclusterProxy: without a claim (tcworker exec) the proxy needs "
                "rootURL, clientId and accessToken in the worker config (--config)")
        if not config.root_url:
            raise MalformedPayload("payload.features.taskclusterProxy: the worker config has no rootURL")

    async def build_sandbox(self, builder: "SandboxBuilder") -> None:
        from tcworker.proxy import TaskclusterProxy

        run = self.run
        scopes = authorized_scopes(dict(run.task), run.task_id, run.run_id)
        common = dict(root_url=run.config.root_url, credentials=self._credentials, authorized_scopes=scopes)
        if run.parsed.engine == "docker":
            endpoint = getattr(run.sandbox, "proxy_endpoint", None)
            if endpoint is None:
                raise MalformedPayload("payload.features.taskclusterProxy: not supported with the "
                                       "docker engine of this worker yet")
            host, network = await endpoint()
            proxy = TaskclusterProxy(**common, secret=None, host=host, port=80, allowed_network=network)
            url = DOCKER_URL
        else:
            owner = getattr(run.sandbox, "owner", None)  # (uid, gid) in the multiuser engine
            proxy = TaskclusterProxy(**common, secret=secrets.token_urlsafe(24),
                                     allowed_uid=owner[0] if owner else None)
        await proxy.start()
        self.proxy = proxy
        builder.env[ENV_NAME] = url if run.parsed.engine == "docker" else proxy.url
        run.log.info(f"Taskcluster proxy on {proxy.host}:{proxy.port}, calls restricted to "
                     f"{len(scopes)} scope(s)")

    async def stopped(self, result: "ExitResult") -> None:
        await self._stop()

    async def dispose(self) -> None:
        await self._stop()

    async def _stop(self) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            await proxy.stop()
            log.debug("run %s/%s: proxy stopped after %d request(s)", self.run.task_id,
                      self.run.run_id, proxy.requests)

    def _new_credentials(self, credentials: dict[str, str]) -> None:
        self._credentials = dict(credentials)
        if self.proxy is not None:
            self.proxy.set_credentials(credentials)
