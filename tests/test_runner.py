"""The worker-runner protocol, end to end: this test process plays worker-runner.

Each test writes a worker config as worker-runner does (indented JSON, generic-worker's key
spellings, ``workerTypeMetadata``, ``workerLocation`` as a JSON string, ``instanceID``), starts
``tcworker run --config F --with-worker-runner`` against an in-process queue emulator, does the
handshake, sends messages and checks the worker's replies and behaviour. Every byte on the
worker's stdout must be a protocol line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from tcworker.config import load_config
from tcworker.runner import CAPABILITIES, Protocol, ProtocolLogHandler, encode, parse_line
from tcworker.testing.queue import QueueEmulator

POOL = "proj-test/python-worker"
GROUP, WORKER_ID = "runner-group", "runner-worker"
WAIT_S = 60.0  # generous: two cores shared with other engineers' tests


# ------------------------------------------------------------------ framing (pure)
@pytest.mark.parametrize("line, expected", [
    ('~{"type":"welcome","capabilities":["log"]}\n', {"type": "welcome", "capabilities": ["log"]}),
    ('  ~{"type":"shutdown"}  ', {"type": "shutdown"}),
    ("plain log text", None),
    ("~{not json}", None),
    ('~{"capabilities":[]}', None),         # no type
    ('~["type"]', None),
])
def test_parse_line(line, expected):
    assert parse_line(line) == expected


def test_encode_is_one_line():
    assert encode({"type": "log", "body": {"textPayload": "a\nb"}}) == b'~{"type":"log","body":{"textPayload":"a\\nb"}}\n'


# ------------------------------------------------------------------ Protocol, in process
def _read_messages(fd: int) -> list[dict]:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return [parse_line(line) for line in data.splitlines()]


def test_protocol_answers_welcome_with_the_intersection_and_ignores_unnegotiated_messages():
    read_end, write_end = os.pipe()
    protocol = Protocol(-1, write_end)
    seen = []
    protocol.on("new-credentials", seen.append)
    protocol.dispatch({"type": "new-credentials", "client-id": "x", "access-token": "y"})
    assert not protocol.capable("log") and seen == []     # before the handshake
    protocol.dispatch({"type": "welcome", "capabilities": ["log", "new-credentials", "future-thing"]})
    protocol.dispatch({"type": "new-credentials", "client-id": "x", "access-token": "y"})
    protocol.dispatch({"type": "graceful-termination", "finish-tasks": True})  # not negotiated
    assert _read_messages(read_end) == [{"type": "hello", "capabilities": ["log", "new-credentials"]}]
    assert [m["client-id"] for m in seen] == ["x"]
    os.close(read_end), os.close(write_end)


def test_log_handler_sends_logs_and_reports_internal_errors_without_secrets():
    read_end, write_end = os.pipe()
    protocol = Protocol(-1, write_end)
    protocol.secrets.add("tok-SECRET")
    protocol.dispatch({"type": "welcome", "capabilities": list(CAPABILITIES)})
    handler = ProtocolLogHandler(protocol, logging.StreamHandler(sys.stderr))
    logger = logging.getLogger("tcworker.test-runner")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("plain line with tok-SECRET")
        try:
            raise RuntimeError("boom tok-SECRET")
        except RuntimeError:
            logger.exception("run T/0 crashed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    hello, info, report, error = _read_messages(read_end)
    assert info["body"]["textPayload"] == "plain line with ***" and info["body"]["level"] == "info"
    assert report["type"] == "error-report" and report["kind"] == "worker-error"
    assert report["description"] == "run T/0 crashed\nRuntimeError: boom ***"
    assert error["type"] == "log" and "Traceback" in error["body"]["textPayload"]
    assert "tok-SECRET" not in json.dumps([info, report, error])
    os.close(read_end), os.close(write_end)


# ------------------------------------------------------------------ the runner's side
class Runner:
    """One ``tcworker run --with-worker-runner`` process and what it said."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.messages: list[dict] = []
        self.stray: list[bytes] = []          # stdout lines that are not protocol messages
        self.stderr: list[str] = []
        self._changed = asyncio.Event()
        self._readers: list[asyncio.Task] = []

    async def start(self, config_path: Path) -> "Runner":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tcworker", "run", "--config", str(config_path), "--with-worker-runner",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=env, limit=4 * 1024 * 1024)
        self._readers = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]
        return self

    async def _read_stdout(self) -> None:
        async for line in self.proc.stdout:
            message = parse_line(line) if line.startswith(b"~{") else None
            if message is None:
                self.stray.append(line)
            else:
                self.messages.append(message)
            self._changed.set()

    async def _read_stderr(self) -> None:
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()

    async def send(self, message: dict | bytes) -> None:
        self.proc.stdin.write(message if isinstance(message, bytes) else encode(message))
        await self.proc.stdin.drain()

    async def until(self, predicate, what: str, timeout_s: float = WAIT_S):
        """``predicate()`` once truthy (woken by every line the worker writes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (value := predicate()):
            if self.proc.returncode is not None and not any(not t.done() for t in self._readers):
                pytest.fail(f"worker exited ({self.proc.returncode}) before {what}:\n{self.text()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(0.5, max(0.01, deadline - loop.time())))
            except TimeoutError:
                if loop.time() >= deadline:
                    pytest.fail(f"timed out waiting for {what}:\n{self.text()}")
        return value

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    def log_lines(self) -> list[str]:
        return [m["body"].get("textPayload", "") for m in self.of_type("log")] + self.stderr

    async def wait_log(self, pattern: str) -> str:
        found = await self.until(lambda: [x for x in self.log_lines() if re.search(pattern, x)], f"log {pattern!r}")
        return found[0]

    async def handshake(self, capabilities=CAPABILITIES) -> dict:
        await self.send(b"some plain text the worker must ignore\n")
        await self.send({"type": "welcome", "capabilities": list(capabilities)})
        hellos = await self.until(lambda: self.of_type("hello"), "hello")
        return hellos[0]

    async def wait(self, timeout_s: float = WAIT_S) -> int:
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            pytest.fail(f"worker did not exit within {timeout_s}s:\n{self.text()}")
        await asyncio.gather(*self._readers)
        return self.proc.returncode

    def text(self) -> str:
        return "\n".join(self.log_lines()[-80:])

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


@pytest_asyncio.fixture
async def emu():
    async with QueueEmulator(long_poll_s=0.5) as emulator:
        yield emulator


@pytest_asyncio.fixture
async def runner():
    started: list[Runner] = []

    async def start(config_path: Path) -> Runner:
        r = await Runner().start(config_path)
        started.append(r)
        return r

    yield start
    for r in started:
        await r.stop()


def runner_config(emu: QueueEmulator, tmp_path: Path, creds: dict | None = None, **keys) -> Path:
    """A config file as worker-runner writes it (generic-worker implementation), mode 0600."""
    creds = creds or emu.worker_credentials(POOL, GROUP, WORKER_ID)
    metadata = {"instance-id": "i-0f00", "instance-type": "static", "region": "local",
                "local-ipv4": "127.0.0.1", "public-ipv4": "127.0.0.1", "providerId": "static"}
    config = {
        # from the pool definition (generic-worker keys, some we do not use)
        "cachesDir": str(tmp_path / "caches"), "downloadsDir": str(tmp_path / "downloads"),
        "tasksDir": str(tmp_path / "tasks"), "livelogExecutable": "/usr/local/bin/livelog",
        "ed25519SigningKeyLocation": str(tmp_path / "ed25519.key"), "sentryProject": "generic-worker",
        "wstAudience": "", "wstServerURL": "", "enableChainOfTrust": False,
        "requiredDiskSpaceMegabytes": 1, "idleTimeoutSecs": 0, "shutdownMachineOnIdle": False,
        # our own keys, CI-sized
        "engines": ["native"], "killGracePeriodSecs": 1, "outputDrainSecs": 0.2,
        "shutdownGracePeriodSecs": 10, "enableLiveLog": False,
        # what worker-runner's generic-worker implementation sets
        "rootURL": emu.root_url, "clientId": creds["clientId"], "accessToken": creds["accessToken"],
        "provisionerId": POOL.split("/")[0], "workerType": POOL.split("/")[1],
        "workerGroup": GROUP, "workerId": WORKER_ID,
        "workerLocation": json.dumps({"cloud": "static", "region": "local"}),
        "publicIP": "127.0.0.1", "privateIP": "127.0.0.1", "instanceType": "static",
        "instanceID": "i-0f00", "region": "local", "availabilityZone": "local-1a",
        "workerTypeMetadata": metadata,
    }
    config.update(keys)
    path = tmp_path / "worker-config.json"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def sh(script: str, max_run_time: int = 120) -> dict:
    return {"command": [["/bin/sh", "-c", script]], "maxRunTime": max_run_time}


async def wait_for_file(path: Path, timeout_s: float = WAIT_S) -> str:
    """The file's text once it exists and is not empty (polled: no event tells us)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not (path.exists() and path.read_text().strip()):
        if loop.time() > deadline:
            pytest.fail(f"{path} never appeared")
        await asyncio.sleep(0.05)
    return path.read_text().strip()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ------------------------------------------------------------------ config
