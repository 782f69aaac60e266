"""Tests of tcworker.queue.cancellation: the status decision, CancelWatch, the poller against a
scripted run, then cancellation noticed through the queue emulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from tcworker.queue.cancellation import CancelWatch, RunWatchers, StatusPoller, run_gone_reason
from tcworker.queue.client import ClientFactory, QueueCallError, WorkerQueue
from tcworker.testing.queue import QueueEmulator


# ------------------------------------------------------------------ pure decisions
def _status(*runs: dict) -> dict:
    return {"taskId": "t", "state": runs[-1]["state"] if runs else "unscheduled", "runs": list(runs)}


@pytest.mark.parametrize(
    "status, run_id, expected",
    [
        (_status({"state": "running"}), 0, None),
        (_status({"state": "exception", "reasonResolved": "canceled"}), 0, "canceled"),
        (_status({"state": "exception", "reasonResolved": "deadline-exceeded"}), 0, "deadline-exceeded"),
        (_status({"state": "exception", "reasonResolved": "claim-expired"}, {"state": "pending"}), 0,
         "claim-expired"),
        (_status({"state": "completed", "reasonResolved": "completed"}), 0, "completed"),
        (_status({"state": "failed"}), 0, "failed"),
        (_status({"state": "exception", "reasonResolved": "worker-shutdown"}, {"state": "running"}), 1, None),
        (_status(), 0, "run-missing"),
    ],
)
def test_run_gone_reason(status, run_id, expected):
    assert run_gone_reason(status, run_id) == expected


# ------------------------------------------------------------------ CancelWatch
async def test_watch_given_two_sources_then_the_first_reason_wins():
    watch = CancelWatch("t", 0)
    waiter = asyncio.create_task(watch.wait())
    assert watch.callback("reclaim")("reclaim-conflict", "409") is None
    assert watch.trigger("canceled", "status") is False
    got = await waiter
    assert (got.reason, got.source, got.message) == ("reclaim-conflict", "reclaim", "409")
    assert watch.is_set() and watch.cancellation is got


async def test_watch_given_sealed_then_later_triggers_are_ignored():
    watch = CancelWatch()
    watch.seal()
    assert watch.trigger("canceled", "pulse") is False
    assert not watch.is_set()


# ------------------------------------------------------------------ poller, scripted
class FakeRun:
    """Duck-typed RunQueue whose status() pops scripted answers (dicts or exceptions)."""

    def __init__(self, script: list, *, resolving: bool = False) -> None:
        self.task_id, self.run_id = "t", 0
        self.script = list(script)
        self.resolving = resolving
        self.polls = 0
        self.polled = asyncio.Event()

    async def status(self) -> dict:
        self.polls += 1
        self.polled.set()
        answer = self.script.pop(0) if self.script else _status({"state": "running"})
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _err(status: int | None) -> QueueCallError:
    return QueueCallError("status", "scripted", status=status, transient=status is None or status >= 500)


async def test_poller_given_cancel_then_gone_with_the_queue_reason():
    watch = CancelWatch("t", 0)
    run = FakeRun([_status({"state": "running"}), _err(500),
                   _status({"state": "exception", "reasonResolved": "canceled"})])
    await StatusPoller(run, watch.callback("status"), interval_s=0.01).run()
    assert watch.cancellation.reason == "canceled" and watch.cancellation.source == "status"
    assert run.polls == 3


async def test_poller_given_403_then_polling_off_with_one_log_line_and_no_cancellation(caplog):
    caplog.set_level(logging.INFO, logger="tcworker")
    watch = CancelWatch("t", 0)
    run = FakeRun([_err(403)])
    poller = StatusPoller(run, watch.callback("status"), interval_s=0.01)
    await poller.run()
    assert not poller.enabled and not watch.is_set() and run.polls == 1
    assert len([r for r in caplog.records if "status polling off" in r.getMessage()]) == 1


async def test_poller_given_our_own_resolution_then_no_cancellation():
    watch = CancelWatch("t", 0)
    run = FakeRun([_status({"state": "completed", "reasonResolved": "completed"})], resolving=True)
    await StatusPoller(run, watch.callback("status"), interval_s=0.01).run()
    assert not watch.is_set()


async def test_poller_given_repeated_failures_then_one_warning_and_polling_goes_on(caplog):
    caplog.set_level(logging.DEBUG, logger="tcworker")
    watch = CancelWatch("t", 0)
    run = FakeRun([_err(None), _err(502), _err(401),
                   _status({"state": "exception", "reasonResolved": "deadline-exceeded"})])
    await StatusPoller(run, watch.callback("status"), interval_s=0.01).run()
    assert watch.cancellation.reason == "deadline-exceeded"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# ------------------------------------------------------------------ against the queue emulator
QUEUE_ID = "proj-test/python-worker"


@contextlib.asynccontextmanager
async def _claimed(**emulator_options):
    """An emulator (30 s claims: no reclaim during a test) and one claimed run → (emu, run)."""
    async with QueueEmulator(long_poll_s=0.2, claim_timeout_s=30, **emulator_options) as emu, \
            ClientFactory.open(emu.root_url, max_retries=0, call_timeout_s=10) as clients:
        worker = WorkerQueue(clients, worker_pool_id=QUEUE_ID, worker_group="test-group",
                             worker_id="test-worker", credentials=emu.worker_credentials())
        await emu.create_task()
        yield emu, worker.run_queue((await worker.claim_work(1))[0])


async def test_given_a_cancel_then_the_status_poll_notices_before_any_reclaim():
    async with _claimed() as (emu, run):
        watchers = RunWatchers(run, margin_s=180, poll_interval_s=0.1)
        watchers.start()
        emu.cancel_task(run.task_id)
        gone = await asyncio.wait_for(watchers.watch.wait(), 5)
        await watchers.stop()
        assert (gone.reason, gone.source) == ("canceled", "status")
        assert emu.calls_to("reclaimTask") == []
        assert emu.calls_to("status")[-1].client_id.startswith("worker/")  # worker credentials


async def test_given_the_deadline_passes_then_deadline_exceeded_is_noticed():
    async with _claimed(deadline_delay_s=0) as (emu, run):
        watchers = RunWatchers(run, margin_s=180, poll_interval_s=0.1)
        watchers.start()
        emu.clock.advance(3600 + 1)
        gone = await asyncio.wait_for(watchers.watch.wait(), 5)
        await watchers.stop()
        assert gone.reason == "deadline-exceeded"


async def test_given_status_403_then_polling_off_and_never_a_cancellation(caplog):
    caplog.set_level(logging.INFO, logger="tcworker")
    async with _claimed(anonymous_scopes=[]) as (emu, run):
        watch = CancelWatch(run.task_id, run.run_id)
        poller = StatusPoller(run, watch.callback("status"), interval_s=0.1)
        await asyncio.wait_for(poller.run(), 5)
        assert not poller.enabled and not watch.is_set()
        assert emu.calls_to("status")[-1].status == 403
        assert len(emu.calls_to("status")) == 1
        assert emu.task_state(run.task_id) == "running"
    assert len([r for r in caplog.records if "status polling off" in r.getMessage()]) == 1


async def test_given_our_own_report_then_the_poller_stays_quiet():
    async with _claimed() as (emu, run):
        watch = CancelWatch(run.task_id, run.run_id)
        poller = StatusPoller(run, watch.callback("status"), interval_s=0.1)
        task = asyncio.create_task(poller.run())
        await run.report_completed()  # without stopping the poller first
        await asyncio.wait_for(task, 5)
        assert not watch.is_set()
