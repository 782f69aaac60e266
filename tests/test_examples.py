"""Every task definition in ``examples/`` gives the result its comment documents, through the real
``tcworker exec`` CLI.

What does not live here: exec's options and failure modes (``test_exec.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example → (exit status, summary line, artifact name → expected bytes or None for "exists")
EXPECTED = {
    "hello": (0, "tcworker exec: completed", {"public/hello.txt": b"hello\n"}),
    "env": (0, "tcworker exec: completed", {}),
    "artifacts": (0, "tcworker exec: completed",
                  {"public/out/a.txt": b"a\n", "public/out/sub/b.json": b"b\n", "public/build.log": b"log\n"}),
    "failing": (1, "tcworker exec: failed", {"public/partial.txt": b"partial\n"}),
    "retry": (2, "tcworker exec: exception (intermittent-task)", {}),
    "maxruntime": (1, "tcworker exec: failed", {"public/out.txt": b"partial\n"}),
}


def test_every_example_is_covered() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.yml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_gives_its_documented_result(tmp_path: Path, name: str) -> None:
    code, summary, files = EXPECTED[name]
    proc = subprocess.run(
        [sys.executable, "-m", "tcworker", "exec", str(EXAMPLES / f"{name}.yml"), "--out", "out"],
        cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == code, proc.stderr.decode(errors="replace")
    assert summary.encode() in proc.stderr
    out = tmp_path / "out"
    for artifact, content in files.items():
        assert (out / artifact).read_bytes() == content
    assert (out / "public/logs/live_backing.log").is_file()
    assert (out / "public/logs/live.log").is_file()


def test_env_example_output(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tcworker", "exec", str(EXAMPLES / "env.yml"), "--out", "out",
         "--task-id", "envExampleTaskIdAAAAAA"], cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == 0
    assert "hello; $HOME is not expanded\nünï©ødé\nenvExampleTaskIdAAAAAA\n".encode() in proc.stdout


def test_artifacts_example_optional_missing_does_not_fail(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tcworker", "exec", str(EXAMPLES / "artifacts.yml"), "--out", "out"],
        cwd=tmp_path, capture_output=True, timeout=120)
    assert proc.returncode == 0
    entries = json.loads((tmp_path / "out/.tcworker/artifacts.json").read_text())["artifacts"]
    optional = next(e for e in entries if e["name"] == "public/optional.txt")
    assert optional["storageType"] == "error" and not (tmp_path / "out/public/optional.txt").exists()
