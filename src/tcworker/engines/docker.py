"""The docker engine: a docker-worker task's command runs in a container (``docker`` SDK).

Per run (``../shared/reference/peer-workers.md`` sections 5 and 1.10):

- the image comes from :class:`ContainerOptions` (built by :mod:`tcworker.plugins.docker_image`):
  a name, used as is when the daemon has it, else pulled; or a local tarball, ``docker load``-ed;
  an image that cannot be had is a start error (→ ``failed``), as in docker-worker;
- one container per run, named ``tcw-<taskId>-<runId>-<random>``, labelled ``tcworker=1``,
  ``tcworker.owner=<this worker>`` and ``tcworker.tasks-dir=<its tasksDir>``, on the run's own
  bridge network ``tcw-net-<taskId[:12]>-<runId>-<random>`` (same labels; its gateway serves the
  taskcluster proxy: :meth:`DockerSandbox.proxy_endpoint`, and the container then resolves
  ``taskcluster`` to it); the command is the payload's argv (empty: the image's default), the
  env a list of ``NAME=value`` strings (never a shell or an env file); no TTY, so output bytes
  arrive exactly as written (stdout and stderr: each keeps its order, their interleaving is not
  guaranteed), log driver ``none`` (the output is not stored twice);
- output goes from the attach stream through a pipe into the task log
  (:func:`~tcworker.engines.docker_io.pump_output` + :class:`~tcworker.engines.pipecopy.PipeCopier`);
- abort and ``maxRunTime``: SIGTERM to the container, ``kill_grace_period_s``, SIGKILL (the
  kernel then kills every process of the container's PID namespace);
- a container that cannot start is a start error carrying the daemon's message, never an exit
  code; artifacts are copied out of the stopped container (``get_archive``) into the task
  directory, which mirrors the container's ``/``: :meth:`DockerSandbox.artifact_root`;
- :meth:`DockerSandbox.dispose` removes the container with its anonymous volumes, then the
  network, on every path (completed, failed, maxRunTime, cancel, worker shutdown); ``boot``
  removes containers, networks and volumes this worker (same ``tasksDir``) left behind.

Not here: scopes, caches, image sources (:mod:`tcworker.plugins.docker_image`), the env (the task
runner), blocking helpers (:mod:`.docker_io`, :mod:`.docker_images`), the network (:mod:`.docker_network`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine, ExitResult, Sandbox, SandboxSpec
from tcworker.engines.docker_io import (
    copy_out, daemon_errors, explain, in_thread, kill, log_late_failure, pump_output, remove_container, sweep,
)
from tcworker.engines.pipecopy import widen_pipe
from tcworker.engines.docker_network import RunNetwork
from tcworker.engines.docker_options import (  # noqa: F401  (re-exported)
    LABEL, OWNER_LABEL, TASK_LABEL, TASKS_DIR_LABEL, ContainerOptions, owner_label,
)
from tcworker.engines.outcome import CommandOutcome, exit_block
from tcworker.engines.pipecopy import PipeCopier
from tcworker.errors import ConfigError, MalformedPayload, TaskFailed
from tcworker.fsutil import remove_tree
from tcworker.logs import TaskLog

logger = logging.getLogger(__name__)

TASK_DIR_PREFIX = "tcw-dtask-"
#: Seconds allowed for ordinary daemon calls (create, start, kill, remove, inspect).
CLIENT_TIMEOUT_S = 120


class DockerEngine(Engine):
    """Runs each task in a container of the local Docker daemon.

    Args:
        config: uses ``tasks_dir``, ``kill_grace_period_s``, ``output_drain_s``, ``engines``.
        default_image: image for specs without :class:`ContainerOptions` (tests, benchmarks).
        required: a daemon must answer at boot (``ConfigError`` otherwise). Default: when the
            config lists ``engines`` explicitly. When not required and no daemon answers, the
            engine stays out of service: docker payloads resolve ``malformed-payload`` saying so.
    """

    name = "docker"

    def __init__(self, config: WorkerConfig, *, default_image: str = "", required: bool | None = None,
                 sweep: bool = True) -> None:
        self.config = config
        self.sweep = sweep  # False under tcworker exec: a worker may own the leftovers
        self.tasks_dir = Path(config.tasks_dir).absolute()
        self.default_image = default_image
        self.required = "engines" in config.model_fields_set if required is None else required
        self.owner = owner_label(config)
        self.client: Any = None
        self.unavailable: str | None = None
        self._booted = False

    async def boot(self) -> None:
        """Connect to the daemon (``DOCKER_HOST`` or the default socket) and sweep leftovers.

        Runs once. Raises:
            ConfigError: no daemon answers and the engine is required; ``tasksDir`` not creatable.
        """
        if self._booted:
            return
        self._booted = True
        try:
            self.tasks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"tasksDir {self.tasks_dir}: {err.strerror}") from None
        try:
            self.client = await asyncio.to_thread(_connect)
        except Exception as err:  # the SDK raises DockerException, requests errors, OSError
            self.unavailable = f"no Docker daemon answers ({err})"
            if self.required:
                raise ConfigError(f"docker engine: {self.unavailable}; start dockerd or remove "
                                  "'docker' from the engines config key") from None
            logger.warning("docker engine: %s; docker-worker payloads will be refused", self.unavailable)
            return
        if not self.sweep:
            return
        removed = await asyncio.to_thread(sweep, self.client, {LABEL: "1", OWNER_LABEL: self.owner})
        if removed:
            logger.info("docker engine: removed leftovers %s", ", ".join(removed))
        for leftover in sorted(self.tasks_dir.glob(TASK_DIR_PREFIX + "*")):
            await asyncio.to_thread(remove_tree, leftover)

    async def create_sandbox(self, task_id: str, run_id: int, log: TaskLog) -> DockerSandbox:
        """A task directory and a container-to-be for one run (boots the engine if needed).

        Raises:
            MalformedPayload: no daemon answered at boot (and the engine was not required).
        """
        await self.boot()
        if self.client is None:
            raise MalformedPayload(f"payload.image: the docker engine is not available on this worker: "
                                   f"{self.unavailable}")
        safe_id = re.sub(r"[^A-Za-z0-9_-]", "_", task_id)[:22]
        task_dir = Path(tempfile.mkdtemp(prefix=f"{TASK_DIR_PREFIX}{safe_id}-{run_id}-", dir=self.tasks_dir))
        unique = task_dir.name.rsplit("-", 1)[1]
        labels = {LABEL: "1", OWNER_LABEL: self.owner, TASK_LABEL: f"{task_id}/{run_id}",
                  TASKS_DIR_LABEL: str(self.tasks_dir)}
        return DockerSandbox(self, task_dir, log, f"tcw-{safe_id}-{run_id}-{unique}", labels,
                             network_name=f"tcw-net-{safe_id[:12]}-{run_id}-{unique}")


def _connect() -> Any:
    import docker

    client = docker.from_env(timeout=CLIENT_TIMEOUT_S)
    client.ping()
    return client


class DockerSandbox(Sandbox):
    """One run of the docker engine. Built by :meth:`DockerEngine.create_sandbox`.

    Attributes:
        task_dir: host folder mirroring the container's ``/`` for artifacts (:meth:`artifact_root`).
        cache_dir: host folder (``<task_dir>-caches``, created by whoever uses it) where plugins
            put directories to bind-mount (caches); removed by :meth:`dispose`.
        container_name, network_name: the names of the run's container and network.
    """

    def __init__(self, engine: DockerEngine, task_dir: Path, log: TaskLog, name: str, labels: dict[str, str],
                 *, network_name: str) -> None:
        self.task_dir = task_dir
        self.log = log
        self.container_name = name
        self.network_name = network_name
        self.cache_dir = task_dir.with_name(task_dir.name + "-caches")
        self._engine = engine
        self._client = engine.client
        self._labels = labels
        self._grace_s = engine.config.kill_grace_period_s
        self._drain_s = engine.config.output_drain_s
        self._container: Any = None
        self._artifact_paths: tuple[str, ...] | None = None
        self._copied = False
        self._abort_reason: str | None = None
        self._abort_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._ran = False
        self._disposed = False
        self._network = RunNetwork(engine.client, network_name, labels)
        self._proxy_gateway: str | None = None

    # ------------------------------------------------------------------ interface
    async def run(self, spec: SandboxSpec) -> ExitResult:
        if self._ran or self._disposed:
            raise RuntimeError("DockerSandbox.run() may be called once, before dispose()")
        self._ran = True
        started = time.monotonic()
        deadline = started + spec.max_run_time_s if spec.max_run_time_s else None
        self._stopped.clear()
        try:
            outcome = await self._run(spec, deadline)
        finally:
            self._stopped.set()
        return outcome.result(aborted=self._abort_reason is not None, duration_s=time.monotonic() - started)

    async def abort(self, reason: str) -> None:
        if self._abort_reason is None:
            self._abort_reason = reason
            self._abort_requested.set()
        await self._stopped.wait()

    async def artifact_root(self) -> Path:
        """The task directory, holding the artifact paths copied out of the stopped container at
        the same places (``/out/a.txt`` → ``<task_dir>/out/a.txt``); copied on the first call."""
        if not self._copied and self._container is not None:
            self._copied = True
            for path in self._artifact_paths if self._artifact_paths is not None else ("/",):
                await self._copy_out(path)
        return self.task_dir

    async def proxy_endpoint(self) -> tuple[str, str]:
        """Where the taskcluster proxy of this run listens: the run network's gateway.

        Creates the network when needed; the container will resolve ``taskcluster`` to the
        gateway. Call before :meth:`run`.

        Returns:
            ``(gateway IP to bind on the host, subnet CIDR the container connects from)``.

        Raises:
            TaskFailed: the daemon could not create the network (its message).
        """
        try:
            gateway, subnet = await self._network.ensure()
        except (*daemon_errors(), RuntimeError) as err:
            raise TaskFailed(f"cannot create the task's network {self.network_name}: {explain(err)}") from None
        self._proxy_gateway = gateway
        return gateway, subnet

    async def dispose(self, keep: bool = False) -> None:
        if self._disposed:
            return
        self._disposed = True
        self._abort_reason = self._abort_reason or "sandbox disposed"
        self._abort_requested.set()
        await self._stopped.wait()
        if keep:
            await self.artifact_root()
        if self._container is not None:
            await asyncio.to_thread(remove_container, self._container)
        await self._network.remove()
        await asyncio.to_thread(remove_tree, self.cache_dir)
        if not keep:
            await asyncio.to_thread(remove_tree, self.task_dir)

    # ------------------------------------------------------------------ the run
    async def _run(self, spec: SandboxSpec, deadline: float | None) -> CommandOutcome:
        options = spec.engine_options or ContainerOptions(image=self._engine.default_image)
        if not isinstance(options, ContainerOptions):
            raise TypeError(f"docker engine: engine_options must be ContainerOptions, got {type(options).__name__}")
        self._artifact_paths = options.artifact_paths
        if len(spec.commands) != 1:
            return self._start_failed(0, "the docker engine runs exactly one command per task")
        argv = spec.commands[0]
        if self._abort_reason is not None:
            self.log.warn(f"Not running command 0: aborted ({self._abort_reason})")
            return CommandOutcome(index=0, aborted=True)
        self._network.start()
        image = await self._image(options)
        if isinstance(image, CommandOutcome):
            return image
        shown = shlex.join(argv) if argv else "(the image's default command)"
        self.log.info(f"Executing command 0: {shown}")
        started = time.monotonic()
        try:
            await self._network.ensure()
            self._container = await asyncio.to_thread(self._create, image, argv, spec, options)
        except (*daemon_errors(), RuntimeError) as err:
            return self._start_failed(0, explain(err), started)
        return await self._attach_and_wait(started, deadline)

    async def _image(self, options: ContainerOptions) -> str | CommandOutcome:
        """The image reference to run, or the start-error outcome; an abort stops waiting."""
        from tcworker.engines.docker_images import ImageError, ensure_named, load_tarball

        if options.image_tarball is not None:
            self.log.info(f"Loading image from {options.image_tarball.name}")
            job = in_thread(load_tarball, self._client, options.image_tarball)
        elif options.image:
            job = in_thread(ensure_named, self._client, options.image)
        else:
            return self._start_failed(0, "no image given")
        aborted = asyncio.ensure_future(self._abort_requested.wait())
        try:
            await asyncio.wait({job, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if not job.done():
            job.add_done_callback(log_late_failure)
            self.log.warn(f"Not running command 0: aborted while getting the image ({self._abort_reason})")
            return CommandOutcome(index=0, aborted=True)
        try:
            return job.result()
        except ImageError as err:
            return self._start_failed(0, str(err))

    def _create(self, image: str, argv: tuple[str, ...], spec: SandboxSpec, options: ContainerOptions) -> Any:
        from docker.types import LogConfig

        return self._client.containers.create(
            image,
            command=list(argv) or None,
            name=self.container_name,
            environment=[f"{name}={value}" for name, value in spec.env.items()],
            labels={**options.labels, **self._labels},
            log_config=LogConfig(type="none"),
            tty=False,
            stdin_open=False,
            privileged=options.privileged,
            devices=[f"{dev}:{dev}:rwm" for dev in options.devices] or None,
            cap_add=list(options.cap_add) or None,
            volumes={volume: {"bind": path, "mode": "rw"} for volume, path in options.volumes} or None,
            network=self.network_name,
            extra_hosts={"localhost.localdomain": "127.0.0.1",
                         **({"taskcluster": self._proxy_gateway} if self._proxy_gateway else {})},
        )

    async def _attach_and_wait(self, started: float, deadline: float | None) -> CommandOutcome:
        container = self._container
        stream = await asyncio.to_thread(
            self._client.api.attach, container.id, stdout=True, stderr=True, stream=True, logs=False
        )
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        widen_pipe(write_fd)
        copier = PipeCopier(read_fd, self.log)
        pump = in_thread(pump_output, stream, write_fd, name="tcw-docker-output")
        waiter: asyncio.Future | None = None
        try:
            try:
                await asyncio.to_thread(container.start)
            except daemon_errors() as err:
                stream.close()
                return self._start_failed(0, explain(err), started)
            waiter = in_thread(container.wait, name="tcw-docker-wait")
            ended_by = await self._wait(waiter, deadline)
            if ended_by != "exit":
                await self._stop(waiter, ended_by)
            status = await waiter
            if not await copier.wait_eof(self._drain_s + 1.0):
                self.log.warn("container output still open after it stopped; closing it")
                stream.close()
        except BaseException:
            await asyncio.shield(self._kill_now(waiter))
            stream.close()
            raise
        finally:
            await asyncio.shield(asyncio.wait({pump}, timeout=5.0))
            copier.close()
        outcome = _outcome(status, ended_by, time.monotonic() - started)
        self.log.info(exit_block(outcome))
        if copier.error is not None:
            raise copier.error
        return outcome

    async def _wait(self, waiter: asyncio.Future, deadline: float | None) -> str:
        """Until the container exits, an abort, or the deadline: ``"exit"|"abort"|"timeout"``."""
        aborted = asyncio.ensure_future(self._abort_requested.wait())
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            await asyncio.wait({waiter, aborted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        if waiter.done():
            return "exit"
        return "abort" if aborted.done() and self._abort_reason is not None else "timeout"

    async def _stop(self, waiter: asyncio.Future, ended_by: str) -> None:
        """SIGTERM, ``kill_grace_period_s``, then SIGKILL; returns once the container stopped."""
        why = "max run time exceeded" if ended_by == "timeout" else self._abort_reason
        self.log.warn(f"Aborting command: {why}; SIGTERM to the container, SIGKILL after {self._grace_s:g}s")
        await asyncio.to_thread(kill, self._container, "SIGTERM")
        done, _ = await asyncio.wait({waiter}, timeout=self._grace_s)
        if not done:
            self.log.warn(f"container still running after {self._grace_s:g}s: SIGKILL")
            await asyncio.to_thread(kill, self._container, "SIGKILL")
            await asyncio.wait({waiter})

    async def _kill_now(self, waiter: asyncio.Future | None) -> None:
        """SIGKILL the container and wait for it (cancellation path)."""
        await asyncio.to_thread(kill, self._container, "SIGKILL")
        if waiter is not None:
            await asyncio.wait({waiter}, timeout=CLIENT_TIMEOUT_S)

    async def _copy_out(self, path: str) -> None:
        try:
            found = await asyncio.to_thread(copy_out, self._container, path, self.task_dir, self.log.warn)
        except daemon_errors() as err:
            self.log.warn(f"cannot copy {path} out of the container: {explain(err)}")
        except OSError as err:
            self.log.warn(f"cannot copy {path} out of the container: {err}")
        else:
            if not found:
                logger.debug("artifact path %s not in container %s", path, self.container_name)

    def _start_failed(self, index: int, message: str, started: float | None = None) -> CommandOutcome:
        self.log.error(f"Could not start command {index}: {message}")
        duration = 0.0 if started is None else time.monotonic() - started
        outcome = CommandOutcome(index=index, start_error=message, duration_s=duration)
        self.log.info(exit_block(outcome))
        return outcome


def _outcome(status: dict, ended_by: str, duration_s: float) -> CommandOutcome:
    """From ``container.wait()``'s answer: an exit status >= 128 after our kill is that signal."""
    code = int(status.get("StatusCode", -1))
    if ended_by != "exit" and code > 128:
        code = -(code - 128)
    return CommandOutcome.from_process(0, code, ended_by, duration_s, None)
