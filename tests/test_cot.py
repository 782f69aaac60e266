"""Chain of Trust without a queue: keys, the document's bytes (:mod:`tcworker.cot`), the
``new-ed25519-keypair`` command, and ``tcworker exec`` writing a signed certificate.

Through ``tcworker run`` and verified by scriptworker's own code: ``test_cot_e2e.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tcworker import cot
from tcworker.config import WorkerConfig
from tcworker.errors import ConfigError, TaskFailed

TCWORKER = [sys.executable, "-m", "tcworker"]


# ---------------------------------------------------------------- keys
def test_new_keypair_writes_a_private_base64_seed_and_prints_the_public_key(tmp_path):
    key_file = tmp_path / "cot.key"
    out = subprocess.run([*TCWORKER, "new-ed25519-keypair", "--file", str(key_file)],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert len(base64.b64decode(key_file.read_text())) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = cot.load_signing_key(key_file)
    assert cot.public_key_b64(key) == out
    Ed25519PublicKey.from_public_bytes(base64.b64decode(out)).verify(cot.sign(key, b"x"), b"x")
    again = subprocess.run([*TCWORKER, "new-ed25519-keypair", "--file", str(key_file)],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "exists" in again.stderr


def test_a_key_file_that_is_not_a_seed_is_a_config_error_naming_the_setting(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_text(base64.b64encode(b"short").decode())
    with pytest.raises(ConfigError, match="ed25519SigningKeyLocation"):
        cot.load_signing_key(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        cot.load_signing_key(tmp_path / "missing.key")


def test_lock_down_makes_the_key_private(tmp_path):
    key_file = tmp_path / "k"
    cot.write_new_keypair(key_file)
    os.chmod(key_file, 0o644)
    cot.lock_down_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.stat().st_uid == os.geteuid()


def test_verify_refuses_a_changed_document_or_another_key(tmp_path):
    cot.write_new_keypair(tmp_path / "a")
    cot.write_new_keypair(tmp_path / "b")
    key = cot.load_signing_key(tmp_path / "a")
    other = cot.public_key_b64(cot.load_signing_key(tmp_path / "b"))
    signature = cot.sign(key, b"document")
    assert len(signature) == 64
    assert cot.verify(cot.public_key_b64(key), b"document", signature)
    assert not cot.verify(cot.public_key_b64(key), b"document ", signature)
    assert not cot.verify(other, b"document", signature)


# ---------------------------------------------------------------- the document
def _document(**changes) -> dict:
    args = dict(artifacts={"public/b.txt": "bb", "public/a.txt": "aa"},
                task={"payload": {"command": [["echo", "<&>"]]}, "scopes": []}, task_id="T", run_id=0,
                worker_group="g", worker_id="w",
                environment=cot.environment(WorkerConfig.from_mapping({"region": "r1"}, environ={})))
    args.update(changes)
    return cot.build_document(**args)


def test_the_document_has_generic_workers_order_indent_and_escapes():
    data = cot.render(_document())
    text = data.decode()
    assert list(json.loads(data)) == ["chainOfTrustVersion", "artifacts", "task", "taskId", "runId",
                                      "workerGroup", "workerId", "environment"]
    assert text.startswith('{\n  "chainOfTrustVersion": 1,\n  "artifacts": {\n    "public/a.txt": {\n'
                           '      "sha256": "aa"\n    },')
    assert '"\\u003c\\u0026\\u003e"' in text  # Go's json escapes <, &, >
    assert json.loads(data)["environment"] == {"privateIpAddress": "", "instanceId": "", "instanceType": "",
                                               "region": "r1"}
    assert not text.endswith("\n")


def test_public_ip_appears_only_when_known():
    env = cot.environment(WorkerConfig.from_mapping({"publicIP": "1.2.3.4", "privateIP": "10.0.0.1"}, environ={}))
    assert list(env) == ["publicIpAddress", "privateIpAddress", "instanceId", "instanceType", "region"]


def test_additional_data_merges_under_the_worker_keys_which_win():
    merged = cot.merge_additional_data(
        _document(task={"schedulerId": "real", "payload": {}}),
        {"foo": "bar1", "task": {"foo": "bar2", "schedulerId": "fake"}, "taskId": "forged", "runId": "x"})
    assert merged["foo"] == "bar1"
    assert merged["task"] == {"foo": "bar2", "schedulerId": "real", "payload": {}}
    assert merged["taskId"] == "T" and merged["runId"] == 0
    assert list(json.loads(cot.render(merged, sort_keys=True))) == sorted(merged)


def test_additional_data_is_read_only_from_a_regular_file_of_the_task_user(tmp_path):
    path = tmp_path / cot.ADDITIONAL_DATA_NAME
    assert cot.read_additional_data(tmp_path, os.geteuid()) is None
    path.write_text('{"a": 1}')
    assert cot.read_additional_data(tmp_path, os.geteuid()) == {"a": 1}
    with pytest.raises(TaskFailed, match="not owned by the task user"):
        cot.read_additional_data(tmp_path, os.geteuid() + 1)
    path.write_text("[1]")
    with pytest.raises(TaskFailed, match="JSON object"):
        cot.read_additional_data(tmp_path, None)
    path.unlink()
    (tmp_path / "real.json").write_text('{"a": 1}')
    path.symlink_to(tmp_path / "real.json")
    with pytest.raises(TaskFailed, match="links are not followed"):
        cot.read_additional_data(tmp_path, None)


# ---------------------------------------------------------------- tcworker exec
@pytest.fixture
def reachable_dir():
    """A 0711 folder task users can traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="tcw-cot-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _exec(folder: Path, task: dict, **config) -> subprocess.CompletedProcess:
    (folder / "task.json").write_text(json.dumps(task))
    (folder / "config.json").write_text(json.dumps({"tasksDir": str(folder / "tasks"), "workerGroup": "g",
                                                    "workerId": "w", **config}))
    return subprocess.run([*TCWORKER, "exec", str(folder / "task.json"), "--config", str(folder / "config.json"),
                           "--out", str(folder / "out")], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(os.geteuid() != 0, reason="the multiuser engine needs root")
def test_exec_with_a_key_and_multiuser_writes_a_certificate_verifiable_with_the_printed_key(reachable_dir):
    public = cot.write_new_keypair(reachable_dir / "cot.key")
    task = {"payload": {
        "command": [["/bin/sh", "-c", "echo hello > a.txt; cat ../../cot.key || echo key-unreadable"]],
        "maxRunTime": 60, "artifacts": [{"type": "file", "path": "a.txt", "name": "public/a.txt"}],
        "features": {"chainOfTrust": True}}}
    done = _exec(reachable_dir, task, ed25519SigningKeyLocation=str(reachable_dir / "cot.key"),
                 runTasksAsCurrentUser=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "key-unreadable" in done.stdout
    out = reachable_dir / "out" / "public"
    data = (out / "chain-of-trust.json").read_bytes()
    assert cot.verify(public, data, (out / "chain-of-trust.json.sig").read_bytes())
    doc = json.loads(data)
    assert doc["artifacts"]["public/a.txt"]["sha256"] == \
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"  # sha256("hello\n")
    certified = (out / "logs" / "certified.log").read_bytes()
    assert b"key-unreadable" in certified
    assert doc["artifacts"]["public/logs/certified.log"]["sha256"] == hashlib.sha256(certified).hexdigest()
    assert doc["taskId"] == doc["task"]["taskGroupId"] and doc["workerGroup"] == "g"


def test_exec_chain_of_trust_with_tasks_as_the_current_user_is_malformed_naming_the_setting(reachable_dir):
    cot.write_new_keypair(reachable_dir / "cot.key")
    task = {"payload": {"command": [["true"]], "maxRunTime": 60, "features": {"chainOfTrust": True}}}
    done = _exec(reachable_dir, task, ed25519SigningKeyLocation=str(reachable_dir / "cot.key"))
    assert done.returncode == 2
    assert "malformed-payload" in done.stderr
    assert "runTasksAsCurrentUser" in done.stdout


def test_exec_chain_of_trust_without_a_key_is_malformed_naming_the_setting(reachable_dir):
    task = {"payload": {"command": [["true"]], "maxRunTime": 60, "features": {"chainOfTrust": True}}}
    done = _exec(reachable_dir, task, runTasksAsCurrentUser=False)
    assert done.returncode == 2
    assert "ed25519SigningKeyLocation" in done.stdout
