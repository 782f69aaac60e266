"""Tests of :mod:`tcworker.queue.upload` against the queue emulator: both storage types, every
artifact kind, odd names, zero-byte bodies (FM-04), content encodings (FM-07), vanishing files
(FM-02), upload faults (FM-14), a resolved run (409) and credential rotation.

Bodies that must reach storage are >= 8192 bytes (smaller object bodies go ``dataInline``); the
client's own ``maxRetries`` is 1, so a fault injected more often than that exercises our retries.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tcworker.artifacts import (
    DataArtifact,
    ErrorArtifact,
    LinkArtifact,
    ReferenceArtifact,
    collect,
)
from tcworker.config import WorkerConfig
from tcworker.errors import ResourceUnavailable
from tcworker.payloads.common import ArtifactSpec
from tcworker.queue.client import ClientFactory, WorkerQueue
from tcworker.queue.upload import ArtifactUploader, ArtifactUploadFailed, RetryPolicy
from tcworker.testing.fixtures import queue_emulator  # noqa: F401
from tcworker.testing.queue import DEFAULT_TASK_QUEUE_ID

FAST_RETRY = RetryPolicy(attempts=4, base_delay_s=0.001, max_delay_s=0.005)
BIG = 8192 + 1000
WORKER = {"workerGroup": "test-group", "workerId": "test-worker", "tasks": 1}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Run:
    """One claimed run on the emulator, and what a test needs around it."""

    def __init__(self, emu, clients: ClientFactory, claim: dict, task_dir: Path) -> None:
        self.emu, self.clients, self.claim = emu, clients, claim
        self.task_id = claim["status"]["taskId"]
        self.run_id = int(claim["runId"])
        self.creds = dict(claim["credentials"])
        self.task_dir = task_dir
        expires = claim["task"]["expires"]
        self.expires = datetime.fromisoformat(expires.replace("Z", "+00:00")) - timedelta(minutes=1)

    def uploader(self, *, object_artifacts: bool = True, concurrency: int = 4, warn=None) -> ArtifactUploader:
        return ArtifactUploader(self.clients, task_id=self.task_id, run_id=self.run_id,
                                credentials=lambda: self.creds, object_artifacts=object_artifacts,
                                concurrency=concurrency, retry=FAST_RETRY, warn=warn)

    def files(self, contents: dict[str, bytes]) -> list[DataArtifact]:
        """Write ``{relative path: bytes}`` under the task dir and collect them as file artifacts
        published as ``public/<path>``."""
        specs = []
        for rel, data in contents.items():
            path = self.task_dir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            specs.append(ArtifactSpec(f"public/{rel}", rel, "file", self.expires, None, None, False))
        arts = collect(specs, self.task_dir, task_dir=self.task_dir)
        assert all(isinstance(a, DataArtifact) for a in arts), arts
        return arts  # type: ignore[return-value]

    async def listed(self) -> dict[str, dict]:
        q = self.clients.queue(self.emu.root_credentials)
        answer = await q.listArtifacts(self.task_id, str(self.run_id))
        return {a["name"]: a for a in answer["artifacts"]}

    async def download(self, name: str) -> tuple[bytes, str | None, bytes]:
        """GET the artifact's storage URL without Accept-Encoding → (decoded bytes, encoding, raw)."""
        q = self.clients.queue({})
        where = await q.getArtifact(self.task_id, str(self.run_id), name)
        async with aiohttp.ClientSession(auto_decompress=False) as plain:
            async with plain.get(where["url"], skip_auto_headers=["Accept-Encoding"]) as resp:
                assert resp.status == 200, (name, resp.status)
                raw = await resp.read()
                encoding = resp.headers.get("Content-Encoding")
        return (gzip.decompress(raw) if encoding == "gzip" else raw), encoding, raw


