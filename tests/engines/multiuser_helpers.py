"""Shared helpers of the multiuser tests: the root requirement and a task-user-reachable parent.

Task users cannot enter pytest's ``tmp_path`` (0700, ``../shared/reference/machine.md``), so the
tasks directory lives under a fresh ``/tmp/tcw-test-mu-*`` directory of mode 0711.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tcworker.config import WorkerConfig


def require_root() -> None:
    """Skip (fail under ``CI=true``) when not root: task users need useradd and setuid."""
    if os.geteuid() == 0:
        return
    reason = "multiuser engine tests need root (useradd, setuid)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + ", and CI runs as root")
    pytest.skip(reason)


@pytest.fixture
def mu_parent() -> Iterator[Path]:
    """A 0711 directory task users can traverse, removed afterwards."""
    require_root()
    parent = Path(tempfile.mkdtemp(prefix="tcw-test-mu-", dir="/tmp"))
    parent.chmod(0o711)
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def multiuser_config(parent: Path, **extra: object) -> WorkerConfig:
    """Multiuser config with tasks under ``parent``, short grace and drain."""
    return WorkerConfig.from_mapping(
        {"tasksDir": str(parent / "tasks"), "cachesDir": str(parent / "caches"),
         "downloadsDir": str(parent / "downloads"), "runTasksAsCurrentUser": False,
         "killGracePeriodSecs": 0.5, "outputDrainSecs": 0.5, **extra},
        environ={},
    )
