"""``tcworker exec`` through the real CLI (a subprocess): exit statuses, options, the output
folder, live output, and the failure modes handed to exec (FM-08/09/10/15/16/17/18/19).

What does not live here: the examples (``test_examples.py``), the real-task cases
(``tests/cases``), engine internals (``tests/engines``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

TIMEOUT_S = 120


def exec_task(tmp_path: Path, task: Any, *args: str, out: str | None = "out",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Write ``task`` (a mapping as JSON, or YAML text) and run ``tcworker exec`` on it in ``tmp_path``."""
    task_file = tmp_path / ("task.yml" if isinstance(task, str) else "task.json")
    task_file.write_text(task if isinstance(task, str) else json.dumps(task))
    argv = [sys.executable, "-m", "tcworker", "exec", str(task_file), *args]
    if out:
        argv += ["--out", str(tmp_path / out)]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCLUSTER_")}
    full_env.update(env or {})
    return subprocess.run(argv, cwd=tmp_path, capture_output=True, timeout=TIMEOUT_S, env=full_env)


def payload(*commands: str, **extra: Any) -> dict:
    """A generic-worker payload running each shell snippet with ``/bin/sh -c``."""
    return {"maxRunTime": 60, "command": [["/bin/sh", "-c", c] for c in commands], **extra}


def manifest(out: Path) -> dict[str, dict]:
    """``.tcworker/artifacts.json`` of an output folder, by artifact name."""
    doc = json.loads((out / ".tcworker" / "artifacts.json").read_text())
    return {entry["name"]: entry for entry in doc["artifacts"]}


def log_of(out: Path) -> bytes:
    return (out / "public/logs/live_backing.log").read_bytes()


def marker() -> str:
    """A ``sleep`` argument no other process uses, to find survivors by command line."""
    return f"600.{random.randrange(10**6):06d}"


def survivors(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] and token in proc.info["cmdline"]:
            found.append(proc)
    return found


# ------------------------------------------------------------------------- exit statuses
@pytest.mark.parametrize("command, code, summary", [
    ("echo ok", 0, "tcworker exec: completed"),
    ("exit 3", 1, "tcworker exec: failed"),
])
def test_exit_status_completed_and_failed(tmp_path: Path, command: str, code: int, summary: str) -> None:
    proc = exec_task(tmp_path, {"payload": payload(command)})
    assert proc.returncode == code, proc.stderr
    assert summary.encode() in proc.stderr


def test_exit_status_exception_prints_the_reason(tmp_path: Path) -> None:
    proc = exec_task(tmp_path, {"payload": payload("exit 75", onExitStatus={"retry": [75]})})
    assert proc.returncode == 2, proc.stderr
    assert b"tcworker exec: exception (intermittent-task)" in proc.stderr
    assert b"onExitStatus.retry" in proc.stderr


def test_unreadable_task_file_is_an_exception(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "tcworker", "exec", str(tmp_path / "nope.yml")],
                          cwd=tmp_path, capture_output=True, timeout=TIMEOUT_S)
    assert proc.returncode == 2
    assert b"cannot read" in proc.stderr


# ------------------------------------------------------------------------- options
def test_bare_payload_task_id_and_default_out_dir(tmp_path: Path) -> None:
    task = payload("echo id=$TASK_ID run=$RUN_ID group=$TASK_GROUP_ID > ids.txt",
                   artifacts=[{"type": "file", "path": "ids.txt", "name": "public/ids.txt"}])
    proc = exec_task(tmp_path, task, "--task-id", "fixedTaskIdAAAAAAAAAAA", out=None)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "tcworker-out" / "fixedTaskIdAAAAAAAAAAA"
    assert (out / "public/ids.txt").read_text() == (
        "id=fixedTaskIdAAAAAAAAAAA run=0 group=fixedTaskIdAAAAAAAAAAA\n")


def test_env_option_adds_and_overrides(tmp_path: Path) -> None:
    task = {"payload": payload("printenv A B > env.txt", env={"A": "from-payload", "B": "kept"},
                               artifacts=[{"type": "file", "path": "env.txt", "name": "public/env.txt"}])}
    proc = exec_task(tmp_path, task, "--env", "A=from cli; $HOME=x", "--env", "C=")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out/public/env.txt").read_text() == "from cli; $HOME=x\nkept\n"


def test_env_option_needs_name_equals_value(tmp_path: Path) -> None:
    proc = exec_task(tmp_path, {"payload": payload("true")}, "--env", "NOEQUALS")
    assert proc.returncode == 2
    assert b"NAME=VALUE" in proc.stderr


