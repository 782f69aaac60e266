"""``tcworker exec`` against hostile or broken input: never a traceback, never a write outside
the output folder, and a signal stops the task the way the worker would (exit 2, nothing left)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_exec import exec_task, marker, payload, survivors


@pytest.mark.parametrize("task_id", ["/tmp/abs-evil", "../../../evil", "x/../../y", ".."])
def test_a_task_id_that_is_a_path_is_refused(tmp_path: Path, task_id: str) -> None:
    result = exec_task(tmp_path, {"taskId": task_id, "payload": payload("echo hi")}, out=None)
    assert result.returncode == 2, result.stderr
    assert b"taskId" in result.stderr and b"Traceback" not in result.stderr
    assert not (tmp_path / "tcworker-out").exists()
    assert not Path("/tmp/abs-evil").exists()


def test_a_task_id_option_that_is_a_path_is_refused(tmp_path: Path) -> None:
    result = exec_task(tmp_path, payload("echo hi"), "--task-id", "x/../../../tmp/evil2", out=None)
    assert result.returncode == 2 and b"Traceback" not in result.stderr


@pytest.mark.parametrize("content", [
    b"\xff\xfe not utf-8 \x80",
    b"[" * 5000,
    # "billion laughs": 600 bytes that expand to ~10^9 nodes
    b"a: &a [x, x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n".encode() for i in range(8)),
])
def test_broken_task_files_are_refused_without_a_traceback(tmp_path: Path, content: bytes) -> None:
    task_file = tmp_path / "task.yml"
    task_file.write_bytes(content)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tcworker", "exec", str(task_file), "--out", str(tmp_path / "o")],
                            capture_output=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr
    assert time.monotonic() - started < 60  # refused before being expanded, not after minutes


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_task_like_the_worker_and_exits_2(tmp_path: Path, signum: int) -> None:
    token = marker()
    task_file = tmp_path / "task.json"
    task_file.write_text(__import__("json").dumps(payload(f"trap '' TERM; echo started; sleep {token}")))
    proc = subprocess.Popen([sys.executable, "-m", "tcworker", "exec", str(task_file), "--out", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the task runs
        if b"started" in line and b"echo" not in line:
            break
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert b"worker-shutdown" in stderr
    assert survivors(token) == []
    log = (tmp_path / "o" / "public/logs/live_backing.log").read_bytes()
    assert b"=== Task Finished ===" in log and b"interrupted by" in log
