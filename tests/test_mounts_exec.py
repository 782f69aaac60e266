"""Mounts through ``tcworker exec`` (in-process :func:`~tcworker.execrun.exec_task`): URL, raw and
base64 content, a zip whose entries keep their executable bit, caches that persist between exec
runs under the configured ``cachesDir``, and the exit statuses of mount errors.
"""

from __future__ import annotations

import base64
import io
import json
import stat
import zipfile
from pathlib import Path

import pytest

from test_mounts_helpers import ThreadedServer, mounts_config, sha256
from tcworker.execrun import ExecOptions, exec_task


def zip_with_exec() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("cmd/git")
        info.create_system, info.external_attr = 3, (stat.S_IFREG | 0o755) << 16
        archive.writestr(info, "#!/bin/sh\necho git version 2.19.0\n")
    return buf.getvalue()


@pytest.fixture
def server():
    with ThreadedServer() as srv:
        yield srv


def exec_payload(tmp_path: Path, payload: dict, name: str, **task) -> tuple[int, str]:
    task_file = tmp_path / f"{name}.json"
    task_file.write_text(json.dumps({"payload": {"maxRunTime": 60, **payload}, **task}))
    out = tmp_path / "out" / name
    code = exec_task(ExecOptions(task_file=task_file, out_dir=out), mounts_config(tmp_path))
    return code, (out / "public" / "logs" / "live_backing.log").read_text(errors="replace")


def test_given_url_raw_and_base64_mounts_when_exec_then_completed(tmp_path: Path, server):
    archive = zip_with_exec()
    server.files["/MinGit.zip"] = archive
    server.files["/rustup-init"] = b"#!/bin/sh\necho rust installed\n"
    code, log = exec_payload(tmp_path, {
        "command": [["bash", "-c", "git/cmd/git && chmod +x rustup-init && ./rustup-init && cat sparse && echo "
                     "&& cat blob"]],
        "mounts": [
            {"directory": "git", "format": "zip", "content": {"url": server.url + "/MinGit.zip", "sha256": sha256(archive)}},
            {"file": "rustup-init", "content": {"url": server.url + "/rustup-init"}},
            {"file": "sparse", "content": {"raw": "/*\n!/tests"}},
            {"file": "blob", "content": {"base64": base64.b64encode(b"b64-bytes").decode()}},
        ]}, "mounts")
    assert code == 0, log
    for line in ("git version 2.19.0", "rust installed", "!/tests", "b64-bytes"):
        assert line in log


def test_given_a_cache_when_exec_runs_twice_then_it_persists_under_caches_dir(tmp_path: Path):
    payload = {"command": [["bash", "-c", "echo x >> c/n; echo runs=$(wc -l < c/n)"]],
               "mounts": [{"cacheName": "exec-cache", "directory": "c"}]}
    scopes = ["generic-worker:cache:exec-cache"]
    assert "runs=1" in exec_payload(tmp_path, payload, "one", scopes=scopes)[1]
    code, log = exec_payload(tmp_path, payload, "two", scopes=scopes)
    assert code == 0 and "runs=2" in log
    assert (tmp_path / "caches" / "caches.json").exists()


def test_given_a_url_download_used_twice_then_fetched_once(tmp_path: Path, server):
    server.files["/tool"] = b"tool-bytes"
    payload = {"command": [["cat", "tool"]], "mounts": [{"file": "tool", "content": {"url": server.url + "/tool"}}]}
    for name in ("a", "b"):
        code, log = exec_payload(tmp_path, payload, name)
        assert code == 0 and "tool-bytes" in log
    assert server.hits["/tool"] == 1


def test_given_mount_errors_when_exec_then_failed_or_malformed_exit_statuses(tmp_path: Path, server):
    server.files["/x"] = b"x"
    mismatch = {"command": [["true"]], "mounts": [{"file": "x", "content": {"url": server.url + "/x", "sha256": "0" * 64}}]}
    code, log = exec_payload(tmp_path, mismatch, "mismatch")
    assert code == 1 and "mounts[0] file x" in log and "sha256 mismatch" in log
    no_scope = {"command": [["true"]], "mounts": [{"cacheName": "c", "directory": "c"}]}
    code, log = exec_payload(tmp_path, no_scope, "noscope")
    assert code == 2 and "generic-worker:cache:c" in log