@pytest_asyncio.fixture
async def run(queue_emulator, tmp_path):  # noqa: F811
    emu = queue_emulator
    await emu.create_task()
    async with ClientFactory.open(emu.root_url, max_retries=1) as clients:
        worker = clients.queue(emu.worker_credentials())
        claim = (await worker.claimWork(DEFAULT_TASK_QUEUE_ID, WORKER))["tasks"][0]
        task_dir = tmp_path / "task"
        task_dir.mkdir()
        yield Run(emu, clients, claim, task_dir)


ODD_NAMES = {
    "a+b.txt": b"plus",
    "100%.log": b"percent " * 2000,
    "with space.txt": b"space",
    "https%3A%2F%2Fx/y.json": b'{"url": true}',
    "empty.txt": b"",
    "big.bin": os.urandom(BIG),
}


@pytest.mark.parametrize("object_artifacts", [True, False], ids=["object", "s3"])
async def test_fm06_odd_names_and_sizes_round_trip_through_list_and_download(run, object_artifacts):
    """Given files with odd names, an empty one and a big one; when uploaded as object or s3
    artifacts; then listArtifacts lists each exact name with its storage type, and each download
    (decoded per Content-Encoding) has the sha256 the uploader reported."""
    arts = run.files(ODD_NAMES)
    results = await run.uploader(object_artifacts=object_artifacts).upload_all(arts)
    storage = "object" if object_artifacts else "s3"
    assert [(r.name, r.status, r.storage_type) for r in results] == [
        (f"public/{rel}", "uploaded", storage) for rel in ODD_NAMES]
    listed = await run.listed()
    assert set(listed) == {f"public/{rel}" for rel in ODD_NAMES}
    for rel, data in ODD_NAMES.items():
        result = next(r for r in results if r.name == f"public/{rel}")
        assert (result.sha256, result.size_bytes) == (sha(data), len(data))
        assert listed[result.name]["storageType"] == storage
        got, _, _ = await run.download(result.name)
        assert sha(got) == sha(data), rel


@pytest.mark.parametrize("object_artifacts", [True, False], ids=["object", "s3"])
async def test_fm04_zero_byte_artifact_is_stored_and_downloads_as_zero_bytes(run, object_artifacts):
    """The emulator's storage answers 411 to a PUT without Content-Length (chunked), so an s3
    upload succeeding proves ``Content-Length: 0``."""
    arts = run.files({"out/empty.txt": b""})
    [result] = await run.uploader(object_artifacts=object_artifacts).upload_all(arts)
    assert result.status == "uploaded" and result.sha256 == sha(b"")
    assert run.emu.artifact_blob(run.task_id, run.run_id, "public/out/empty.txt").data == b""
    if not object_artifacts:
        [put] = run.emu.calls_to("storage.put")
        assert put.status == 200
    got, _, raw = await run.download("public/out/empty.txt")
    assert got == b"" and raw == b""


FM07 = ["image.tar.lz4", "x.tar.zst", "a.dmg", "b.tar.gz", "log.txt", "data.json"]


@pytest.mark.parametrize("object_artifacts", [True, False], ids=["object", "s3"])
async def test_fm07_content_encoding_and_sha256_round_trip(run, object_artifacts):
    """Object artifacts are stored identity-encoded; s3 ones gzip only text-like types; either
    way, a download without Accept-Encoding decoded per Content-Encoding has the original sha256."""
    text = b"line of text\n" * 1000
    contents = {name: (text if name in ("log.txt", "data.json") else os.urandom(BIG)) for name in FM07}
    arts = run.files(contents)
    results = await run.uploader(object_artifacts=object_artifacts).upload_all(arts)
    for name, data in contents.items():
        result = next(r for r in results if r.name == f"public/{name}")
        blob = run.emu.artifact_blob(run.task_id, run.run_id, f"public/{name}")
        gzipped = not object_artifacts and name in ("log.txt", "data.json")
        assert (blob.content_encoding or "identity") == ("gzip" if gzipped else "identity"), name
        assert result.content_encoding == ("gzip" if gzipped else "identity")
        got, encoding, raw = await run.download(f"public/{name}")
        assert sha(got) == sha(data) == result.sha256, name
        if gzipped:
            assert encoding == "gzip" and len(raw) < len(data)


