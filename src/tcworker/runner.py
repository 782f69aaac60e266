"""worker-runner's protocol: ``tcworker run --config FILE --with-worker-runner``.

Lives here (``../shared/reference/peer-workers.md`` section 4):

- framing: :func:`encode` / :func:`parse_line` (``~{json}`` lines; other lines are not messages);
- :class:`Protocol`: one session over two file descriptors: stdin read asynchronously, writes
  serialized by a lock (log records may come from threads); ``welcome`` answered with ``hello``
  and the intersection of the capabilities;
- :class:`ProtocolLogHandler`: the worker's logging as ``log`` messages when the runner is capable,
  else on stderr; a record of an internal error (level ERROR with a traceback) also becomes an
  ``error-report``;
- :class:`RunnerBridge`: runner messages → :class:`~tcworker.worker.Worker` actions
  (``graceful-termination``, ``new-credentials``), and ``shutdown`` when the worker wants its host
  gone;
- :func:`run_with_worker_runner`: the whole session. While the protocol is on, nothing else may
  reach the runner's pipe: :func:`take_over_stdio` moves the pipes to private descriptors, points
  fd 1 at stderr (stray prints, children) and fd 0 at ``/dev/null`` (no child reads protocol
  input).

What does not live here: the worker's life cycle (:mod:`tcworker.worker`), the config keys
(:mod:`tcworker.config`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tcworker.config import WorkerConfig, load_config
from tcworker.errors import ConfigError
from tcworker.logsetup import JsonFormatter, setup_logging
from tcworker.worker import ExitCode, Worker

log = logging.getLogger("tcworker.runner")

CAPABILITIES = ("error-report", "graceful-termination", "log", "new-credentials", "shutdown")
HANDSHAKE_WAIT_S = 10.0       # worker-runner sends welcome right after starting us
MAX_LINE_BYTES = 1024 * 1024
MAX_ERROR_REPORTS = 20        # reportWorkerError is public and per pool: do not flood it

Message = dict
Handler = Callable[[Message], None]


# ------------------------------------------------------------------ framing (pure)
def encode(message: Message) -> bytes:
    """``{"type": ..., ...}`` → ``b'~{...}\\n'`` (one line, compact JSON)."""
    return b"~" + json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def parse_line(line: str | bytes) -> Message | None:
    """One input line → the message dict, or None when the line is not a message.

    A message is ``~`` + a JSON object with a string ``type``, after trimming whitespace.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.strip()
    if not (text.startswith("~{") and text.endswith("}")):
        return None
    try:
        message = json.loads(text[1:])
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return None
    return message


# ------------------------------------------------------------------ stdio
@dataclass(frozen=True)
class StdioFds:
    """The private descriptors of the protocol: ``read_fd`` (was stdin), ``write_fd`` (was stdout)."""

    read_fd: int
    write_fd: int


def take_over_stdio() -> StdioFds:
    """Move stdin/stdout to private (non-inheritable) descriptors; fd 1 → stderr, fd 0 → /dev/null.

    After this, ``print()``, a stray ``sys.stdout.write`` and any child process write to stderr, and
    no child can read the runner's messages.
    """
    sys.stdout.flush()
    fds = StdioFds(read_fd=os.dup(0), write_fd=os.dup(1))
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return fds


