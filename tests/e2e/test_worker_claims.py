"""End to end: keeping claims and noticing cancellation, through the real ``tcworker run`` process.

Covers FM-11 (reclaim racing resolution), FM-20 (reclaim 500s beyond the client's own retries),
FM-12 (a) cancel of ``sleep 600`` (seen by reclaim 409) and (b) cancel during a slow artifact
upload (seen by status polling), status polling noticing a cancel, and a 403 on ``queue.status``
turning polling off.

Does not cover: shutdown by signal (``test_worker_shutdown.py``), upload faults.
"""

from __future__ import annotations

import psutil

from .conftest import native_payload, report_calls, resolutions, task_log


def _processes_with(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


async def test_fm11_reclaims_racing_resolutions_never_change_a_result(emulator, run_tasks):
    emu = await emulator(claim_timeout_s=2.0)
    # reclaims land, then their answers come late: some race the report of a ~1 s task
    emu.faults.inject("reclaimTask", "delay", when="after", delay_s=0.3, count=10_000)
    payloads = [native_payload(f"sleep {0.9 + 0.2 * (i % 3) / 2:.2f}; echo done-{i}") for i in range(30)]
    ids, worker = await run_tasks(emu, payloads, capacity=3)
    for i, task_id in enumerate(ids):
        assert resolutions(emu, task_id) == [("completed", "completed")], task_id
        assert f"done-{i}\n" in task_log(emu, task_id)
    assert emu.calls_to("reclaimTask"), "no reclaim raced anything: the test is void"
    assert not worker.matching(r" (ERROR|WARNING) |Traceback"), worker.log_text


async def test_fm20_reclaim_500s_beyond_the_client_retries_never_lapse_the_claim(emulator, run_tasks):
    emu = await emulator(claim_timeout_s=12.0)
    # the worker's client tries 6 times per call: 8 failures cost it one whole failed call
    fault = emu.faults.inject("reclaimTask", "status", status=500, count=8)
    ids, worker = await run_tasks(emu, [native_payload("sleep 11; echo survived")])
    assert resolutions(emu, ids[0]) == [("completed", "completed")]
    assert fault.hits == 8
    assert [c.status for c in emu.calls_to("reclaimTask")][-1] == 200
    assert "survived\n" in task_log(emu, ids[0])
    assert worker.matching(r"reclaim of .* failed \(attempt 1")


async def test_fm12a_cancel_of_sleep_600_kills_the_tree_uploads_the_log_and_reports_nothing(
        emulator, worker_process):
    emu = await emulator(claim_timeout_s=2.0)
    marker = "600.1201"
    task_id = await emu.create_task(payload=native_payload(
        f"echo partial > out.txt; sleep {marker}0 & sleep {marker}",
        artifacts=[{"type": "file", "path": "out.txt", "name": "public/out.txt"}]))
    next_id = await emu.create_task(payload=native_payload("echo next"))
    worker = await worker_process(emu, numberOfTasksToRun=2, statusPollIntervalSecs=3600)
    await emu.changes.until(lambda: _processes_with(marker), what="the task's sleep")
    await emu.changes.until(lambda: len(emu.calls_to("reclaimTask")) >= 1, what="a first reclaim")
    emu.cancel_task(task_id)
    assert await worker.wait() == 0
    assert _processes_with(marker) == []
    assert resolutions(emu, task_id) == [("exception", "canceled")]
    assert report_calls(emu, task_id) == []
    assert "aborting task" in task_log(emu, task_id)
    assert emu.artifact_blob(task_id, 0, "public/out.txt").data == b"partial\n"
    assert worker.matching(r"task-cancelled .*reason=reclaim-conflict .*source=reclaim")
    assert resolutions(emu, next_id) == [("completed", "completed")]


async def test_fm12b_cancel_during_a_slow_upload_stops_it_uploads_the_log_and_reports_nothing(
        emulator, worker_process):
    emu = await emulator()
    size = 20 * 1000 * 1000
    task_id = await emu.create_task(payload=native_payload(
        f"head -c {size} /dev/zero > big.bin",
        artifacts=[{"type": "file", "path": "big.bin", "name": "public/big.bin"}]))
    next_id = await emu.create_task(payload=native_payload("echo next"))
    emu.faults.throttle_storage(1024 * 1024)  # ~20 s for the body: far longer than the test waits
    worker = await worker_process(emu, numberOfTasksToRun=2, statusPollIntervalSecs=0.2)
    await emu.changes.until(lambda: emu.calls_to("storage.put"), what="the big upload to start")
    emu.cancel_task(task_id)
    await emu.changes.until(lambda: emu.task_state(next_id) == "running", timeout_s=15,
                            what="the next task, well before the upload could have ended")
    emu.faults.throttle_storage(None)
    assert await worker.wait() == 0
    assert resolutions(emu, task_id) == [("exception", "canceled")]
    assert report_calls(emu, task_id) == []
    assert not emu.runs(task_id)[0].artifacts["public/big.bin"].present  # upload stopped
    assert "artifact uploads stopped" in task_log(emu, task_id)
    assert resolutions(emu, next_id) == [("completed", "completed")]


async def test_status_polling_notices_a_cancel_long_before_any_reclaim(emulator, worker_process):
    emu = await emulator()  # claims last 1200 s: the first reclaim would come after 1020 s
    marker = "600.1202"
    task_id = await emu.create_task(payload=native_payload(f"sleep {marker}"))
    worker = await worker_process(emu, numberOfTasksToRun=1, statusPollIntervalSecs=0.2)
    await emu.changes.until(lambda: _processes_with(marker), what="the task's sleep")
    emu.cancel_task(task_id)
    assert await worker.wait() == 0
    assert worker.matching(r"task-cancelled .*reason=canceled .*source=status")
    assert emu.calls_to("reclaimTask") == [] and report_calls(emu, task_id) == []
    assert _processes_with(marker) == []
    assert "aborting task" in task_log(emu, task_id)


async def test_a_403_on_status_turns_polling_off_and_is_never_a_cancel(emulator, worker_process):
    emu = await emulator(anonymous_scopes=[])  # the worker's credentials lack queue:status
    task_id = await emu.create_task(payload=native_payload("sleep 1.5; echo still-here"))
    worker = await worker_process(emu, numberOfTasksToRun=1, statusPollIntervalSecs=0.2)
    assert await worker.wait() == 0
    assert resolutions(emu, task_id) == [("completed", "completed")]
    assert len(worker.matching(r"status polling off for " + task_id)) == 1
    assert [c.status for c in emu.calls_to("status")] == [403]
    assert "still-here\n" in task_log(emu, task_id)