async def test_error_link_and_reference_artifacts(run):
    """Error artifacts carry reason and message; a link serves its target's bytes (uploaded
    first even when listed first); a reference redirects to its URL."""
    [data] = run.files({"live_backing.log": b"log\n"})
    items = [
        LinkArtifact("public/logs/live.log", "public/live_backing.log", run.expires, "text/plain"),
        data,
        ErrorArtifact("public/missing", "file-missing-on-worker", "not there", run.expires, True),
        ReferenceArtifact("public/ref", "https://example.com/x", run.expires, "text/plain"),
    ]
    results = await run.uploader().upload_all(items)
    assert [(r.storage_type, r.status) for r in results] == [
        ("link", "uploaded"), ("object", "uploaded"), ("error", "uploaded"), ("reference", "uploaded")]
    assert results[2].fails_task and not results[0].fails_task
    listed = await run.listed()
    assert {n: a["storageType"] for n, a in listed.items()} == {
        "public/logs/live.log": "link", "public/live_backing.log": "object",
        "public/missing": "error", "public/ref": "reference"}
    got, _, _ = await run.download("public/logs/live.log")
    assert got == b"log\n"
    anon = run.clients.queue({})
    content = await anon.artifact(run.task_id, str(run.run_id), "public/missing")
    assert content == {"storageType": "error", "reason": "file-missing-on-worker", "message": "not there"}
    ref = await anon.getArtifact(run.task_id, str(run.run_id), "public/ref")
    assert ref["url"] == "https://example.com/x"


async def test_fm02_file_vanishing_before_upload_becomes_error_artifact_others_uploaded(run):
    """Given a directory artifact whose ``b.txt`` is deleted after collect, and a file artifact;
    then the others are uploaded, b.txt is an error artifact, and nothing raises."""
    out = run.task_dir / "out"
    out.mkdir()
    (out / "a.txt").write_bytes(b"a" * BIG)
    (out / "b.txt").write_bytes(b"b" * BIG)
    (run.task_dir / "log2.txt").write_bytes(b"log2")
    specs = [ArtifactSpec("public/out", "out", "directory", run.expires, None, None, False),
             ArtifactSpec("public/log2.txt", "log2.txt", "file", run.expires, None, None, False)]
    arts = collect(specs, run.task_dir, task_dir=run.task_dir)
    (out / "b.txt").unlink()
    warnings: list[str] = []
    results = await run.uploader(warn=warnings.append).upload_all(arts)
    by_name = {r.name: r for r in results}
    assert by_name["public/out/b.txt"].status == "replaced-by-error"
    assert not by_name["public/out/b.txt"].fails_task  # a directory member, not a declared file
    assert by_name["public/out/a.txt"].status == by_name["public/log2.txt"].status == "uploaded"
    listed = await run.listed()
    assert listed["public/out/b.txt"]["storageType"] == "error"
    assert any("public/out/b.txt" in w for w in warnings)


async def test_required_file_vanishing_before_upload_fails_the_task(run):
    [art] = run.files({"result.txt": b"r"})
    (run.task_dir / "result.txt").unlink()
    [result] = await run.uploader().upload_all([art])
    assert (result.status, result.fails_task) == ("replaced-by-error", True)


@pytest.mark.parametrize("object_artifacts", [True, False], ids=["object", "s3"])
async def test_fm14_storage_503_more_than_client_retries_then_ok(run, object_artifacts):
    arts = run.files({"big.bin": os.urandom(BIG)})
    fault = run.emu.faults.inject("storage.put", "status", status=503, count=3)
    warnings: list[str] = []
    [result] = await run.uploader(object_artifacts=object_artifacts, warn=warnings.append).upload_all(arts)
    assert result.status == "uploaded" and fault.hits == 3
    assert any("retrying" in w for w in warnings)
    assert run.emu.artifact_blob(run.task_id, run.run_id, "public/big.bin").data == (run.task_dir / "big.bin").read_bytes()


