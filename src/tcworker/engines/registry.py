"""Which engines a worker (or ``tcworker exec``) runs: :func:`make_engines`.

Engines are imported here, lazily, so that a worker without Docker never imports the docker SDK.
"""

from __future__ import annotations

from tcworker.config import WorkerConfig
from tcworker.engines.base import Engine


def make_engines(config: WorkerConfig, *, only: str | None = None, sweep: bool = True) -> dict[str, Engine]:
    """Engines by name, from ``config.engines`` (or just ``only`` when given).

    ``sweep=False`` (``tcworker exec``): the engines' boot leaves leftovers (task directories,
    containers, networks) alone: a worker may be using them.

    Engines that are not built yet are left out; a payload for them resolves
    ``malformed-payload`` naming the engine.
    """
    names = (only,) if only else config.engines
    engines: dict[str, Engine] = {}
    for name in names:
        if name == "native":
            from tcworker.engines.native import NativeEngine

            engines[name] = NativeEngine(config, sweep=sweep)
        elif name == "docker":  # boot() fails clearly when listed in `engines` and no daemon answers
            from tcworker.engines.docker import DockerEngine

            engines[name] = DockerEngine(config, required=True if only == "docker" else None, sweep=sweep)
    return engines
