"""The bridge network of one docker run: :class:`RunNetwork` (and its blocking helpers).

Each run gets its own labelled bridge network (``../shared/design/ARCHITECTURE.md``, docker
cleanup; docker-worker gave each task its own too): containers of two runs cannot reach each
other, and the network's gateway, an address of the host, is where the run's taskcluster proxy
listens (``http://taskcluster`` inside the container). The daemon picks the subnet from its
address pool (``--default-address-pool``, ``../shared/reference/machine.md``). Containers reach
the gateway through the host's ``INPUT`` chain (Docker's own rules touch ``FORWARD`` and NAT
only): a host firewall dropping input from the bridges must accept TCP port 80 from them for the
proxy to work (the development and CI machines' ``INPUT`` policy is ``ACCEPT``).

What does not live here: the container (:mod:`.docker`), the boot sweep of leftover networks
(:func:`tcworker.engines.docker_io.sweep`), the proxy (:mod:`tcworker.plugins.proxy`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any

logger = logging.getLogger(__name__)


class RunNetwork:
    """A run's network, created on first :meth:`ensure`, removed by :meth:`remove`.

    Args:
        client: a ``docker.DockerClient``.
        name: the network name (``tcw-net-...``).
        labels: labels of the network (the run's container labels).
    """

    def __init__(self, client: Any, name: str, labels: dict[str, str]) -> None:
        self.client = client
        self.name = name
        self.labels = labels
        self._job: asyncio.Task | None = None

    def start(self) -> None:
        """Begin creating the network in the background (overlaps with getting the image)."""
        if self._job is None:
            self._job = asyncio.ensure_future(asyncio.to_thread(create_network, self.client, self.name, self.labels))

    async def ensure(self) -> tuple[str, str]:
        """Create the network once → ``(gateway IP, subnet CIDR)``, e.g. ``("10.210.3.1",
        "10.210.3.0/24")``. The creation runs to its end even when the caller is cancelled, so
        :meth:`remove` always finds what to remove.

        Raises:
            docker.errors.APIError: the daemon refused (pool exhausted, name taken).
            RuntimeError: the network got no IPv4 subnet.
        """
        self.start()
        assert self._job is not None
        _network, gateway, subnet = await asyncio.shield(self._job)
        return gateway, subnet

    async def remove(self) -> None:
        """Remove the network if it was created (waits for a creation under way). Idempotent."""
        job, self._job = self._job, None
        if job is None:
            return
        await asyncio.wait({job})
        if not job.cancelled() and job.exception() is None:
            await asyncio.to_thread(remove_network, job.result()[0])


def create_network(client: Any, name: str, labels: dict[str, str]) -> tuple[Any, str, str]:
    """Create the bridge network ``name`` carrying ``labels``.

    The daemon picks its subnet from its address pool (``--default-address-pool``, see
    ``../shared/reference/machine.md``) and gives the host side the gateway address at once.

    Returns:
        ``(network, gateway IP, subnet CIDR)``, for example ``(<Network>, "10.210.3.1",
        "10.210.3.0/24")``.

    Raises:
        docker.errors.APIError: the daemon refused (pool exhausted, name taken).
        RuntimeError: the daemon gave the network no IPv4 subnet (the network is removed).
    """
    network = client.networks.create(name, driver="bridge", labels=labels, check_duplicate=True)
    for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
        subnet = config.get("Subnet") or ""
        if subnet and ipaddress.ip_network(subnet, strict=False).version == 4:
            gateway = config.get("Gateway") or str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
            return network, gateway, subnet
    remove_network(network)
    raise RuntimeError(f"network {name}: the daemon gave it no IPv4 subnet")


def remove_network(network: Any) -> None:
    """Remove ``network``; gone already is fine, other refusals are logged (the boot sweep retries)."""
    import docker.errors

    try:
        network.remove()
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as err:
        logger.warning("cannot remove network %s: %s", network.name, err)


