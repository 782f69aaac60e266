"""Chaos: one ``tcworker run`` (capacity 8) runs a mix of tasks while the emulator injects random
faults on every endpoint and on storage; afterwards the invariants of
:func:`tcworker.testing.chaos.check_invariants` hold, nothing is left behind, and the worker still
claims a last clean task.

CI size: 96 tasks, 5 % faults (seeded), claims of 4 s (so an injected reclaim 409 or a lost claim
resolves as claim-expired plus a retry within the test), queue calls time out after 3 s, and hangs
the worker does not time out itself (storage, the object service inside the upload helper) end
with a reset after 5 s. The long run is ``bench/chaos.py``.

Does not cover: crashes of the worker (``tests/test_crash_restart.py``), the watchdog
(``tests/test_watchdog.py``).
"""

from __future__ import annotations

import os

from e2e.conftest import native_payload, resolutions

from tcworker.testing import chaos

TASKS = int(os.environ.get("TCWORKER_CHAOS_TASKS", "96"))
RATE = float(os.environ.get("TCWORKER_CHAOS_RATE", "0.05"))
SEED = int(os.environ.get("TCWORKER_CHAOS_SEED", "12"))


async def test_chaos_random_faults_lose_nothing_and_the_worker_keeps_claiming(emulator, worker_process, tmp_path):
    # Given: a worker with capacity 8 and a mix of tasks, the queue injecting random faults
    emu = await emulator(claim_timeout_s=4.0)
    tasks = chaos.make_mix(TASKS)
    ids = await chaos.create_tasks(emu, tasks)
    faults = emu.faults.random(RATE, seed=SEED, hang_s=5.0, max_delay_s=1.5)
    # ... and one reclaim surely answers 409 while the queue still holds the run (as if cancelled)
    conflict = emu.faults.inject("reclaimTask", "status", status=409, count=1)
    worker = await worker_process(emu, **chaos.worker_config())

    # When: every task reached a final state
    unresolved = await chaos.wait_resolved(emu, ids, timeout_s=400)
    emu.faults.clear()

    # Then: the invariants hold against the queue's state
    summary = (f"{faults.total} faults injected ({dict(faults.by_kind())}) over {len(emu.calls)} calls; "
               f"runs: {dict(chaos.outcome_counts(emu, ids))}")
    print(summary)
    assert not unresolved, f"unresolved: {unresolved}\n{summary}"
    problems = chaos.check_invariants(emu, tasks)
    assert not problems, "\n".join(problems) + "\n" + summary
    assert faults.total >= TASKS * RATE, summary  # the suite exercised something
    assert conflict.hits == 1 and chaos.outcome_counts(emu, ids)["exception/claim-expired"] >= 1, summary
    assert worker.returncode is None, worker.log_text
    # ... the worker still claims: a last clean task completes
    last = await emu.create_task(payload=native_payload("echo last"))
    await emu.changes.until(lambda: emu.task_state(last) in chaos.FINAL_STATES, 60, "the last task")
    assert resolutions(emu, last) == [("completed", "completed")], worker.log_text[-5000:]
    # ... and nothing is left: no task directory, no task process
    tasks_dir = tmp_path / "tasks"
    await emu.changes.until(lambda: not chaos.leftovers(tasks_dir, [*ids, last]), 30,
                            f"no leftovers: {chaos.leftovers(tasks_dir, [*ids, last])}")
    await worker.stop()
    assert worker.returncode == 72, worker.log_text[-5000:]
    assert not [line for line in worker.lines if "Traceback" in line or "crashed" in line], worker.log_text