# ------------------------------------------------------------------ the session
class Protocol:
    """One protocol session.

    Args:
        read_fd: descriptor of the runner → worker pipe (read asynchronously once started).
        write_fd: descriptor of the worker → runner pipe (blocking writes, one lock).
        capabilities: what this worker supports (default :data:`CAPABILITIES`).

    Attributes:
        capabilities: the negotiated set (frozenset), or None before ``welcome``.
        secrets: strings never to send (tokens); :meth:`scrub` replaces them with ``***``.
    """

    def __init__(self, read_fd: int, write_fd: int, capabilities: Iterable[str] = CAPABILITIES) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.local_capabilities = tuple(capabilities)
        self.capabilities: frozenset[str] | None = None
        self.secrets: set[str] = set()
        self.broken = False
        self._handlers: dict[str, list[Handler]] = {}
        self._lock = threading.Lock()
        self._handshake = asyncio.Event()
        self._reader_task: asyncio.Task | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._error_reports = 0

    # -- receiving
    def on(self, message_type: str, handler: Handler) -> None:
        """Call ``handler(message)`` for every message of ``message_type`` (in the event loop)."""
        self._handlers.setdefault(message_type, []).append(handler)

    async def start(self) -> None:
        """Start reading the runner's messages in the background."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE_BYTES, loop=loop)
        try:
            self._transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(self.read_fd, "rb", 0))
        except (ValueError, OSError) as err:  # a regular file or a closed descriptor
            log.warning("cannot read worker-runner messages from stdin (%s): protocol input off", err)
            return
        self._reader_task = asyncio.create_task(self._read(reader), name="worker-runner-reader")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line over MAX_LINE_BYTES: not a message we know
                log.warning("ignoring an over-long line from worker-runner")
                continue
            if not line:
                log.info("worker-runner closed our stdin: no more messages")
                return
            message = parse_line(line)
            if message is not None:
                self.dispatch(message)

    def dispatch(self, message: Message) -> None:
        """Handle one message: ``welcome`` here, the others through the registered handlers."""
        kind = message["type"]
        if kind == "welcome":
            self._welcome(message)
            return
        needed = kind if kind in self.local_capabilities else None
        if needed is not None and not self.capable(needed):
            log.warning("ignoring %s from worker-runner: capability not negotiated", kind)
            return
        handlers = self._handlers.get(kind)
        if not handlers:
            log.debug("ignoring worker-runner message %r", kind)
            return
        for handler in handlers:
            try:
                handler(message)
            except Exception:  # a handler's bug must not stop the protocol; it is reported
                log.exception("handling worker-runner message %r failed", kind)

    def _welcome(self, message: Message) -> None:
        offered = message.get("capabilities")
        offered = {c for c in offered if isinstance(c, str)} if isinstance(offered, list) else set()
        agreed = [c for c in self.local_capabilities if c in offered]
        self.capabilities = frozenset(agreed)
        self.send({"type": "hello", "capabilities": agreed})
        self._handshake.set()
        log.info("worker-runner protocol: capabilities %s", ", ".join(agreed) or "(none)")

    async def wait_handshake(self, timeout_s: float) -> bool:
        """Wait for ``welcome`` (answered at once); False after ``timeout_s`` seconds."""
        try:
            await asyncio.wait_for(self._handshake.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def capable(self, capability: str) -> bool:
        """True when both sides agreed on ``capability`` (False before the handshake)."""
        return self.capabilities is not None and capability in self.capabilities

    # -- sending
    def send(self, message: Message) -> bool:
        """Write one message (any thread); False when the pipe is gone (then nothing is sent again)."""
        data = encode(message)
        with self._lock:
            if self.broken:
                return False
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.write_fd, view):]
            except OSError as err:
                self.broken = True
                sys.stderr.write(f"tcworker: worker-runner pipe closed ({err}); protocol output off\n")
                return False
        return True

    def scrub(self, text: str) -> str:
        """``text`` with every known secret replaced by ``***``."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def report_error(self, title: str, description: str, *, kind: str = "worker-error",
                     extra: dict | None = None) -> bool:
        """Send an ``error-report`` (public: scrubbed of secrets); False when not capable or over
        :data:`MAX_ERROR_REPORTS`."""
        if not self.capable("error-report") or self._error_reports >= MAX_ERROR_REPORTS:
            return False
        self._error_reports += 1
        extra = {k: self.scrub(str(v)) for k, v in (extra or {}).items()}
        return self.send({"type": "error-report", "kind": kind, "title": self.scrub(title),
                          "description": self.scrub(description), "extra": extra})

    async def close(self) -> None:
        """Stop reading (writes stay possible: they are synchronous)."""
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()


