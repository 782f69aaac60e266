"""The CLI's light commands: version, validate over the real-world cases, schema, start-up cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tcworker.testing.cases import case_paths
from tcworker.testing.shared import require_shared


def tcworker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tcworker", *args], capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_version_prints_the_package_version():
    from tcworker import __version__

    assert tcworker("--version").stdout.strip().endswith(__version__)
    assert tcworker("version").stdout.strip() == f"tcworker {__version__}"


def test_version_imports_no_heavy_module():
    # start-up cost is kept low by importing heavy modules only where used (bench measures time)
    probe = ("import sys; sys.argv=['tcworker','--version']\n"
             "from tcworker.cli import cli\n"
             "try:\n    cli(prog_name='tcworker')\nexcept SystemExit:\n    pass\n"
             "heavy=[m for m in ('taskcluster','aiohttp','pydantic','jsonschema','docker','yaml') if m in sys.modules]\n"
             "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out


def _expected_valid(path) -> bool:
    name = path.name
    return not (name.startswith("gw-malformed-") or name.startswith("dw-malformed-"))


def test_validate_gives_the_right_verdict_on_every_real_task_case():
    shared = require_shared()
    paths = list(case_paths(shared))
    assert paths, "no case files found"
    for path in paths:
        result = tcworker("validate", str(path))
        assert "Traceback" not in result.stderr + result.stdout, path.name
        if _expected_valid(path):
            assert result.returncode == 0, (path.name, result.stdout)
        else:
            assert result.returncode == 2, (path.name, result.stdout)
            assert "payload." in result.stdout  # every problem names its field path


@pytest.mark.parametrize("content,code,needle", [
    ("command: [[echo, hi]]\nmaxRunTime: 30\n", 0, "valid"),
    ("command: [[echo, hi]]\nmaxRunTime: '30'\n", 2, "payload.maxRunTime"),
    ("payload: null\n", 2, "payload"),
    ("{{{ not yaml", 2, ""),
])
def test_validate_payload_files_never_traceback(tmp_path, content, code, needle):
    task_file = tmp_path / "task.yml"
    task_file.write_text(content)
    result = tcworker("validate", str(task_file))
    assert result.returncode == code, result.stdout + result.stderr
    assert needle in result.stdout
    assert "Traceback" not in result.stderr


def test_validate_missing_file_is_an_error_not_a_traceback(tmp_path):
    result = tcworker("validate", str(tmp_path / "nope.yml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("what,key", [("payload", None), ("config", "properties")])
def test_schema_prints_json_schema(what, key):
    result = tcworker("schema", what)
    assert result.returncode == 0
    document = json.loads(result.stdout)
    assert isinstance(document, dict) and document
    if key:
        assert "rootURL" in document[key] and "capacity" in document[key]


def test_bad_config_type_stops_with_a_message_naming_the_key(tmp_path):
    config = tmp_path / "worker.yml"
    config.write_text("capacity: 'two'\n")
    result = tcworker("run", "--config", str(config))
    assert result.returncode == 64
    assert "capacity" in result.stderr and "Traceback" not in result.stderr


def test_run_requires_identity_keys(tmp_path):
    config = tmp_path / "worker.yml"
    config.write_text("capacity: 1\n")
    result = tcworker("run", "--config", str(config), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 73
    for key in ("rootURL", "clientId", "accessToken", "workerGroup", "workerId", "provisionerId"):
        assert key in result.stderr