@pytest.mark.parametrize("keep", [False, True])
def test_keep_task_dir(tmp_path: Path, keep: bool) -> None:
    task = {"payload": payload("echo data > f.txt; echo \"workdir=$TASK_WORKDIR\"")}
    proc = exec_task(tmp_path, task, *(["--keep-task-dir"] if keep else []))
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith(b"workdir="))
    workdir = Path(line.split(b"=", 1)[1].decode())
    assert workdir.is_absolute()
    assert (workdir / "f.txt").exists() is keep


def test_config_option_is_read(tmp_path: Path) -> None:
    """A partial worker config (no credentials) sets the kill grace period exec uses."""
    (tmp_path / "worker.yml").write_text("killGracePeriodSecs: 1\nworkerGroup: my-group\n")
    task = {"payload": {"maxRunTime": 1, "command": [["/bin/sh", "-c", "trap '' TERM; sleep 30"]]}}
    proc = exec_task(tmp_path, task, "--config", str(tmp_path / "worker.yml"))
    assert proc.returncode == 1, proc.stderr
    assert b"SIGKILL after 1s" in log_of(tmp_path / "out")


def test_bad_config_exits_64(tmp_path: Path) -> None:
    (tmp_path / "worker.yml").write_text("killGracePeriodSecs: [not a number]\n")
    proc = exec_task(tmp_path, {"payload": payload("true")}, "--config", str(tmp_path / "worker.yml"))
    assert proc.returncode == 64
    assert b"killGracePeriodSecs" in proc.stderr


# ------------------------------------------------------------------------- output folder
def test_output_folder_layout(tmp_path: Path) -> None:
    task = {"payload": payload(
        "mkdir -p d/sub && printf abc > d/a.txt && printf '{}' > d/sub/b.json && printf xyz > f.bin",
        artifacts=[{"type": "directory", "path": "d", "name": "public/d"},
                   {"type": "file", "path": "f.bin", "name": "private/f.bin"},
                   {"type": "file", "path": "missing.txt", "name": "public/missing.txt"}])}
    proc = exec_task(tmp_path, task)
    assert proc.returncode == 1, proc.stderr   # a required artifact is missing
    out = tmp_path / "out"
    entries = manifest(out)
    assert (out / "public/d/a.txt").read_bytes() == b"abc"
    assert (out / "public/d/sub/b.json").read_bytes() == b"{}"
    assert (out / "private/f.bin").read_bytes() == b"xyz"
    live, backing = out / "public/logs/live.log", out / "public/logs/live_backing.log"
    assert live.is_file() and not live.is_symlink() and live.read_bytes() == backing.read_bytes()
    assert [p.name for p in (out / ".tcworker").iterdir()] == ["artifacts.json"]   # no scratch left
    for name in ("public/d/a.txt", "public/d/sub/b.json", "private/f.bin", "public/logs/live_backing.log"):
        entry = entries[name]
        data = (out / name).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["storageType"] in ("object", "s3") and entry["contentType"]
    assert entries["public/d/a.txt"]["contentType"].startswith("text/plain")
    assert entries["public/d/sub/b.json"]["contentType"].startswith("application/json")
    assert entries["public/logs/live.log"]["storageType"] == "link"
    missing = entries["public/missing.txt"]
    assert missing["storageType"] == "error" and missing["reason"] == "file-missing-on-worker"
    assert not (out / "public/missing.txt").exists()
    assert b"error artifact public/missing.txt: file-missing-on-worker" in proc.stderr


def test_name_resolving_outside_the_folder_is_refused(tmp_path: Path) -> None:
    """FM-01 through exec: the queue refuses the name, so exec does too; nothing lands outside."""
    task = {"payload": payload("echo hi > hello.log", artifacts=[
        {"type": "file", "path": "hello.log", "name": "public/logs/../../../escaped.log"}])}
    proc = exec_task(tmp_path, task)
    assert proc.returncode == 2, proc.stderr
    assert b"exception (malformed-payload)" in proc.stderr
    assert b"public/logs/../../../escaped.log" in log_of(tmp_path / "out")
    assert not list(tmp_path.rglob("escaped.log"))