class ProtocolLogHandler(logging.Handler):
    """The worker's log records as ``log`` messages (``body.textPayload`` is the text), or on
    stderr while the runner is not capable of ``log``. Internal errors (ERROR with a traceback)
    also become an ``error-report``.

    Args:
        protocol: the session.
        fallback: the handler used when ``log`` is not negotiated (stderr, as :func:`setup_logging`).
    """

    def __init__(self, protocol: Protocol, fallback: logging.Handler) -> None:
        super().__init__()
        self.protocol = protocol
        self.fallback = fallback
        self.body_formatter = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        protocol = self.protocol
        if record.levelno >= logging.ERROR and record.exc_info and record.name != log.name:
            self._report(record)
        if not protocol.capable("log") or protocol.broken:
            self.fallback.handle(record)
            return
        try:
            body = json.loads(self.body_formatter.format(record))
            text = body.pop("message")
            if "exception" in body:
                text = f"{text}\n{body.pop('exception')}"
            body["textPayload"] = protocol.scrub(text)
            protocol.send({"type": "log", "body": body})
        except Exception:  # logging must never raise into the caller
            self.handleError(record)

    def _report(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        detail = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        self.protocol.report_error("tcworker internal error", f"{record.getMessage()}\n{detail}".strip(),
                                   extra={"logger": record.name})


def install_log_handler(protocol: Protocol, config: WorkerConfig) -> None:
    """Route the root logger through :class:`ProtocolLogHandler` (stderr as the fallback)."""
    setup_logging(config)
    root = logging.getLogger()
    fallback = root.handlers[0]
    root.handlers[:] = [ProtocolLogHandler(protocol, fallback)]


# ------------------------------------------------------------------ runner → worker
class RunnerBridge:
    """Turns runner messages into worker actions.

    Args:
        protocol: the session (handlers are registered on it).
        worker: the :class:`~tcworker.worker.Worker` being run.
    """

    def __init__(self, protocol: Protocol, worker: Worker) -> None:
        self.protocol = protocol
        self.worker = worker
        protocol.on("graceful-termination", self.graceful_termination)
        protocol.on("new-credentials", self.new_credentials)

    def graceful_termination(self, message: Message) -> None:
        """``finish-tasks: true``: stop claiming, let running tasks finish, exit 72.
        ``false``: stop claiming, abort running tasks as ``exception/worker-shutdown``, exit 72."""
        finish = message.get("finish-tasks") is True
        why = f"worker-runner graceful-termination (finish-tasks {str(finish).lower()})"
        if finish:
            self.worker.finish_tasks = True
            self.worker.request_stop(why, ExitCode.WORKER_SHUTDOWN)
            return
        self.worker.finish_tasks = False
        self.worker.request_stop(why, ExitCode.WORKER_SHUTDOWN)
        self.worker.request_stop(why, ExitCode.WORKER_SHUTDOWN)  # the second call aborts now

    def new_credentials(self, message: Message) -> None:
        """Use the new worker credentials for claimWork and every later worker call; running
        tasks keep their own task credentials."""
        client_id, token = message.get("client-id"), message.get("access-token")
        if not isinstance(client_id, str) or not isinstance(token, str) or not client_id or not token:
            log.warning("ignoring new-credentials without client-id and access-token")
            return
        creds = {"clientId": client_id, "accessToken": token}
        certificate = message.get("certificate")
        if isinstance(certificate, str) and certificate:
            creds["certificate"] = certificate
        self.protocol.secrets.update(v for k, v in creds.items() if k != "clientId")
        # the config is what a queue built later reads; the live queue is switched now
        self.worker.config = self.worker.config.model_copy(update={
            "client_id": client_id, "access_token": token, "certificate": creds.get("certificate", "")})
        if self.worker.queue is not None:
            self.worker.queue.set_credentials(creds)
        log.info("worker credentials replaced (client %s)", client_id)


def wants_host_gone(config: WorkerConfig, exit_code: int) -> bool:
    """Whether the worker should ask worker-runner for ``shutdown`` on exiting with ``exit_code``.

    Idle timeout with ``shutdownMachineOnIdle``, ``numberOfTasksToRun`` reached, internal error
    with ``shutdownMachineOnInternalError``. Graceful termination came from the runner: no.
    """
    if exit_code == ExitCode.IDLE_TIMEOUT:
        return config.shutdown_machine_on_idle
    if exit_code == ExitCode.TASKS_COMPLETE:
        return bool(config.number_of_tasks_to_run)
    if exit_code == ExitCode.INTERNAL_ERROR:
        return config.shutdown_machine_on_internal_error
    return False


# ------------------------------------------------------------------ entry point
def run_with_worker_runner(config_source: WorkerConfig | str | os.PathLike[str], *,
                           config_path: str | os.PathLike[str] | None = None) -> int:
    """``tcworker run --config F --with-worker-runner``: the whole session → process exit code.

    Args:
        config_source: a loaded config, or the path of the file (loaded after the handshake, so a
            broken file is reported to the runner as an ``error-report``).
        config_path: the file of a loaded ``config_source`` (the worker locks it down in
            multiuser mode).

    Returns:
        0 / 68 / 69 / 71 / 72 as the worker; 64 when the file cannot be loaded, 73 when keys are
        missing.
    """
    if config_path is None and not isinstance(config_source, WorkerConfig):
        config_path = config_source
    fds = take_over_stdio()
    return asyncio.run(_session(config_source, fds, config_path))


async def _session(config_source: WorkerConfig | str | os.PathLike[str], fds: StdioFds,
                   config_path: str | os.PathLike[str] | None) -> int:
    protocol = Protocol(fds.read_fd, fds.write_fd)
    boot_config = config_source if isinstance(config_source, WorkerConfig) else WorkerConfig()
    install_log_handler(protocol, boot_config)
    await protocol.start()
    try:
        if not await protocol.wait_handshake(HANDSHAKE_WAIT_S):
            log.warning("no welcome from worker-runner within %.0fs: going on without capabilities",
                        HANDSHAKE_WAIT_S)
        config = _load(config_source, protocol)
        if isinstance(config, int):
            return config
        install_log_handler(protocol, config)
        return await _work(config, protocol, config_path)
    finally:
        await protocol.close()


def _load(config_source: WorkerConfig | str | os.PathLike[str], protocol: Protocol) -> WorkerConfig | int:
    """The config, or the exit code after reporting why it cannot be used."""
    code = ExitCode.CANNOT_LOAD_CONFIG
    try:
        config = config_source if isinstance(config_source, WorkerConfig) else load_config(config_source)
        pulse_password = urlsplit(config.pulse_url).password if config.pulse_url else None
        protocol.secrets.update(s for s in (config.access_token, config.certificate, pulse_password) if s)
        code = ExitCode.INVALID_CONFIG
        config.require_for_run()
        return config
    except ConfigError as err:
        log.error("%s", err)
        protocol.report_error("tcworker cannot start: bad config", str(err),
                              extra={"exitCode": int(code)})
        return int(code)


async def _work(config: WorkerConfig, protocol: Protocol, config_path: str | os.PathLike[str] | None) -> int:
    worker = Worker(config, config_path=config_path)
    RunnerBridge(protocol, worker)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.request_stop, "SIGTERM", ExitCode.WORKER_SHUTDOWN)
    loop.add_signal_handler(signal.SIGINT, worker.request_stop, "SIGINT", ExitCode.SIGINT)
    try:
        code = int(await worker.run())
    except ConfigError as err:
        log.error("%s", err)
        protocol.report_error("tcworker cannot start: bad config", str(err),
                              extra={"exitCode": int(ExitCode.INVALID_CONFIG)})
        return int(ExitCode.INVALID_CONFIG)
    except Exception as err:  # a bug that escaped the worker: report it, exit 69
        log.critical("worker crashed: %s: %s", type(err).__name__, err, exc_info=True)
        protocol.report_error("tcworker internal error", f"worker crashed: {type(err).__name__}: {err}")
        code = int(ExitCode.INTERNAL_ERROR)
    if wants_host_gone(config, code) and protocol.capable("shutdown"):
        log.info("asking worker-runner to shut this host down (exit code %d)", code)
        protocol.send({"type": "shutdown"})
    return code
