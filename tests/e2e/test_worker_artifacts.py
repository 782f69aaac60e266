"""End to end: artifact cases FM-01 to FM-07 and a payload for a disabled engine, through the real
``tcworker run`` process.

One worker (capacity 3) runs every task of the module (a process start costs ~0.6 s); each named
test then checks its own tasks: queue state, artifact bytes (downloaded through the official
client, or through ``getArtifact`` for names the object service's per-name credentials cannot
carry), and task log lines. The s3 variants (FM-04, FM-07) get a second worker.

Does not cover: upload faults (``test_worker_faults.py``).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone

import aiohttp
import pytest
import pytest_asyncio
import taskcluster.aio

from tcworker.testing.queue.clock import iso

from .conftest import WorkerFactory, download, native_payload, resolutions, start_emulator, task_log

BAD_NAMES = ["", "public/logs/../../../foo.log", "/abs/foo.log", "public//foo.log", "./foo.log",
             "public/café.txt", "public/new\nline.txt"]
ODD_NAMES = ["public/a+b.txt", "public/100%.log", "public/with space.txt", "public/https%3A%2F%2Fx/y.json"]
BINARY_FILES = ["image.tar.lz4", "x.tar.zst", "a.dmg", "b.tar.gz", "log.txt", "data.json"]


def _file(path: str, name: str, **extra) -> dict:
    return {"type": "file", "path": path, "name": name, **extra}


def _dir(path: str, name: str, **extra) -> dict:
    return {"type": "directory", "path": path, "name": name, **extra}


def _binary_script() -> str:
    """Writes every BINARY_FILES entry with 20 000 bytes of distinct content (>= 8 KiB: storage)."""
    return "; ".join(f"head -c 20000 /dev/urandom > {name}" for name in BINARY_FILES)


def _cases(emu) -> dict[str, tuple[dict, dict]]:
    """case key → (payload, task overrides)."""
    now = emu.clock.now()
    short = {"deadline": iso(now + 1800), "expires": iso(now + 3600)}
    cases: dict[str, tuple[dict, dict]] = {}
    for i, name in enumerate(BAD_NAMES):
        cases[f"fm01-{i}"] = (native_payload("echo hi > hello.log; echo ran-bad-name",
                                             artifacts=[_file("hello.log", name)]), {})
    cases["fm02"] = (native_payload(
        "mkdir out; echo a > out/a.txt; echo b > out/b.txt; echo l > log2.txt; "
        "(sleep 0.05; rm -f out/b.txt) &",
        artifacts=[_dir("out", "public/out"), _file("log2.txt", "public/log2.txt")]), {})
    cases["fm03-missing"] = (native_payload("true", artifacts=[_dir("crashinfo", "public/crashinfo")]), {})
    cases["fm03-optional"] = (native_payload(
        "true", artifacts=[_dir("crashinfo", "public/crashinfo", optional=True)]), {})
    cases["fm03-dir-as-file"] = (native_payload("mkdir adir", artifacts=[_file("adir", "public/adir")]), {})
    cases["fm04"] = (native_payload("mkdir -p out; : > out/empty.txt",
                                    artifacts=[_dir("out", "public/out")]), {})
    later = iso(now + 86400)
    cases["fm05-late"] = (native_payload("echo ran-fm05", artifacts=[_file("a.txt", "public/a.txt", expires=later)]), short)
    cases["fm05-missing"] = (native_payload("echo x > a.txt", artifacts=[_file("a.txt", "public/a.txt")]), short)
    cases["fm05-past"] = (native_payload("echo ran-fm05", artifacts=[
        _file("a.txt", "public/a.txt", expires=iso(now - 3600))]), short)
    cases["fm06"] = (native_payload(
        "; ".join(f"printf '%s' '{n}' > f{i}" for i, n in enumerate(ODD_NAMES)),
        artifacts=[_file(f"f{i}", n) for i, n in enumerate(ODD_NAMES)]), {})
    cases["fm07"] = (native_payload(_binary_script() + "; sha256sum * > ../sums.txt; mv ../sums.txt .",
                                    artifacts=[_file(n, f"public/{n}") for n in [*BINARY_FILES, "sums.txt"]]), {})
    cases["engine-off"] = ({"image": "ubuntu:24.04", "command": ["true"], "maxRunTime": 30}, {})
    return cases


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ran(tmp_path_factory):
    """Runs every case with one worker → ``(emu, {case key: task id}, worker)``."""
    emu = await start_emulator()
    factory = WorkerFactory(tmp_path_factory.mktemp("artifacts"))
    try:
        cases = _cases(emu)
        ids, worker = await factory.run_tasks(emu, [p for p, _ in cases.values()],
                                              task_overrides=[o for _, o in cases.values()], capacity=3)
        yield emu, dict(zip(cases, ids)), worker
    finally:
        await factory.stop_all()
        await emu.__aexit__(None, None, None)


def _artifact_names(emu, task_id: str) -> set[str]:
    return set(emu.runs(task_id)[0].artifacts)


async def _get_artifact(emu, task_id: str, name: str) -> bytes:
    """Bytes through ``getArtifact`` (anonymous): for names the per-name object credentials cannot carry."""
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(emu.client_options({}), session=session)
        answer = await queue.getArtifact(task_id, "0", name)
        async with aiohttp.ClientSession() as http, http.get(answer["url"]) as resp:
            assert resp.status == 200
            return await resp.read()


def _error_artifact(emu, task_id: str, name: str) -> dict:
    artifact = emu.runs(task_id)[0].artifacts[name]
    assert artifact.storage_type == "error", artifact
    return artifact.details


async def test_fm01_bad_artifact_names_resolve_malformed_payload_and_the_worker_keeps_claiming(ran):
    emu, ids, worker = ran
    for i, name in enumerate(BAD_NAMES):
        task_id = ids[f"fm01-{i}"]
        assert resolutions(emu, task_id) == [("exception", "malformed-payload")], name
        text = task_log(emu, task_id)
        assert "ran-bad-name" not in text  # refused before any command ran
        assert (repr(name) if name else "artifact") in text, text
    assert all(emu.task_state(t) in ("completed", "failed", "exception") for t in ids.values())
    assert not worker.matching(r"ERROR|Traceback")


async def test_fm02_a_vanishing_file_does_not_stop_the_other_uploads(ran):
    emu, ids, _ = ran
    task_id = ids["fm02"]
    assert await download(emu, task_id, "public/out/a.txt") == b"a\n"
    assert await download(emu, task_id, "public/log2.txt") == b"l\n"
    artifacts = emu.runs(task_id)[0].artifacts
    if "public/out/b.txt" in artifacts:  # vanished after collection: an error artifact
        assert artifacts["public/out/b.txt"].storage_type == "error"
    else:
        assert resolutions(emu, task_id) == [("completed", "completed")]


async def test_fm03_a_missing_artifact_fails_the_task_unless_optional(ran):
    emu, ids, _ = ran
    missing = ids["fm03-missing"]
    assert resolutions(emu, missing) == [("failed", "failed")]
    assert _error_artifact(emu, missing, "public/crashinfo")["reason"] == "file-missing-on-worker"
    assert "public/crashinfo" in task_log(emu, missing)
    assert resolutions(emu, ids["fm03-optional"]) == [("completed", "completed")]
    wrong_kind = ids["fm03-dir-as-file"]
    assert resolutions(emu, wrong_kind) == [("failed", "failed")]
    assert _error_artifact(emu, wrong_kind, "public/adir")["reason"] == "invalid-resource-on-worker"


async def test_fm04_a_zero_byte_artifact_downloads_as_zero_bytes(ran):
    emu, ids, _ = ran
    task_id = ids["fm04"]
    assert resolutions(emu, task_id) == [("completed", "completed")]
    assert await download(emu, task_id, "public/out/empty.txt") == b""


async def test_fm05_artifact_expiry_outside_the_task_is_refused_before_running(ran):
    emu, ids, _ = ran
    for key in ("fm05-late", "fm05-past"):
        task_id = ids[key]
        assert resolutions(emu, task_id) == [("exception", "malformed-payload")], key
        text = task_log(emu, task_id)
        assert "public/a.txt" in text and "ran-fm05" not in text
        assert "=== Task Starting ===" not in text
    task_id = ids["fm05-missing"]
    assert resolutions(emu, task_id) == [("completed", "completed")]
    task_expires = emu.status(task_id)["expires"]
    artifact = emu.runs(task_id)[0].artifacts["public/a.txt"]
    assert abs(artifact.expires - datetime.fromisoformat(task_expires.replace("Z", "+00:00")).timestamp()) < 1
    for name in ("public/logs/live.log", "public/logs/live_backing.log"):
        assert emu.runs(task_id)[0].artifacts[name].expires <= artifact.expires + 1


async def test_fm06_odd_artifact_names_round_trip(ran):
    emu, ids, _ = ran
    task_id = ids["fm06"]
    assert resolutions(emu, task_id) == [("completed", "completed")]
    async with taskcluster.aio.createSession() as session:
        queue = taskcluster.aio.Queue(emu.client_options({}), session=session)
        listed = {a["name"] for a in (await queue.listArtifacts(task_id, "0"))["artifacts"]}
    assert set(ODD_NAMES) <= listed
    for name in ODD_NAMES:
        assert await _get_artifact(emu, task_id, name) == name.encode()
    assert await download(emu, task_id, "public/a+b.txt") == b"public/a+b.txt"


async def test_fm07_object_artifacts_are_stored_identity_and_download_byte_exact(ran):
    emu, ids, _ = ran
    task_id = ids["fm07"]
    assert resolutions(emu, task_id) == [("completed", "completed")]
    sums = dict(reversed(line.split()) for line in
                (await download(emu, task_id, "public/sums.txt")).decode().splitlines())
    for name in BINARY_FILES:
        data = await download(emu, task_id, f"public/{name}")
        assert hashlib.sha256(data).hexdigest() == sums[name], name
        assert emu.artifact_blob(task_id, 0, f"public/{name}").content_encoding in (None, "identity")


async def test_a_payload_for_a_disabled_engine_resolves_malformed_payload_naming_it(ran):
    emu, ids, _ = ran
    task_id = ids["engine-off"]
    assert resolutions(emu, task_id) == [("exception", "malformed-payload")]
    text = task_log(emu, task_id)
    assert "docker engine is not enabled" in text, text
