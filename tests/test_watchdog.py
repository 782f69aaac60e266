"""The watchdog (``watchdogSecs``) and the timeouts that keep hung queue calls from wedging the worker.

- :class:`tcworker.watchdog.Watchdog` decisions (progress, pauses, a blocked event loop).
- ``tcworker run`` with a hung claimWork and ``watchdogSecs`` 2: it logs why, aborts its running
  task as ``worker-shutdown`` (the queue retries it) and exits 69.
- In-process workers (so the claimWork long-poll allowance can be shortened): a hung claimWork,
  a hung reclaimTask and a hung storage PUT each end by a timeout, and the worker keeps claiming.

Does not cover: random faults (``tests/chaos/``), crashes (``tests/test_crash_restart.py``).
"""

from __future__ import annotations

import asyncio
import time

from e2e.conftest import base_config, emulator, native_payload, resolutions, task_log, worker_process  # noqa: F401

from tcworker import worker as worker_module
from tcworker.config import WorkerConfig
from tcworker.watchdog import Watchdog
from tcworker.worker import Worker


# ------------------------------------------------------------------ decisions
def test_watchdog_fires_without_claim_progress_but_not_while_paused():
    dog = Watchdog(10, lambda why: None, exit_after_s=1)
    now = time.monotonic()
    assert dog.stalled_for(now) is None
    dog._beat_at = now + 11  # the event loop is alive
    assert "no claimWork answered for 11s" in dog.stalled_for(now + 11)
    with dog.paused():  # every slot busy: no claim is expected
        assert dog.stalled_for(now + 11) is None
    dog._beat_at = time.monotonic() + 5
    dog.progress()
    assert dog.stalled_for(time.monotonic() + 5) is None


def test_watchdog_fires_when_the_event_loop_is_blocked():
    dog = Watchdog(10, lambda why: None, exit_after_s=1)
    with dog.paused():
        assert "event loop has been blocked" in dog.stalled_for(time.monotonic() + 11)


# ------------------------------------------------------------------ tcworker run
async def test_hung_claim_work_trips_the_watchdog_which_exits_69(emulator, worker_process):
    # Given: a worker (capacity 2, watchdogSecs 2) running a long task, then claimWork hangs
    emu = await emulator()
    slow = await emu.create_task(payload=native_payload("sleep 60"))

    def hang_claims(event, task, run) -> None:
        if event == "task-running" and not emu.faults.faults:
            emu.faults.inject("claimWork", "hang", count=1000)

    emu.state.listeners.append(hang_claims)
    worker = await worker_process(emu, capacity=2, watchdogSecs=2, shutdownGracePeriodSecs=3)
    # When / Then: the watchdog says why and the worker exits 69 after aborting its task
    assert await worker.wait() == 69, worker.log_text
    assert worker.matching(r"watchdog \(watchdogSecs 2\): no claimWork answered for \d+s"), worker.log_text
    assert resolutions(emu, slow)[0] == ("exception", "worker-shutdown")
    assert emu.task_state(slow) == "pending"  # the queue retries it


# ------------------------------------------------------------------ in-process, short timeouts
async def _run_in_process(emu, tmp_path, monkeypatch, **keys) -> Worker:
    monkeypatch.setattr(worker_module, "CLAIM_LONG_POLL_S", 0.5)  # the emulator long-polls 0.5 s
    config = WorkerConfig.from_mapping(base_config(emu, tmp_path, **keys))
    worker = Worker(config)
    code = await asyncio.wait_for(worker.run(), 120)
    assert code == 0
    return worker


async def test_hung_claim_work_times_out_and_the_worker_claims_again(emulator, tmp_path, monkeypatch):
    emu = await emulator()
    emu.faults.inject("claimWork", "hang", count=2)
    task_id = await emu.create_task(payload=native_payload("echo hello"))
    await _run_in_process(emu, tmp_path, monkeypatch, numberOfTasksToRun=1, queueCallTimeoutSecs=1)
    claims = emu.calls_to("claimWork")
    assert [c.fault for c in claims[:2]] == ["hang", "hang"] and claims[2].status == 200
    assert resolutions(emu, task_id) == [("completed", "completed")]


async def test_hung_reclaim_times_out_and_is_retried_before_the_claim_lapses(emulator, tmp_path, monkeypatch):
    emu = await emulator(claim_timeout_s=10)
    emu.faults.inject("reclaimTask", "hang", count=1)
    task_id = await emu.create_task(payload=native_payload("sleep 12; echo done"))
    await _run_in_process(emu, tmp_path, monkeypatch, numberOfTasksToRun=1, queueCallTimeoutSecs=1.5)
    reclaims = emu.calls_to("reclaimTask")
    assert reclaims[0].fault == "hang" and any(c.status == 200 for c in reclaims[1:])
    assert resolutions(emu, task_id) == [("completed", "completed")]


async def test_hung_upload_ends_with_the_upload_budget_and_the_worker_claims_on(emulator, tmp_path, monkeypatch):
    emu = await emulator()
    emu.faults.inject("storage.put", "hang", count=1000)
    big = await emu.create_task(payload=native_payload(
        "head -c 16384 /dev/urandom > data.bin", artifacts=[{"type": "file", "path": "data.bin", "name": "public/data.bin"}]))
    after = await emu.create_task(payload=native_payload("echo after"))
    await _run_in_process(emu, tmp_path, monkeypatch, numberOfTasksToRun=2, uploadBudgetSecs=2)
    assert resolutions(emu, big) == [("exception", "resource-unavailable")]
    assert "artifact upload took longer than 2.0s" in task_log(emu, big)
    assert resolutions(emu, after) == [("completed", "completed")]