def test_given_a_worker_runner_config_file_then_it_loads_without_edits(tmp_path):
    emu = QueueEmulator()  # not started: only its credentials and root URL shape are used
    config = load_config(runner_config(emu, tmp_path), environ={})
    assert config.instance_id == "i-0f00" and config.public_ip == "127.0.0.1"
    assert json.loads(config.worker_location) == {"cloud": "static", "region": "local"}
    assert config.worker_type_metadata["instance-type"] == "static"
    assert config.worker_pool_id == POOL and (config.worker_group, config.worker_id) == (GROUP, WORKER_ID)
    config.require_for_run()


# ------------------------------------------------------------------ protocol, end to end
async def test_given_number_of_tasks_to_run_then_worker_says_shutdown_and_stdout_has_only_protocol(
        emu, runner, tmp_path):
    task_id = await emu.create_task(payload=sh("echo TASK-STDOUT-MARKER; echo TASK-STDERR-MARKER >&2; "
                                               "python3 -c 'print(\"x\" * 70000)'"))
    r = await runner(runner_config(emu, tmp_path, numberOfTasksToRun=1))
    hello = await r.handshake()
    assert sorted(hello["capabilities"]) == sorted(CAPABILITIES)
    assert await r.wait() == 0
    assert emu.task_state(task_id) == "completed"
    assert r.of_type("shutdown"), r.text()
    assert r.messages[0]["type"] == "hello" and r.messages[-1]["type"] == "shutdown"
    assert r.stray == []                                   # nothing but protocol lines
    logs = [m["body"]["textPayload"] for m in r.of_type("log")]
    assert any("task-resolved" in line for line in logs), logs
    assert not any("MARKER" in m for m in map(json.dumps, r.messages))
    assert not r.of_type("error-report")


