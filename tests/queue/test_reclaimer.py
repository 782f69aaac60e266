"""Tests of tcworker.queue.reclaimer: the pure timing/classification decisions, the loop against a
scripted fake run, then claim → reclaim → report against the queue emulator (FM-11, FM-20)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import types

import pytest

from tcworker.errors import RunResolvedElsewhere
from tcworker.queue.cancellation import RunWatchers
from tcworker.queue.client import ClientFactory, QueueCallError, WorkerQueue
from tcworker.queue.reclaimer import (
    Reclaimer,
    attempt_timeout_s,
    reclaim_delay_s,
    reclaim_outcome,
    retry_delay_s,
)
from tcworker.testing.queue import QueueEmulator


# ------------------------------------------------------------------ pure decisions
@pytest.mark.parametrize(
    "left, margin, expected",
    [
        (1200, 180, 1020),  # upstream's 20 min claims: 3 min before takenUntil, as generic-worker
        (400, 180, 220),
        (300, 180, 150),  # the margin is at most half the time left
        (100, 180, 50),
        (1.0, 180, 0.5),  # short test claims: half the time left, never at once
        (1.0, 0, 1.0),
        (0.01, 180, 0.05),  # floor
        (-5, 180, 0.05),  # looks lapsed: try (almost) at once
    ],
)
def test_reclaim_delay_given_time_left_and_margin(left, margin, expected):
    assert reclaim_delay_s(left, margin) == pytest.approx(expected)


def test_retry_delay_backs_off_and_stays_within_the_claim():
    assert [retry_delay_s(n, 1000, base_s=0.5, cap_s=30) for n in range(8)] == [
        0.5, 1, 2, 4, 8, 16, 30, 30]
    assert retry_delay_s(5, 4.0) == 2.0  # half the time left
    assert retry_delay_s(0, 0.01) == 0.05  # floor: no hammering when the claim is about to lapse


@pytest.mark.parametrize(
    "err, outcome",
    [
        (RunResolvedElsewhere("409"), "gone"),
        (QueueCallError("reclaimTask", "x", status=404, transient=False), "gone"),
        (QueueCallError("reclaimTask", "x", status=400, transient=False), "gone"),
        (QueueCallError("reclaimTask", "x", status=401, transient=False), "retry"),
        (QueueCallError("reclaimTask", "x", status=403, transient=False), "retry"),
        (QueueCallError("reclaimTask", "x", status=500, transient=True), "retry"),
        (QueueCallError("reclaimTask", "x", status=None, transient=True), "retry"),
    ],
)
def test_reclaim_outcome(err, outcome):
    assert reclaim_outcome(err) == outcome


def test_attempt_timeout_is_cut_to_the_claim_but_not_below_the_minimum():
    assert attempt_timeout_s(1000, 60) == 60
    assert attempt_timeout_s(20, 60) == 20
    assert attempt_timeout_s(0.5, 60) == 5


# ------------------------------------------------------------------ the loop, scripted
class FakeRun:
    """Duck-typed RunQueue: each reclaim pops the next scripted answer (an exception or 'ok')."""

    def __init__(self, claim_s: float, script: list, *, block_on: int | None = None) -> None:
        self.task_id, self.run_id = "fake", 0
        self.clients = types.SimpleNamespace(call_timeout_s=60.0)
        self.claim_s = claim_s
        self.script = list(script)
        self.deadline = asyncio.get_running_loop().time() + claim_s
        self.taken_until = dt.datetime.now(dt.timezone.utc)
        self.calls = 0
        self.block_on = block_on  # the reclaim call number that hangs until released
        self.in_flight = asyncio.Event()
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    def seconds_left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()

    async def reclaim(self, *, timeout_s: float) -> dt.datetime:
        self.calls += 1
        answer = self.script.pop(0) if self.script else "ok"
        if self.calls == self.block_on:
            self.in_flight.set()
            await self.release.wait()
        self.changed.set()
        if isinstance(answer, BaseException):
            raise answer
        self.deadline = asyncio.get_running_loop().time() + self.claim_s
        return self.taken_until


def _err(status: int | None) -> QueueCallError:
    return QueueCallError("reclaimTask", "scripted", status=status, transient=status is None or status >= 500)


async def _until(predicate, run: FakeRun) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            run.changed.clear()
            await run.changed.wait()


async def test_given_transient_failures_beyond_retries_then_reclaims_continue():
    # FM-20 in miniature: six 500s in a row, then success; the claim never lapses.
    gone: list = []
    run = FakeRun(3.0, [_err(500)] * 6 + ["ok", "ok"])
    reclaimer = Reclaimer(run, lambda *a: gone.append(a), margin_s=180, retry_base_s=0.005)
    reclaimer.start()
    await _until(lambda: reclaimer.reclaims >= 2 or gone, run)
    await reclaimer.stop()
    assert gone == [] and run.calls >= 8


async def test_given_409_then_gone_once_and_the_loop_ends():
    gone: list = []
    run = FakeRun(0.2, [RunResolvedElsewhere("run 0 is not running")])
    reclaimer = Reclaimer(run, lambda *a: gone.append(a), margin_s=0)
    task = reclaimer.start()
    await task
    assert [g[0] for g in gone] == ["reclaim-conflict"] and run.calls == 1


async def test_given_404_then_run_gone():
    gone: list = []
    run = FakeRun(0.2, [_err(404)])
    await Reclaimer(run, lambda *a: gone.append(a), margin_s=0).start()
    assert [g[0] for g in gone] == ["run-gone"]


async def test_given_403_then_retried_never_a_cancellation():
    gone: list = []
    run = FakeRun(0.4, [_err(403), _err(403), "ok"])
    reclaimer = Reclaimer(run, lambda *a: gone.append(a), retry_base_s=0.01)
    reclaimer.start()
    await _until(lambda: reclaimer.reclaims >= 1 or gone, run)
    await reclaimer.stop()
    assert gone == []


async def test_given_failures_until_taken_until_then_claim_expired_not_silence():
    gone: list = []
    run = FakeRun(0.3, [_err(None)] * 1000)
    await Reclaimer(run, lambda *a: gone.append(a), retry_base_s=0.01).start()
    assert [g[0] for g in gone] == ["claim-expired"]
    assert run.seconds_left() <= 0


async def test_given_stop_during_a_reclaim_then_a_late_409_is_ignored_without_error_logs(caplog):
    # FM-11: the task runner stops the reclaimer, then reports; the in-flight reclaim's 409 is no news.
    caplog.set_level(logging.DEBUG, logger="tcworker")
    gone: list = []
    run = FakeRun(0.2, [RunResolvedElsewhere("late")], block_on=1)
    reclaimer = Reclaimer(run, lambda *a: gone.append(a), margin_s=0)
    reclaimer.start()
    await run.in_flight.wait()
    await reclaimer.stop()
    run.release.set()
    await asyncio.sleep(0)
    assert gone == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_stop_is_idempotent_and_works_before_start():
    reclaimer = Reclaimer(FakeRun(10, []), lambda *a: None)
    await reclaimer.stop()
    await reclaimer.stop()
    assert reclaimer.stopped


async def test_a_bug_in_the_loop_surfaces_at_stop():
    run = FakeRun(0.1, [ZeroDivisionError("bug")])
    reclaimer = Reclaimer(run, lambda *a: None, margin_s=0)
    task = reclaimer.start()
    await asyncio.wait([task])
    with pytest.raises(ZeroDivisionError):
        await reclaimer.stop()


# ------------------------------------------------------------------ against the queue emulator
QUEUE_ID = "proj-test/python-worker"


@contextlib.asynccontextmanager
async def _claimed(claim_timeout_s: float, *, max_retries: int = 0):
    """An emulator, a ClientFactory and one claimed run → (emu, run_queue)."""
    async with QueueEmulator(long_poll_s=0.2, claim_timeout_s=claim_timeout_s) as emu, \
            ClientFactory.open(emu.root_url, max_retries=max_retries, call_timeout_s=10) as clients:
        worker = WorkerQueue(clients, worker_pool_id=QUEUE_ID, worker_group="test-group",
                             worker_id="test-worker", credentials=emu.worker_credentials())
        await emu.create_task()
        yield emu, worker.run_queue((await worker.claim_work(1))[0])


def _credentials_changes(run) -> asyncio.Queue:
    changes: asyncio.Queue = asyncio.Queue()
    run.on_credentials(changes.put_nowait)
    return changes


async def test_given_a_claim_then_reclaims_swap_credentials_and_the_report_uses_them():
    async with _claimed(1.0) as (emu, run):
        first = run.credentials["clientId"]
        first_until = run.taken_until
        changes = _credentials_changes(run)
        watchers = RunWatchers(run, margin_s=180, poll_interval_s=None)
        watchers.start()
        new = await asyncio.wait_for(changes.get(), 5)
        await watchers.stop()
        assert new["clientId"] != first and new == run.credentials
        assert run.taken_until > first_until
        await run.report_completed()
        assert emu.calls_to("reportCompleted")[-1].client_id == new["clientId"]
        assert emu.runs(run.task_id)[0].state == "completed"
        assert not watchers.watch.is_set()


async def test_given_a_cancel_then_reclaim_409_sets_the_watch_and_nothing_is_reported():
    async with _claimed(0.6) as (emu, run):
        watchers = RunWatchers(run, margin_s=180, poll_interval_s=None)
        watchers.start()
        emu.cancel_task(run.task_id)
        gone = await asyncio.wait_for(watchers.watch.wait(), 5)
        await watchers.stop()
        assert (gone.reason, gone.source) == ("reclaim-conflict", "reclaim")
        assert emu.calls_to("reclaimTask")[-1].status == 409
        assert not [c for c in emu.calls if c.api_name.startswith("report")]


async def test_fm20_given_reclaim_500s_beyond_the_client_retries_then_the_claim_never_lapses(caplog):
    # maxRetries=1: each of our attempts is two HTTP calls; six 500s exhaust three attempts.
    caplog.set_level(logging.WARNING, logger="tcworker")
    async with _claimed(3.0, max_retries=1) as (emu, run):
        fault = emu.faults.inject("reclaimTask", status=500, count=6)
        changes = _credentials_changes(run)
        watchers = RunWatchers(run, margin_s=180, poll_interval_s=0.1, retry_base_s=0.05)
        watchers.start()
        await asyncio.wait_for(changes.get(), 10)
        await asyncio.wait_for(changes.get(), 10)  # and the loop goes on after the recovery
        await watchers.stop()
        assert fault.hits == 6
        assert not watchers.watch.is_set()
        assert [r.state for r in emu.runs(run.task_id)] == ["running"]
        await run.report_completed()
        assert emu.runs(run.task_id)[0].state == "completed"
    assert any("reclaim of" in r.getMessage() for r in caplog.records)  # retries were logged


async def test_fm20_given_connection_resets_then_reclaims_continue():
    async with _claimed(2.0, max_retries=0) as (emu, run):
        fault = emu.faults.inject("reclaimTask", "reset", count=3)
        changes = _credentials_changes(run)
        watchers = RunWatchers(run, margin_s=180, poll_interval_s=None, retry_base_s=0.05)
        watchers.start()
        await asyncio.wait_for(changes.get(), 10)
        await watchers.stop()
        assert fault.hits == 3 and not watchers.watch.is_set()
        assert emu.runs(run.task_id)[0].state == "running"


async def test_fm11_given_short_tasks_racing_reclaims_then_every_report_is_right(caplog):
    # Claims of 0.8 s (reclaim after 0.4 s), tasks of 0.3-0.5 s, reclaims delayed 50 ms.
    caplog.set_level(logging.DEBUG, logger="tcworker")
    rng = random.Random(11)
    async with QueueEmulator(long_poll_s=0.2, claim_timeout_s=0.8) as emu, \
            ClientFactory.open(emu.root_url, max_retries=0, call_timeout_s=10) as clients:
        worker = WorkerQueue(clients, worker_pool_id=QUEUE_ID, worker_group="test-group",
                             worker_id="test-worker", credentials=emu.worker_credentials())
        emu.faults.inject("reclaimTask", "delay", delay_s=0.05, count=1000)
        task_ids = []
        for _ in range(10):
            task_ids.append(await emu.create_task())
            run = worker.run_queue((await worker.claim_work(1))[0])
            watchers = RunWatchers(run, margin_s=180, poll_interval_s=0.1)
            watchers.start()
            await asyncio.sleep(rng.uniform(0.3, 0.5))  # the "task"
            await watchers.stop()
            assert not watchers.watch.is_set()
            await run.report_completed()
        assert [emu.task_state(t) for t in task_ids] == ["completed"] * 10
        assert len(emu.calls_to("reclaimTask")) >= 3  # the race did happen
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_stop_during_an_in_flight_reclaim_then_report_and_no_cancellation(caplog):
    caplog.set_level(logging.DEBUG, logger="tcworker")
    async with _claimed(1.0) as (emu, run):
        fault = emu.faults.inject("reclaimTask", "delay", delay_s=0.3, when="after")
        reclaimer = Reclaimer(run, lambda *a: pytest.fail(f"gone: {a}"), margin_s=180)
        reclaimer.start()
        async with asyncio.timeout(5):
            while not fault.hits:  # the emulator has the reclaim and holds its answer
                await asyncio.sleep(0.01)
        await reclaimer.stop()
        await run.report_completed()
        assert emu.runs(run.task_id)[0].state == "completed"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