@pytest.mark.parametrize("object_artifacts", [True, False], ids=["object", "s3"])
async def test_fm14_connection_reset_during_put_is_retried(run, object_artifacts):
    arts = run.files({"big.bin": os.urandom(BIG)})
    fault = run.emu.faults.inject("storage.put", "reset", count=3)
    [result] = await run.uploader(object_artifacts=object_artifacts).upload_all(arts)
    assert result.status == "uploaded" and fault.hits == 3


@pytest.mark.parametrize("object_artifacts", [True, False], ids=["object", "s3"])
async def test_fm14_create_artifact_500_more_than_client_retries_then_ok(run, object_artifacts):
    arts = run.files({"big.bin": os.urandom(BIG)})
    fault = run.emu.faults.inject("createArtifact", "status", status=500, count=4)
    [result] = await run.uploader(object_artifacts=object_artifacts).upload_all(arts)
    assert result.status == "uploaded" and fault.hits == 4
    assert "public/big.bin" in await run.listed()


@pytest.mark.parametrize("object_artifacts", [True, False], ids=["object", "s3"])
async def test_fm14_permanent_413_fails_that_artifact_only_with_name_and_status(run, object_artifacts):
    """Given storage answering 413 to the first PUT (concurrency 1, bad artifact first); then the
    other artifact is still uploaded and ArtifactUploadFailed (resource-unavailable) names the
    artifact and the status."""
    arts = run.files({"too-big.bin": os.urandom(BIG), "fine.bin": os.urandom(BIG)})
    run.emu.faults.inject("storage.put", "status", status=413, count=1)
    with pytest.raises(ArtifactUploadFailed) as failed:
        await run.uploader(object_artifacts=object_artifacts, concurrency=1).upload_all(arts)
    err = failed.value
    assert isinstance(err, ResourceUnavailable) and err.reason == "resource-unavailable"
    assert "public/too-big.bin" in str(err) and "413" in str(err)
    assert [r.name for r in err.failures] == ["public/too-big.bin"]
    assert err.failures[0].http_status == 413
    assert {r.name: r.status for r in err.results}["public/fine.bin"] == "uploaded"


async def test_fm14_create_artifact_500_forever_gives_resource_unavailable(run):
    arts = run.files({"x.bin": os.urandom(BIG)})
    run.emu.faults.inject("createArtifact", "status", status=500, count=100)
    with pytest.raises(ArtifactUploadFailed) as failed:
        await run.uploader().upload_all(arts)
    assert "public/x.bin" in str(failed.value) and "HTTP 500" in str(failed.value)
    # 4 attempts of ours, each with the client's 1 retry
    assert len(run.emu.calls_to("createArtifact")) == 8


