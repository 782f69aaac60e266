"""Tests of the worker's own logging (:mod:`tcworker.logsetup`): JSON lines with event fields, the
idle reporter, and, in an in-process worker against the queue emulator, one event per claim,
reclaim, cancellation and resolution with no task output in the worker's log.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os

import pytest

from tcworker.config import WorkerConfig
from tcworker.logsetup import IdleReporter, JsonFormatter, log_event, setup_logging
from tcworker.testing.queue import QueueEmulator
from tcworker.worker import Worker

WAIT_S = 60.0


class EventLog(logging.Handler):
    """Keeps every record as its JSON line (parsed) and wakes waiters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []
        self.text: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        self.text.append(line)
        self.lines.append(json.loads(line))
        self.changed.set()

    def events(self, name: str) -> list[dict]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for(self, name: str) -> dict:
        async with asyncio.timeout(WAIT_S):
            while not self.events(name):
                self.changed.clear()
                await self.changed.wait()
        return self.events(name)[0]


@pytest.fixture
def event_log():
    handler = EventLog()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_json_lines_carry_event_fields(monkeypatch):
    """Given logFormat json, then a log_event call is one JSON object with its fields as keys."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(WorkerConfig.from_mapping({"logFormat": "json"}, environ={}))
        log_event(logging.getLogger("tcworker.test"), "task-reclaimed", taskId="abc", runId=2,
                  durationSecs=0.012)
    finally:
        root.handlers[:], root.level = saved
    doc = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert doc["event"] == "task-reclaimed" and doc["taskId"] == "abc" and doc["runId"] == 2
    assert doc["durationSecs"] == 0.012 and doc["level"] == "info" and doc["logger"] == "tcworker.test"
    assert doc["message"] == "task-reclaimed taskId=abc runId=2 durationSecs=0.012"
    assert doc["time"].endswith("Z")


def test_idle_reporter_logs_each_reason_at_most_once_a_minute(event_log):
    now = [1000.0]
    idle = IdleReporter(logging.getLogger("tcworker.test"), clock=lambda: now[0])
    assert idle.report("no-work")
    now[0] += 30
    assert not idle.report("no-work")
    assert idle.report("low-disk", freeMB=10)  # a new reason is news
    now[0] += 31
    assert idle.report("no-work")
    idle.busy()
    assert idle.report("no-work")  # a new idle period starts at once
    lines = event_log.events("worker-idle")
    assert [(e["reason"], e["idleSecs"]) for e in lines] == [
        ("no-work", 0.0), ("low-disk", 30.0), ("no-work", 61.0), ("no-work", 0.0)]
    assert lines[1]["freeMB"] == 10


async def test_worker_logs_claim_reclaim_cancel_resolution_without_task_output(tmp_path, event_log):
    """Given a task that prints a marker and waits, with 2 s claims, when the worker reclaims and
    then the task is cancelled, then the worker's log has one event of each kind with task id and
    run id, and never the task's output."""
    async with QueueEmulator(long_poll_s=0.5, claim_timeout_s=2, validate_schemas=False) as emu:
        fifo = tmp_path / "never.fifo"
        os.mkfifo(fifo)
        task_id = await emu.create_task(payload={
            "command": [["sh", "-c", f'echo TASK-OUTPUT-MARKER; read x < "{fifo}"']], "maxRunTime": 120})
        config = WorkerConfig.from_mapping({
            "rootURL": emu.root_url, **emu.worker_credentials(), "workerPoolId": "proj-test/python-worker",
            "workerGroup": "test-group", "workerId": "test-worker", "tasksDir": str(tmp_path / "tasks"),
            "engines": ["native"], "statusPollIntervalSecs": 0.1, "reclaimMarginSecs": 1.5,
            "requiredDiskSpaceMegabytes": 0, "numberOfTasksToRun": 1, "killGracePeriodSecs": 0.5,
        }, environ={})
        running = asyncio.create_task(Worker(config).run())
        try:
            reclaimed = await event_log.wait_for("task-reclaimed")
            emu.cancel_task(task_id)
            cancelled = await event_log.wait_for("task-cancelled")
            assert await asyncio.wait_for(running, WAIT_S) == 0
        finally:
            if not running.done():
                running.cancel()
        for event in (reclaimed, cancelled):
            assert event["taskId"] == task_id and event["runId"] == 0
        assert reclaimed["durationSecs"] >= 0 and reclaimed["takenUntil"]
        assert cancelled["reason"] == "canceled"
        assert event_log.events("task-claimed")[0]["taskId"] == task_id
        resolved = event_log.events("task-resolved")[0]
        assert resolved["taskId"] == task_id and resolved["durationSecs"] > 0
        assert emu.task_state(task_id) == "exception"
        assert not any("TASK-OUTPUT-MARKER" in line for line in event_log.text)