# ------------------------------------------------------------------------- live output
def test_output_streams_live_to_the_terminal(tmp_path: Path) -> None:
    """Early output reaches our stdout while the task still runs (it waits for a flag we set)."""
    flag = tmp_path / "flag"
    (tmp_path / "task.json").write_text(json.dumps({"payload": payload(
        'echo early-$((40+2)); while [ ! -e "$FLAG" ]; do sleep 0.1; done; echo late-$((40+3))')}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tcworker", "exec", "task.json", "--out", "out", "--env", f"FLAG={flag}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        seen = b""
        while b"early-42\n" not in seen:
            line = proc.stdout.readline()
            assert line, "exec ended before the early output arrived"
            seen += line
        assert proc.poll() is None, "the task should still be running"
        assert b"late-43" not in seen
        flag.touch()
        rest = proc.stdout.read()
        assert proc.wait(timeout=TIMEOUT_S) == 0
        assert b"late-43\n" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------- failure modes
@pytest.mark.parametrize("redirect", [True, False], ids=["redirected", "inherited-output"])
def test_fm08_processes_outliving_the_task(tmp_path: Path, redirect: bool) -> None:
    token = marker()
    quiet = " >/dev/null 2>&1" if redirect else ""
    command = f"nohup sleep {token}{quiet} & setsid sleep {token} </dev/null{quiet} & echo done"
    started = time.monotonic()
    proc = exec_task(tmp_path, {"payload": payload(command)})
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30, "a bounded drain, not the children's 600 s"
    assert b"\ndone\n" in log_of(tmp_path / "out")
    assert survivors(token) == []
    again = exec_task(tmp_path, {"payload": payload("echo clean")}, out="out2")
    assert again.returncode == 0 and survivors(token) == []


@pytest.mark.parametrize("variant", ["trap", "child-in-own-session"])
def test_fm09_maxruntime_with_a_task_ignoring_sigterm(tmp_path: Path, variant: str) -> None:
    token = marker()
    if variant == "trap":
        script = f"trap '' TERM; sleep {token}"
    else:
        script = f"setsid sh -c \"trap '' TERM; sleep {token}\" & sleep {token}"
    (tmp_path / "worker.yml").write_text("killGracePeriodSecs: 1\n")
    task = {"payload": {"maxRunTime": 5, "command": [["/bin/sh", "-c", script]]}}
    started = time.monotonic()
    proc = exec_task(tmp_path, task, "--config", str(tmp_path / "worker.yml"))
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    assert 5 <= elapsed < 40
    log = log_of(tmp_path / "out")
    assert b"max run time exceeded" in log
    assert b"SIGTERM" in log and b"SIGKILL" in log
    assert survivors(token) == []


def test_fm10_artifacts_after_a_maxruntime_abort(tmp_path: Path) -> None:
    task = {"payload": {"maxRunTime": 3, "command": [["/bin/sh", "-c", "echo partial > out.txt; sleep 60"]],
                        "artifacts": [{"type": "file", "path": "out.txt", "name": "public/out.txt"}]}}
    proc = exec_task(tmp_path, task)
    assert proc.returncode == 1, proc.stderr
    out = tmp_path / "out"
    assert (out / "public/out.txt").read_bytes() == b"partial\n"
    assert b"max run time exceeded" in log_of(out)
    assert manifest(out)["public/out.txt"]["storageType"] == "object"


@pytest.mark.parametrize("env, field", [
    ({"A": True}, b"env.A"), ({"N": 1.5}, b"env.N"), ({"": "x"}, b"cannot be empty"),
    ({"A=B": "x"}, b"env.A=B"), ({"A\0B": "x"}, b"NUL"),
], ids=["bool", "float", "empty-name", "equals-in-name", "nul-in-name"])
def test_fm15_impossible_env_is_malformed(tmp_path: Path, env: dict, field: bytes) -> None:
    proc = exec_task(tmp_path, {"payload": payload("echo ran", env=env)})
    assert proc.returncode == 2, proc.stderr
    assert b"exception (malformed-payload)" in proc.stderr and field in proc.stderr
    assert b"\nran\n" not in log_of(tmp_path / "out")


def test_fm15_odd_names_and_values_reach_the_process_byte_exact(tmp_path: Path) -> None:
    env = {"Q": "a b;&|\"'$HOME`x`", "E": "", "NL": "l1\nl2", "U": "ünï©ødé",
           "1X": "leading digit", "A B": "space", "X;Y": "semicolon"}
    dump = ("import json, os; json.dump({k: os.environb[k.encode()].decode() "
            "for k in json.loads(os.environ['NAMES'])}, open('env.json', 'w'))")
    task = {"payload": {"maxRunTime": 60, "env": {**env, "NAMES": json.dumps(sorted(env))},
                        "command": [["python3", "-c", dump], ["printenv", "Q", "E", "NL", "U"]],
                        "artifacts": [{"type": "file", "path": "env.json", "name": "public/env.json"}]}}
    proc = exec_task(tmp_path, task)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert json.loads((out / "public/env.json").read_text()) == env
    assert "a b;&|\"'$HOME`x`\n\nl1\nl2\nünï©ødé\n".encode() in log_of(out)


def test_fm15_worker_credentials_never_reach_the_task(tmp_path: Path) -> None:
    (tmp_path / "worker.yml").write_text("clientId: cfg-client-xyz\naccessToken: cfg-token-xyz\n")
    secrets = {"TASKCLUSTER_CLIENT_ID": "env-client-xyz", "TASKCLUSTER_ACCESS_TOKEN": "env-token-xyz",
               "TASKCLUSTER_CERTIFICATE": "env-cert-xyz"}
    proc = exec_task(tmp_path, {"payload": payload("env")}, "--config", str(tmp_path / "worker.yml"),
                     env=secrets)
    assert proc.returncode == 0, proc.stderr
    log = log_of(tmp_path / "out")
    assert b"TASK_ID=" in log
    for secret in (b"cfg-client-xyz", b"cfg-token-xyz", *(v.encode() for v in secrets.values())):
        assert secret not in log and secret not in proc.stdout


def test_fm16_non_utf8_output_and_split_characters(tmp_path: Path) -> None:
    task = {"payload": {"maxRunTime": 60, "command": [
        ["/bin/sh", "-c", r"printf 'ok\n\377\376 caf\351\n'; echo after"],
        ["/bin/sh", "-c", r"printf 'a\342\202'; sleep 0.1; printf '\254\n'"]]}}
    proc = exec_task(tmp_path, task)
    assert proc.returncode == 0, proc.stderr
    log = log_of(tmp_path / "out")
    assert b"ok\n\xff\xfe caf\xe9\nafter\n" in log
    assert "a€\n".encode() in log
    assert b"b'" not in log and b"\\xff" not in log
    assert b"ok\n\xff\xfe caf\xe9\nafter\n" in proc.stdout   # the terminal gets the same bytes


def test_fm17_background_child_holding_stdout(tmp_path: Path) -> None:
    token = marker()
    started = time.monotonic()
    proc = exec_task(tmp_path, {"payload": payload(f"(sleep {token}; echo bg) & echo fg")})
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30
    log = log_of(tmp_path / "out")
    assert b"\nfg\n" in log and b"\nbg\n" not in log
    assert survivors(token) == []


@pytest.mark.parametrize("task, field", [
    ({"payload": {"maxRunTime": "30", "command": [["true"]]}}, b"payload.maxRunTime"),
    ({"payload": {"maxRunTime": -1, "command": [["true"]]}}, b"payload.maxRunTime"),
    ({"payload": {"maxRunTime": 1e12, "command": [["true"]]}}, b"payload.maxRunTime"),
    ({"payload": {"maxRunTime": 30}}, b"payload.command"),
    ({"payload": None}, b"payload"),
    ({"payload": {"maxRunTime": 30, "command": [["true"]], "env": {"BIG": "x" * 5 * 1024 * 1024}}},
     b"bytes"),
    ({"payload": {"maxRunTime": 30, "command": [["true"]], "bogusKey": 1}}, b"payload.bogusKey"),
], ids=["string-maxruntime", "negative-maxruntime", "huge-maxruntime", "no-command", "null-payload",
        "5mb-payload", "unknown-key"])
def test_fm18_malformed_payloads(tmp_path: Path, task: dict, field: bytes) -> None:
    proc = exec_task(tmp_path, task)
    assert proc.returncode == 2, proc.stderr
    assert b"tcworker exec: exception (malformed-payload)" in proc.stderr
    assert field in proc.stderr
    assert field in log_of(tmp_path / "out")


def test_fm19_symlinks_in_artifact_directories(tmp_path: Path) -> None:
    host = tmp_path / "host-secret.txt"
    host.write_text("host secret\n")
    before = host.stat()
    script = (f"mkdir -p out && echo inside > out/real.txt && ln -s real.txt out/inside-link.txt"
              f" && ln -s {host} out/host-link.txt && ln -s nowhere.txt out/dangling.txt")
    task = {"payload": payload(script, artifacts=[{"type": "directory", "path": "out", "name": "public/out"}])}
    proc = exec_task(tmp_path, task)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    entries = manifest(out)
    assert (out / "public/out/real.txt").read_bytes() == b"inside\n"
    assert (out / "public/out/inside-link.txt").read_bytes() == b"inside\n"
    assert "public/out/host-link.txt" not in entries and not (out / "public/out/host-link.txt").exists()
    assert "public/out/dangling.txt" not in entries
    assert b"host secret" not in b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    after = host.stat()
    assert host.read_text() == "host secret\n" and after.st_mtime_ns == before.st_mtime_ns
