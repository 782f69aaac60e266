"""Run the emulator as a process: ``python -m tcworker.testing.queue --port N``.

Prints one JSON line ``{"rootUrl", "clientId", "accessToken"}`` (the root client) on stdout once
listening, then serves until SIGINT or SIGTERM. Nothing else lives here.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import click

from .server import QueueEmulator


async def _serve(emu: QueueEmulator) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with emu:
        line = {"rootUrl": emu.root_url, **emu.root_credentials}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await stop.wait()


@click.command()
@click.option("--port", default=0, show_default=True, help="TCP port on 127.0.0.1 (0: any free one).")
@click.option("--claim-timeout", "claim_timeout_s", default=1200.0, show_default=True,
              help="Seconds a claim lasts.")
@click.option("--long-poll", "long_poll_s", default=20.0, show_default=True,
              help="Seconds claimWork waits for work.")
@click.option("--deadline-delay", "deadline_delay_s", default=60.0, show_default=True,
              help="Seconds after a deadline before runs resolve deadline-exceeded.")
@click.option("--validate-schemas/--no-validate-schemas", default=None,
              help="Validate bodies against ../shared schemas (default: when found).")
@click.option("--no-anonymous", is_flag=True, help="Give the anonymous role no scopes.")
@click.option("--pulse-url", default=None, help="AMQP URL: publish the queue's Pulse messages there.")
@click.option("--pulse-prefix", default="exchange/taskcluster-queue/v1/", show_default=True,
              help="Exchange prefix of the Pulse messages.")
def main(port: int, claim_timeout_s: float, long_poll_s: float, deadline_delay_s: float,
         validate_schemas: bool | None, no_anonymous: bool, pulse_url: str | None,
         pulse_prefix: str) -> None:
    """Serve a local Taskcluster Queue/Object/Purge-Cache/Index emulator."""
    emu = QueueEmulator(port=port, claim_timeout_s=claim_timeout_s, long_poll_s=long_poll_s,
                        deadline_delay_s=deadline_delay_s, validate_schemas=validate_schemas,
                        anonymous_scopes=[] if no_anonymous else None, strict=False,
                        pulse_url=pulse_url, pulse_prefix=pulse_prefix)
    asyncio.run(_serve(emu))


if __name__ == "__main__":
    main()
