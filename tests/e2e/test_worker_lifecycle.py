"""End to end: the life cycle of the real ``tcworker run`` process against the emulator.

Covers: ``numberOfTasksToRun`` (exit 0) with one-line JSON events per claim and resolution, idle
timeout (exit 68), low disk (no claim, a log line saying why), the boot sweep of a crashed
worker's leftovers, and the README's config example.

Does not cover: artifacts (``test_worker_artifacts.py``), claims and cancellation
(``test_worker_claims.py``), signals (``test_worker_shutdown.py``).
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import yaml

from .conftest import native_payload, resolutions, task_log

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_given_three_tasks_and_a_limit_of_three_then_all_complete_exit_0_with_json_events(
        emulator, run_tasks):
    emu = await emulator()
    ids, worker = await run_tasks(
        emu, [native_payload(f"echo task-{i}") for i in range(3)], capacity=2, logFormat="json")
    for i, task_id in enumerate(ids):
        assert resolutions(emu, task_id) == [("completed", "completed")]
        assert f"task-{i}\n" in task_log(emu, task_id)
    events = [json.loads(line) for line in worker.lines]  # every line is one JSON object
    claimed = {e["taskId"]: e for e in events if e.get("event") == "task-claimed"}
    resolved = {e["taskId"]: e for e in events if e.get("event") == "task-resolved"}
    assert set(claimed) == set(resolved) == set(ids)
    for event in resolved.values():
        assert event["runId"] == 0 and event["resolution"] == "completed"
        assert isinstance(event["durationSecs"], float) and event["durationSecs"] > 0
    assert len(emu.calls_to("reportCompleted")) == 3


async def test_given_no_work_and_an_idle_timeout_then_exit_68_without_claims(emulator, worker_process):
    emu = await emulator()
    worker = await worker_process(emu, idleTimeoutSecs=1)
    assert await worker.wait() == 68
    assert worker.matching(r"idle for 1s")
    assert all(c.response_body == {"tasks": []} for c in emu.calls_to("claimWork"))


async def test_given_too_little_disk_then_no_claim_and_the_log_says_why(emulator, worker_process):
    emu = await emulator()
    task_id = await emu.create_task(payload=native_payload("true"))
    worker = await worker_process(emu, requiredDiskSpaceMegabytes=10**9)
    line = await worker.wait_for_line(r"worker-idle reason=low-disk")
    assert "requiredMB=1000000000" in line and "freeMB=" in line
    worker.send_signal(signal.SIGTERM)
    assert await worker.wait() == 72
    assert emu.calls_to("claimWork") == []
    assert emu.task_state(task_id) == "pending"


async def test_given_leftovers_of_a_crashed_worker_then_boot_sweeps_them(emulator, worker_process, tmp_path):
    emu = await emulator()
    tasks_dir = tmp_path / "tasks"
    stale_task = tasks_dir / "tcw-task-AAAAAAAAAAAAAAAAAAAAAA-0-x1y2"
    stale_log = tasks_dir / "tcw-log-abc123"
    foreign = tasks_dir / "not-ours"
    for folder in (stale_task, stale_log, foreign):
        folder.mkdir(parents=True)
        (folder / "file").write_text("left behind")
    task_id = await emu.create_task(payload=native_payload("ls .. > seen.txt",
                                    artifacts=[{"type": "file", "path": "seen.txt", "name": "public/seen.txt"}]))
    worker = await worker_process(emu, numberOfTasksToRun=1)
    assert await worker.wait() == 0
    assert not stale_task.exists() and not stale_log.exists()
    assert (foreign / "file").read_text() == "left behind"  # not carrying our prefix: kept
    seen = emu.artifact_blob(task_id, 0, "public/seen.txt").data.decode().split()
    assert "tcw-task-AAAAAAAAAAAAAAAAAAAAAA-0-x1y2" not in seen and "not-ours" in seen
    assert sorted(p.name for p in tasks_dir.iterdir()) == ["not-ours"]  # the run cleaned up too


async def test_given_the_readme_config_example_then_a_worker_runs_a_task(emulator, worker_process, tmp_path):
    emu = await emulator()
    block = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert block, "README has no yaml config example"
    example = yaml.safe_load(block.group(1))
    pool = f"{example['provisionerId']}/{example['workerType']}"
    creds = emu.worker_credentials(pool, example["workerGroup"], example["workerId"])
    config = {**example, "rootURL": emu.root_url, **creds}
    assert set(config) == set(example)  # exactly the example's keys
    task_id = await emu.create_task(payload=native_payload("echo from readme"),
                                    taskQueueId=pool)
    worker = await worker_process(emu, config=config, start=False)
    await worker.start(cwd=tmp_path)  # tasksDir defaults to ./tasks
    await emu.changes.until(lambda: emu.task_state(task_id) == "completed", what="task completed")
    worker.send_signal(signal.SIGTERM)
    assert await worker.wait() == 72
    assert "from readme\n" in task_log(emu, task_id)
