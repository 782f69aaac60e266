"""End to end: upload faults (FM-14) and ``s3`` artifacts (FM-04, FM-07) through ``tcworker run``.

FM-14: one worker (capacity 1) runs four tasks in order; each task's fault is armed when that
task starts running (a queue state listener), so no task eats another's faults. Every artifact
is 16 KiB (>= 8 KiB: the body reaches storage instead of going inline). The worker's client
retries 5 times by itself; every transient fault is injected more often than that.

s3: a worker with ``createObjectArtifacts: false``: text-like files gzip-encoded, binaries and
compressed files identity; decoding per ``Content-Encoding`` gives the original bytes; an empty
file is sent with ``Content-Length: 0``.

Does not cover: artifact cases without faults (``test_worker_artifacts.py``).
"""

from __future__ import annotations

import gzip
import hashlib

from .conftest import download, native_payload, resolutions, task_log

BEYOND_CLIENT_RETRIES = 7  # the client makes 6 attempts per call


def _one_artifact(name: str = "public/data.bin") -> dict:
    return native_payload("head -c 16384 /dev/urandom > data.bin; sha256sum data.bin",
                          artifacts=[{"type": "file", "path": "data.bin", "name": name}])


async def test_fm14_upload_faults_retry_transients_and_name_the_artifact_on_permanent_ones(emulator, run_tasks):
    emu = await emulator()
    arm = {
        0: lambda: emu.faults.inject("storage.put", "status", status=503, count=BEYOND_CLIENT_RETRIES),
        1: lambda: emu.faults.inject("storage.put", "status", status=413, count=1000),
        2: lambda: emu.faults.inject("storage.put", "reset", count=BEYOND_CLIENT_RETRIES),
        3: lambda: emu.faults.inject("createArtifact", "status", status=500, count=BEYOND_CLIENT_RETRIES),
    }
    order: list[str] = []

    def on_event(event, task, run) -> None:
        if event == "task-running":
            emu.faults.clear()
            arm[len(order)]()
            order.append(task.task_id)

    emu.state.listeners.append(on_event)
    ids, worker = await run_tasks(emu, [_one_artifact() for _ in arm])
    assert order == ids  # capacity 1, FIFO: each task met its own fault
    for index in (0, 2, 3):  # transient: retried, uploaded byte-exact
        task_id = ids[index]
        assert resolutions(emu, task_id) == [("completed", "completed")], task_log(emu, task_id)
        data = await download(emu, task_id, "public/data.bin")
        assert hashlib.sha256(data).hexdigest() in task_log(emu, task_id)
    refused = ids[1]
    assert resolutions(emu, refused) == [("exception", "resource-unavailable")]
    text = task_log(emu, refused)
    assert "public/data.bin" in text and "413" in text
    assert not emu.runs(refused)[0].artifacts["public/data.bin"].present
    assert "Resolution: exception/resource-unavailable" in text


async def test_fm04_fm07_s3_artifacts_gzip_only_text_and_decode_to_the_original(emulator, run_tasks):
    emu = await emulator()
    files = ["log.txt", "data.json", "image.tar.lz4", "x.tar.zst", "b.tar.gz", "a.dmg"]
    script = "; ".join(f"head -c 20000 /dev/urandom | base64 > {name}" for name in files)
    payload = native_payload(script + "; : > empty.txt; sha256sum * > ../sums; mv ../sums sums.txt",
                             artifacts=[{"type": "file", "path": n, "name": f"public/{n}"}
                                        for n in [*files, "empty.txt", "sums.txt"]])
    ids, _ = await run_tasks(emu, [payload], createObjectArtifacts=False)
    task_id = ids[0]
    assert resolutions(emu, task_id) == [("completed", "completed")]
    sums = dict(reversed(line.split()) for line in _decoded(emu, task_id, "sums.txt").decode().splitlines())
    for name in files:
        blob = emu.artifact_blob(task_id, 0, f"public/{name}")
        expected = "gzip" if name in ("log.txt", "data.json") else "identity"
        assert (blob.content_encoding or "identity") == expected, name
        assert hashlib.sha256(_decoded(emu, task_id, name)).hexdigest() == sums[name], name
    assert _decoded(emu, task_id, "empty.txt") == b""
    empty = emu.runs(task_id)[0].artifacts["public/empty.txt"]
    assert empty.storage_type == "s3"
    # storage answers 411 to a chunked body: a 200 means an explicit Content-Length: 0
    puts = [c.status for c in emu.calls_to("storage.put") if c.params["blobId"] == empty.details["blobId"]]
    assert puts == [200]


def _decoded(emu, task_id: str, name: str) -> bytes:
    blob = emu.artifact_blob(task_id, 0, f"public/{name}")
    return gzip.decompress(blob.data) if blob.content_encoding == "gzip" else blob.data
