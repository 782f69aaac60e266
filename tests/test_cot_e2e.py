"""Chain of Trust end to end: ``tcworker run`` (multiuser native engine) against the emulator, the
certificate verified by scriptworker's own code and validated against its schema.

scriptworker (PyPI) pins much of what we use and brings ``rfc3987-syntax``, which makes every
``jsonschema`` import take seconds, so it lives in its own venv (``$TCWORKER_SW_VENV``, default
``/tmp/sw-venv``), created here on first use (under a file lock, xdist-safe). Its verification
functions run there in a subprocess on the downloaded artifacts: ``verify_link_ed25519_cot_signature``
(signature with our public key), ``verify_generic_worker_task`` and ``download_cot_artifact``
(sha256 of each artifact; the download itself is stubbed, the files are already in place).
Locally the tests skip when the venv cannot be made; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_asyncio

from e2e.conftest import WorkerFactory, start_emulator, task_log
from tcworker import cot
from tcworker.testing.shared import require_shared

pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(os.geteuid() != 0, reason="the multiuser engine needs root")]

SW_VENV = Path(os.environ.get("TCWORKER_SW_VENV", "/tmp/sw-venv"))
SW_REQUIREMENT = "scriptworker>=63,<64"
X_SHA256 = "8308d593eb56527137532595a60255a3fcfbe4b6b068e29b22d99742bad80f6f"  # "test artifact\n"

VERIFY = r"""
import asyncio, json, sys
import taskcluster.aio
from scriptworker.constants import DEFAULT_CONFIG
from scriptworker.context import Context
from scriptworker.cot import verify
from scriptworker.exceptions import CoTError, ScriptWorkerEd25519Error

async def no_download(*_args, **_kwargs):  # the artifacts are already in the link's cot_dir
    return []

verify.download_artifacts = no_download
answers = []
for job in json.load(sys.stdin):
    context = Context()
    context.config = dict(DEFAULT_CONFIG, work_dir=job["work_dir"], verify_cot_signature=True,
                          ed25519_public_keys={"generic-worker": [job["public_key"]],
                                               "docker-worker": [job["public_key"]]})
    context.queue = taskcluster.aio.Queue({"rootUrl": "https://tc.example.com"})
    context.task = {"provisionerId": "scriptworker-k8s", "workerType": "signing", "taskGroupId": job["task_id"],
                    "dependencies": [job["task_id"]], "scopes": [], "payload": {}, "metadata": {}}
    chain = verify.ChainOfTrust(context, "signing", task_id="downstreamsigningtask00")
    link = verify.LinkOfTrust(context, "build", job["task_id"])
    try:
        link.task = job["task"]
        chain.links.append(link)
        verify.verify_link_ed25519_cot_signature(
            chain, link, link.get_artifact_full_path("public/chain-of-trust.json"),
            link.get_artifact_full_path("public/chain-of-trust.json.sig"))
        asyncio.run(verify.verify_generic_worker_task(chain, link))
        for name in job["artifacts"]:
            asyncio.run(verify.download_cot_artifact(chain, job["task_id"], name))
        answers.append({"ok": True, "worker_impl": link.worker_impl})
    except (CoTError, ScriptWorkerEd25519Error) as err:
        answers.append({"ok": False, "error": str(err)})
print(json.dumps(answers))
"""


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: required)")
    pytest.skip(reason)


def _sw_ready() -> bool:
    python = SW_VENV / "bin" / "python"
    return python.exists() and subprocess.run(
        [str(python), "-c", "import scriptworker.cot.verify"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def scriptworker_python() -> Path:
    """The python of a venv with scriptworker installed (made here when missing)."""
    SW_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(str(SW_VENV) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _sw_ready():
            shutil.rmtree(SW_VENV, ignore_errors=True)
            steps = ([sys.executable, "-m", "venv", str(SW_VENV)],
                     [str(SW_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                      "--disable-pip-version-check", SW_REQUIREMENT])
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=900)
                if done.returncode != 0:
                    _fail_or_skip(f"cannot install {SW_REQUIREMENT} into {SW_VENV}: {done.stderr[-2000:]}")
    return SW_VENV / "bin" / "python"


def _additional_data_script() -> str:
    lines = ["{", '  "foo": "bar1",', '  "task": {', '    "foo": "bar2",', '    "schedulerId": "fake-scheduler-id"',
             "  }", "}"]
    return "printf '%s\\n' " + " ".join(f"'{line}'" for line in lines) + " > chain-of-trust-additional-data.json"


def _payload() -> dict:
    """gw-chain-of-trust-protected-names: decoys under reserved names, additional data."""
    return {
        "command": [
            ["echo", "goodbye world!"],
            ["mkdir", "-p", "SampleArtifacts/_", "public/logs"],
            ["/bin/bash", "-c", "printf 'test artifact\\n' > SampleArtifacts/_/X.txt"],
            ["cp", "SampleArtifacts/_/X.txt", "public/logs/live.log"],
            ["cp", "SampleArtifacts/_/X.txt", "public/chain-of-trust.json"],
            ["cp", "SampleArtifacts/_/X.txt", "public/Y.txt"],
            ["/bin/bash", "-c", _additional_data_script()],
        ],
        "maxRunTime": 60,
        "osGroups": [],  # scriptworker tells generic-worker tasks by osGroups or mounts
        "artifacts": [
            {"type": "file", "path": "SampleArtifacts/_/X.txt", "name": "public/build/X.txt"},
            {"type": "file", "path": "public/logs/live.log"},
            {"type": "file", "path": "public/chain-of-trust.json"},
            {"type": "file", "path": "public/Y.txt"},
        ],
        "features": {"chainOfTrust": True},
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def certified():
    """One multiuser worker ran one chain-of-trust task → ``(emu, task_id, public_key, artifacts)``
    with ``artifacts``: name → stored bytes (encoding undone)."""
    folder = Path(tempfile.mkdtemp(prefix="tcw-cot-e2e-"))
    folder.chmod(0o711)  # task users traverse it to their task directory
    emu = await start_emulator()
    factory = WorkerFactory(folder)
    try:
        public = cot.write_new_keypair(folder / "cot.key")
        task_id = await emu.create_task(payload=_payload(), scopes=[])
        worker = await factory(emu, numberOfTasksToRun=1, runTasksAsCurrentUser=False,
                               ed25519SigningKeyLocation=str(folder / "cot.key"))
        assert await worker.wait() == 0, worker.log_text
        artifacts = {}
        for name, art in emu.runs(task_id)[0].artifacts.items():
            if art.storage_type in ("object", "s3"):
                blob = emu.artifact_blob(task_id, 0, name)
                artifacts[name] = gzip.decompress(blob.data) if blob.content_encoding == "gzip" else blob.data
        yield emu, task_id, public, artifacts
    finally:
        await factory.stop_all()
        await emu.__aexit__(None, None, None)
        shutil.rmtree(folder, ignore_errors=True)


async def _scriptworker_verify(python: Path, jobs: list[dict]) -> list[dict]:
    proc = await asyncio.create_subprocess_exec(str(python), "-c", VERIFY, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(json.dumps(jobs).encode())
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


def _job(root: Path, task_id: str, public: str, artifacts: dict[str, bytes], doc: dict) -> dict:
    """Lay the artifacts out where scriptworker expects a link's downloads."""
    for name, data in artifacts.items():
        path = root / "cot" / task_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    names = sorted(n for n in doc["artifacts"])
    return {"work_dir": str(root), "task_id": task_id, "task": doc["task"], "public_key": public, "artifacts": names}


