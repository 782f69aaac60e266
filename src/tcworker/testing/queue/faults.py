"""Fault injection and the call log of the emulator.

Lives here: :class:`Fault` and :class:`FaultInjector` (per endpoint, the next N calls answer a
status, are delayed, hang, or have their connection reset, either *before* the handler runs
(request refused, state unchanged) or *after* it (state changed, response lost or replaced)),
storage bandwidth throttling, and :class:`Call`, one entry of the call log.

Endpoint names: an apiName (``"reclaimTask"``), a qualified one (``"queue.reclaimTask"``,
``"object.createUpload"``), a whole service (``"queue"``, ``"object"``, ``"purge-cache"``,
``"index"``), ``"storage"`` (both ``"storage.put"`` and ``"storage.get"``), or ``"*"``.

Does not live here: applying a fault to an HTTP exchange (``server.py`` does it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("status", "delay", "hang", "reset")


@dataclass
class Fault:
    """One injected fault. ``remaining`` counts down; ``hits`` counts applications."""

    endpoint: str
    kind: str
    count: int
    when: str
    status: int = 500
    delay_s: float = 1.0
    body: dict | None = None
    remaining: int = 0
    hits: int = 0

    def matches(self, service: str, api_name: str) -> bool:
        return self.endpoint in ("*", service, api_name, f"{service}.{api_name}")


@dataclass
class Call:
    """One request the emulator answered (or refused).

    ``service`` is queue | object | purge-cache | index | storage; ``api_name`` the upstream
    method name (``put``/``get`` for storage); ``params`` decoded URL parameters; ``client_id`` None
    for anonymous; ``status`` the HTTP status sent (0 when the connection was reset or hung);
    ``fault`` the kind of fault applied, if any; ``time`` real epoch seconds.
    """

    service: str
    api_name: str
    method: str
    path: str
    params: dict[str, str]
    client_id: str | None
    status: int
    request_body: Any = None
    response_body: Any = None
    fault: str | None = None
    time: float = 0.0
    query: dict[str, str] = field(default_factory=dict)


class FaultInjector:
    """The faults armed on an emulator (``emu.faults``)."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.storage_bytes_per_s: float | None = None

    def inject(self, endpoint: str, kind: str = "status", *, count: int = 1, when: str = "before",
               status: int = 500, delay_s: float = 1.0, body: dict | None = None) -> Fault:
        """Arm a fault for the next ``count`` matching calls.

        Args:
            endpoint: see the module docstring (e.g. ``"reclaimTask"``, ``"storage.put"``).
            kind: ``"status"`` (answer ``status`` with an upstream-shaped error body, or ``body``),
                ``"delay"`` (wait ``delay_s`` seconds, then go on), ``"hang"`` (never answer until
                the client gives up or the emulator stops), ``"reset"`` (abort the TCP connection).
            when: ``"before"`` the handler runs (refused) or ``"after"`` (state changed, response
                replaced / delayed / lost).

        Returns the :class:`Fault` (inspect ``hits``). Raises ValueError on an unknown kind/when.
        """
        if kind not in KINDS or when not in ("before", "after") or count < 1:
            raise ValueError(f"bad fault: kind={kind!r} when={when!r} count={count}")
        fault = Fault(endpoint, kind, count, when, status, delay_s, body, remaining=count)
        self.faults.append(fault)
        return fault

    def throttle_storage(self, bytes_per_s: float | None) -> None:
        """Limit storage PUT/GET bandwidth to ``bytes_per_s`` (None: unlimited)."""
        self.storage_bytes_per_s = bytes_per_s

    def clear(self) -> None:
        """Disarm every fault and the throttle."""
        self.faults.clear()
        self.storage_bytes_per_s = None

    def take(self, service: str, api_name: str, when: str) -> Fault | None:
        """Consume one application of the first armed fault matching this call, if any."""
        for fault in self.faults:
            if fault.remaining > 0 and fault.when == when and fault.matches(service, api_name):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        return None
