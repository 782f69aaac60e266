"""End to end: SIGTERM/SIGINT to the real ``tcworker run`` process (FM-21).

(a) SIGTERM 2 s into ``sleep 60``: the task is killed, ``exception/worker-shutdown`` is reported
within ``shutdownGracePeriodSecs``, then the log and artifacts are uploaded (report first: the
queue schedules the retry at once). (b) SIGTERM while idle in a claimWork long-poll: prompt exit,
no claims after the signal. Plus: a second signal aborts at once.

Does not cover: cancellation by the queue (``test_worker_claims.py``).
"""

from __future__ import annotations

import signal
import time

from .conftest import native_payload, resolutions, task_log
from .test_worker_claims import _processes_with

GRACE_S = 6.0


def _first_call_index(emu, api_name: str, task_id: str, name: str | None = None) -> int:
    for i, call in enumerate(emu.calls):
        if call.api_name == api_name and call.params.get("taskId") == task_id:
            if name is None or call.params.get("name") == name:
                return i
    raise AssertionError(f"no {api_name} for {task_id} {name or ''}")


async def test_fm21a_sigterm_into_a_running_task_reports_worker_shutdown_then_uploads(
        emulator, worker_process):
    emu = await emulator()
    marker = "60.2101"
    task_id = await emu.create_task(payload=native_payload(
        f"echo partial > out.txt; sleep {marker}",
        artifacts=[{"type": "file", "path": "out.txt", "name": "public/out.txt"}]))
    worker = await worker_process(emu, shutdownGracePeriodSecs=GRACE_S)
    await emu.changes.until(lambda: _processes_with(marker), what="the task's sleep")
    await worker.wait_for_line(r"task-claimed")
    signalled_at = time.time()
    worker.send_signal(signal.SIGTERM)
    assert await worker.wait() == 72
    assert _processes_with(marker) == []
    runs = emu.runs(task_id)
    assert [(r.state, r.reason_resolved) for r in runs[:1]] == [("exception", "worker-shutdown")]
    assert runs[1].state == "pending" and runs[1].reason_created == "retry"
    report = emu.calls[_first_call_index(emu, "reportException", task_id)]
    assert report.request_body == {"reason": "worker-shutdown"}
    assert report.time - signalled_at < GRACE_S
    # report first, then the log and the artifacts (best-effort)
    assert _first_call_index(emu, "reportException", task_id) < _first_call_index(
        emu, "createArtifact", task_id, "public/logs/live_backing.log")
    assert emu.artifact_blob(task_id, 0, "public/out.txt").data == b"partial\n"
    text = task_log(emu, task_id)
    assert "worker is shutting down" in text and "Resolution: exception/worker-shutdown" in text


async def test_fm21b_sigterm_while_idle_in_a_long_poll_exits_promptly_without_claims(
        emulator, worker_process):
    emu = await emulator(long_poll_s=20)  # a long poll that would hold an unsignalled worker 20 s
    worker = await worker_process(emu)
    await emu.changes.until(lambda: emu.calls_to("claimWork"), what="a claimWork long-poll")
    signalled_at = time.time()
    worker.send_signal(signal.SIGTERM)
    assert await worker.wait(timeout_s=10) == 72  # well before the long poll would have answered
    assert [c for c in emu.calls_to("claimWork") if c.time >= signalled_at] == []
    assert all(not c.response_body or c.response_body == {"tasks": []} for c in emu.calls_to("claimWork"))
    task_id = await emu.create_task(payload=native_payload("true"))
    assert emu.task_state(task_id) == "pending"


async def test_a_second_signal_aborts_at_once(emulator, worker_process):
    emu = await emulator()
    marker = "60.2102"
    task_id = await emu.create_task(payload=native_payload(f"sleep {marker}"))
    worker = await worker_process(emu, shutdownGracePeriodSecs=600)  # the first signal alone waits 400 s
    await emu.changes.until(lambda: _processes_with(marker), what="the task's sleep")
    worker.send_signal(signal.SIGINT)
    await worker.wait_for_line(r"SIGINT: draining")
    worker.send_signal(signal.SIGINT)
    assert await worker.wait(timeout_s=30) == 71
    assert resolutions(emu, task_id)[0] == ("exception", "worker-shutdown")
    assert _processes_with(marker) == []


async def test_given_grace_period_runs_out_mid_abort_then_worker_shutdown_is_still_reported(
        emulator, worker_process):
    # The task ignores SIGTERM and the engine would wait 30 s before SIGKILL, but the grace period
    # is 1.5 s: the worker cancels the run hard, and still resolves it instead of letting the
    # claim expire.
    emu = await emulator()
    marker = "60.2103"
    task_id = await emu.create_task(payload=native_payload(f"trap '' TERM; sleep {marker}; sleep {marker}"))
    worker = await worker_process(emu, shutdownGracePeriodSecs=1.5, killGracePeriodSecs=30)
    await emu.changes.until(lambda: _processes_with(marker), what="the task's sleep")
    worker.send_signal(signal.SIGTERM)
    assert await worker.wait(timeout_s=30) == 72
    assert resolutions(emu, task_id)[0] == ("exception", "worker-shutdown")
    assert _processes_with(marker) == []
    assert any("worker-shutdown" in line and "stopped before it could finish" in line for line in worker.lines)