async def test_given_a_certified_run_then_scriptworker_verifies_it_and_refuses_tampering(
        certified, scriptworker_python, tmp_path):
    emu, task_id, public, artifacts = certified
    doc = json.loads(artifacts["public/chain-of-trust.json"])
    intact = _job(tmp_path / "intact", task_id, public, artifacts, doc)
    tampered_artifact = _job(tmp_path / "artifact", task_id, public,
                             {**artifacts, "public/Y.txt": b"test artifact!\n"}, doc)
    changed = artifacts["public/chain-of-trust.json"].replace(X_SHA256.encode(), b"0" * 64)
    tampered_doc = _job(tmp_path / "doc", task_id, public,
                        {**artifacts, "public/chain-of-trust.json": changed}, doc)
    answers = await _scriptworker_verify(scriptworker_python, [intact, tampered_artifact, tampered_doc])
    assert answers[0] == {"ok": True, "worker_impl": "generic-worker"}, answers[0]
    assert not answers[1]["ok"] and "BAD HASH" in answers[1]["error"] and "public/Y.txt" in answers[1]["error"]
    assert not answers[2]["ok"] and "ed25519 cot signature doesn" in answers[2]["error"]


async def test_the_certificate_follows_the_schema_and_certifies_every_data_artifact(certified):
    import jsonschema

    _emu, task_id, public, artifacts = certified
    schema = json.loads((require_shared() / "schemas/peers/scriptworker/cot_v1_schema.json").read_text())
    data = artifacts["public/chain-of-trust.json"]
    doc = json.loads(data)
    jsonschema.validate(doc, schema)
    assert cot.verify(public, data, artifacts["public/chain-of-trust.json.sig"])
    assert data.startswith(b'{\n  "artifacts": {\n')  # merged with additional data: sorted keys
    assert doc["chainOfTrustVersion"] == 1 and doc["taskId"] == task_id and doc["runId"] == 0
    assert (doc["workerGroup"], doc["workerId"]) == ("e2e-group", "e2e-worker")
    assert set(doc["environment"]) == {"privateIpAddress", "instanceId", "instanceType", "region"}
    assert set(doc["artifacts"]) == {"public/build/X.txt", "public/Y.txt", "public/logs/certified.log"}
    for name, entry in doc["artifacts"].items():
        assert entry == {"sha256": hashlib.sha256(artifacts[name]).hexdigest()}
    assert doc["artifacts"]["public/build/X.txt"]["sha256"] == X_SHA256


async def test_additional_data_merges_but_worker_values_win(certified):
    emu, task_id, _public, artifacts = certified
    doc = json.loads(artifacts["public/chain-of-trust.json"])
    assert doc["foo"] == "bar1" and doc["task"]["foo"] == "bar2"
    assert doc["task"]["schedulerId"] == emu.status(task_id)["schedulerId"] != "fake-scheduler-id"


async def test_task_files_posing_as_the_workers_artifacts_never_replace_them(certified):
    emu, task_id, _public, artifacts = certified
    assert artifacts["public/chain-of-trust.json"] != b"test artifact\n"
    assert b"goodbye world!" in artifacts["public/logs/certified.log"]
    assert emu.runs(task_id)[0].artifacts["public/logs/live.log"].storage_type == "link"
    log = task_log(emu, task_id)
    assert "'public/chain-of-trust.json' is reserved by the worker" in log
    assert "'public/logs/live.log' is reserved by the worker" in log
    assert len(artifacts["public/chain-of-trust.json.sig"]) == 64
