"""Crash and restart: SIGKILL a ``tcworker run`` holding runs in every phase, restart it with the
same config and tasks directory; its boot sweeps what the dead worker left, and claim expiry plus
the queue's retries get every task done.

One worker (capacity 4) is caught, at the moment of the kill, with one run in each phase:

- claim: claimWork claimed task A, its answer hangs (fault ``after``);
- run: task B's command sleeps (and leaves a background child);
- upload: task C's 16 KiB artifact PUT to storage hangs;
- report: task D's reportCompleted hangs (fault ``before``).

Claims last 3 s so the dead worker's runs expire within the test.

Does not cover: random faults (``tests/chaos/``), the watchdog (``tests/test_watchdog.py``).
"""

from __future__ import annotations

import signal

from e2e.conftest import emulator, native_payload, resolutions, worker_process  # noqa: F401

from tcworker.testing.chaos import FINAL_STATES, leftovers

FIRST_RUN_ONLY = 'if [ "$RUN_ID" = 0 ]; then {}; fi'


async def test_sigkill_in_every_phase_then_restart_gets_every_task_done(emulator, worker_process, tmp_path):
    emu = await emulator(claim_timeout_s=3.0)
    run_b = await emu.create_task(payload=native_payload(
        "echo b; " + FIRST_RUN_ONLY.format("(sleep 300 &); sleep 300")))
    upload_c = await emu.create_task(payload=native_payload(
        "head -c 16384 /dev/urandom > data.bin", artifacts=[{"type": "file", "path": "data.bin", "name": "public/data.bin"}]))
    report_d = await emu.create_task(payload=native_payload("echo d"))
    emu.faults.inject("storage.put", "hang", count=1000)
    emu.faults.inject("reportCompleted", "hang", count=1000)
    worker = await worker_process(emu, capacity=4)

    # Given: B runs, C's upload hangs, D's report hangs; then A's claimWork answer hangs
    def in_phase(api: str, task_id: str | None = None) -> bool:
        return any(c.api_name == api and (task_id is None or c.params.get("taskId") == task_id)
                   for c in emu.calls)

    await emu.changes.until(lambda: emu.task_state(run_b) == "running" and in_phase("put")
                            and in_phase("reportCompleted", report_d), what="B running, C uploading, D reporting")
    emu.faults.inject("claimWork", "hang", count=1000, when="after")
    claim_a = await emu.create_task(payload=native_payload("echo a"))
    await emu.changes.until(lambda: emu.task_state(claim_a) == "running", what="A claimed")
    ids = [claim_a, run_b, upload_c, report_d]
    assert all(emu.task_state(t) == "running" for t in ids)
    left_behind = leftovers(tmp_path / "tasks", ids)
    assert any("tcw-task-" in item for item in left_behind), left_behind
    assert any("process" in item for item in left_behind), left_behind  # B's command and children

    # When: the worker is killed, and restarted with the same config (same tasksDir)
    worker.send_signal(signal.SIGKILL)
    assert await worker.wait() == -signal.SIGKILL
    emu.faults.clear()
    restarted = await worker_process(emu, config=worker.config)

    # Then: its boot sweeps the dead worker's task dirs, log folders and task processes ...
    await restarted.wait_for_line(r"engine native ready")
    assert not [item for item in leftovers(tmp_path / "tasks", ids) if "tcw-task-" in item or "process" in item]
    assert restarted.matching(r"removing leftover run log folder"), restarted.log_text
    # ... and every task is done after its claim expired
    await emu.changes.until(lambda: all(emu.task_state(t) in FINAL_STATES for t in ids), 90, "every task done")
    for task_id in ids:
        assert resolutions(emu, task_id) == [("exception", "claim-expired"), ("completed", "completed")], task_id
    await emu.changes.until(lambda: not leftovers(tmp_path / "tasks", ids), 30, "no leftovers")
    await restarted.stop()
    assert restarted.returncode == 72, restarted.log_text