async def test_409_after_the_run_was_resolved_ends_uploads_quietly(run):
    """Given the run already reported completed; then every upload ends as ``run-resolved``,
    nothing raises, and after the first 409 no further createArtifact is sent."""
    arts = run.files({"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    await run.clients.queue(run.creds).reportCompleted(run.task_id, str(run.run_id))
    uploader = run.uploader(concurrency=1)
    results = await uploader.upload_all(arts)
    assert [r.status for r in results] == ["run-resolved"] * 3
    assert uploader.run_resolved
    assert len(run.emu.calls_to("createArtifact")) == 1


async def test_409_while_running_is_a_failure_not_a_cancellation(run):
    """Given an artifact already created with another content type (an incompatible repeat);
    then the 409 is a permanent failure, because the run is still running."""
    [art] = run.files({"a.txt": b"a"})
    await run.clients.queue(run.creds).createArtifact(run.task_id, str(run.run_id), "public/a.txt", {
        "storageType": "s3", "contentType": "application/x-other", "expires": art.expires})
    with pytest.raises(ArtifactUploadFailed) as failed:
        await run.uploader().upload_all([art])
    assert failed.value.failures[0].http_status == 409


async def test_uploads_within_25_minutes_of_an_exception_are_accepted(run):
    arts = run.files({"a.txt": b"a"})
    await run.clients.queue(run.creds).reportException(run.task_id, str(run.run_id), {"reason": "worker-shutdown"})
    [result] = await run.uploader().upload_all(arts)
    assert result.status == "uploaded"


async def test_each_call_uses_the_latest_task_credentials(run):
    """Given a reclaim between two uploads; then the second upload signs with the new clientId."""
    [first] = run.files({"one.txt": b"1"})
    [second] = run.files({"two.txt": b"2"})
    uploader = run.uploader()
    await uploader.upload(first)
    answer = await run.clients.queue(run.creds).reclaimTask(run.task_id, str(run.run_id))
    run.creds = dict(answer["credentials"])
    await uploader.upload(second)
    creates = run.emu.calls_to("createArtifact")
    assert [c.params["name"] for c in creates] == ["public/one.txt", "public/two.txt"]
    assert creates[0].client_id == run.claim["credentials"]["clientId"]
    assert creates[1].client_id == answer["credentials"]["clientId"]


async def test_explicit_gzip_encoding_for_s3_is_honoured_and_object_ignores_it(run, tmp_path):
    (run.task_dir / "data.bin").write_bytes(b"\0" * BIG)
    spec = ArtifactSpec("public/data.bin", "data.bin", "file", run.expires, None, "gzip", False)
    [art] = collect([spec], run.task_dir, task_dir=run.task_dir)
    [s3] = await run.uploader(object_artifacts=False).upload_all([art])
    assert s3.content_encoding == "gzip"
    got, encoding, raw = await run.download("public/data.bin")
    assert encoding == "gzip" and got == b"\0" * BIG and len(raw) < 200


async def test_the_callers_time_budget_cancels_a_hung_upload(run):
    """Given storage that never answers; when the caller's budget (``asyncio.timeout``) ends;
    then the upload is cancelled (not retried as if the timeout were a network error)."""
    arts = run.files({"big.bin": os.urandom(BIG)})
    run.emu.faults.inject("storage.put", "hang", count=100)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await run.uploader().upload_all(arts)
    assert len(run.emu.calls_to("storage.put")) == 1


async def test_for_run_follows_the_run_queue_credentials_and_config(queue_emulator, tmp_path):  # noqa: F811
    """Given an uploader built with ``for_run`` from a RunQueue and an s3-mode config; when the run
    is reclaimed; then the next upload signs with the new task credentials and uses s3."""
    emu = queue_emulator
    task_id = await emu.create_task()
    config = WorkerConfig.from_mapping({"createObjectArtifacts": False, "uploadConcurrency": 2}, environ={})
    async with ClientFactory.open(emu.root_url, max_retries=0) as clients:
        worker = WorkerQueue(clients, worker_pool_id=DEFAULT_TASK_QUEUE_ID, worker_group="test-group",
                             worker_id="test-worker", credentials=emu.worker_credentials())
        [claim] = await worker.claim_work(1)
        run_queue = worker.run_queue(claim)
        uploader = ArtifactUploader.for_run(run_queue, config, retry=FAST_RETRY)
        await run_queue.reclaim()
        (tmp_path / "a.txt").write_bytes(b"a")
        expires = claim.taken_until + timedelta(days=1)
        spec = ArtifactSpec("public/a.txt", "a.txt", "file", expires, None, None, False)
        [result] = await uploader.upload_all(collect([spec], tmp_path, task_dir=tmp_path))
        assert (result.status, result.storage_type) == ("uploaded", "s3")
        [create] = emu.calls_to("createArtifact")
        assert create.client_id == run_queue.credentials["clientId"] != claim.credentials["clientId"]
        await run_queue.report_completed()
        [late] = await uploader.upload_all([ErrorArtifact("public/e", "file-missing-on-worker", "m", expires, False)])
        assert late.status == "run-resolved" and emu.task_state(task_id) == "completed"
