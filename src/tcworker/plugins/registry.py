"""Which plugins a worker (or ``tcworker exec``) runs, in order: :func:`make_plugins`.

Order matters: ``prepare``, ``build_sandbox``, ``started`` and ``stopped`` run in this order,
``finished`` and ``dispose`` in reverse (:mod:`tcworker.plugins.base`). Each plugin module is
imported here, lazily, so a feature that is off costs nothing at start-up.
"""

from __future__ import annotations

from tcworker.config import WorkerConfig
from tcworker.plugins.base import Plugin


def make_plugins(config: WorkerConfig, *, mode: str = "run") -> list[Plugin]:
    """The plugins for ``config``; ``mode`` is ``"run"`` (daemon) or ``"exec"``.

    Features register here as they land (live log, mounts and caches, proxy, chain of trust).
    """
    plugins: list[Plugin] = []
    if mode == "run" and config.enable_live_log:  # first: readers see mount downloads too
        from tcworker.plugins.livelog import LiveLogPlugin

        plugins.append(LiveLogPlugin(config))
    if "docker" in config.engines:
        from tcworker.plugins.docker_image import DockerPlugin

        plugins.append(DockerPlugin(config))
    if config.enable_mounts:
        from tcworker.plugins.mounts import MountsPlugin

        plugins.append(MountsPlugin(config, mode=mode))
    if config.enable_taskcluster_proxy:
        from tcworker.plugins.proxy import ProxyPlugin

        plugins.append(ProxyPlugin(config))
    if config.enable_chain_of_trust:
        from tcworker.plugins.chain_of_trust import ChainOfTrustPlugin

        plugins.append(ChainOfTrustPlugin(config))
    return plugins