async def test_given_no_log_capability_then_logs_go_to_stderr_and_idle_exit_says_shutdown(emu, runner, tmp_path):
    r = await runner(runner_config(emu, tmp_path, idleTimeoutSecs=1, shutdownMachineOnIdle=True))
    hello = await r.handshake(["shutdown", "something-new"])
    assert hello["capabilities"] == ["shutdown"]
    assert await r.wait() == 68
    assert [m["type"] for m in r.messages] == ["hello", "shutdown"]
    assert r.stray == []
    assert any("idle" in line for line in r.stderr), r.stderr


async def test_given_graceful_termination_finishing_tasks_then_the_task_completes_and_no_more_claims(
        emu, runner, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    first = await emu.create_task(payload=sh(f"echo $$ > {started}; while [ ! -e {go} ]; do sleep 0.05; done"))
    r = await runner(runner_config(emu, tmp_path))
    await r.handshake()
    await wait_for_file(started)
    second = await emu.create_task(payload=sh("true"))    # capacity 1: waits for the first
    await r.send({"type": "graceful-termination", "finish-tasks": True})
    await r.wait_log("draining")
    go.touch()
    assert await r.wait() == 72
    assert [(run.state, run.reason_resolved) for run in emu.runs(first)] == [("completed", "completed")]
    assert emu.task_state(second) == "pending", r.text()   # not claimed after the message
    assert not r.of_type("shutdown") and r.stray == []


async def test_given_graceful_termination_without_finishing_then_the_task_is_aborted_as_worker_shutdown(
        emu, runner, tmp_path):
    started = tmp_path / "started"
    task_id = await emu.create_task(payload=sh(f"echo $$ > {started}; exec sleep 300"))
    r = await runner(runner_config(emu, tmp_path))
    await r.handshake()
    pid = int(await wait_for_file(started))
    await r.send({"type": "graceful-termination", "finish-tasks": False})
    assert await r.wait(timeout_s=30) == 72
    runs = emu.runs(task_id)
    assert (runs[0].state, runs[0].reason_resolved) == ("exception", "worker-shutdown")
    assert runs[1].state == "pending" and runs[1].reason_created == "retry"
    assert "public/logs/live_backing.log" in runs[0].artifacts   # uploaded after the report
    assert not alive(pid)
    assert r.stray == []


async def test_given_new_credentials_then_claims_use_them_and_the_running_task_is_undisturbed(
        emu, runner, tmp_path):
    scopes = [f"queue:claim-work:{POOL}", f"queue:worker-id:{GROUP}/{WORKER_ID}"]
    old = emu.add_client("worker/old", scopes)
    new = emu.add_client("worker/new", scopes)
    started, go = tmp_path / "started", tmp_path / "go"
    first = await emu.create_task(payload=sh(f"echo $$ > {started}; while [ ! -e {go} ]; do sleep 0.05; done"))
    r = await runner(runner_config(emu, tmp_path, creds=old, numberOfTasksToRun=2))
    await r.handshake()
    await wait_for_file(started)
    await r.send({"type": "new-credentials", "client-id": new["clientId"], "access-token": new["accessToken"]})
    await r.wait_log("worker credentials replaced")
    emu.auth.clients["worker/old"].expires = 0            # the old client is now refused
    go.touch()
    second = await emu.create_task(payload=sh("true"))
    assert await r.wait() == 0
    assert emu.task_state(first) == "completed" and emu.task_state(second) == "completed"
    claims = emu.calls_to("claimWork")
    assert [c.status for c in claims if c.client_id == "worker/old" and c.status != 200] == []
    assert any(c.client_id == "worker/new" and c.status == 200 for c in claims)
    assert not any(new["accessToken"] in json.dumps(m) for m in r.messages)


async def test_given_a_bad_config_then_error_report_without_secrets_and_exit_64(emu, runner, tmp_path):
    secret = "s3cr3t-token-value-never-shown"
    path = runner_config(emu, tmp_path, creds={"clientId": "worker/x", "accessToken": secret}, capacity="two")
    r = await runner(path)
    await r.handshake()
    assert await r.wait() == 64
    (report,) = r.of_type("error-report")
    assert set(report) == {"type", "kind", "title", "description", "extra"}
    assert report["kind"] == "worker-error" and "capacity" in report["description"]
    assert secret not in json.dumps(r.messages) and secret not in "\n".join(r.stderr)
    assert r.stray == []


async def test_given_missing_keys_then_error_report_and_exit_73(emu, runner, tmp_path):
    path = runner_config(emu, tmp_path, workerGroup="")
    r = await runner(path)
    await r.handshake(["error-report"])
    assert await r.wait() == 73
    (report,) = r.of_type("error-report")
    assert "workerGroup" in report["description"]
