"""Fixtures shared by the engine tests (native and docker). Add fixtures; do not rewrite others'.

Docker: ``docker_client`` and ``docker_image`` come from ``tests/docker_fixtures.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from docker_fixtures import docker_client, docker_image  # noqa: E402,F401
