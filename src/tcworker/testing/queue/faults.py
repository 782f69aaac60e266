"""Fault injection and the call log of the emulator.

Lives here: :class:`Fault` and :class:`FaultInjector` (per endpoint, the next N calls answer a
status, are delayed, hang, or have their connection reset, either *before* the handler runs
(request refused, state unchanged) or *after* it (state changed, response lost or replaced)),
storage bandwidth throttling, :class:`RandomFaults` (chaos mode: every call may meet a fault
drawn at random, at a configurable rate, seeded, counted), and :class:`Call`, one entry of the
call log.

Endpoint names: an apiName (``"reclaimTask"``), a qualified one (``"queue.reclaimTask"``,
``"object.createUpload"``), a whole service (``"queue"``, ``"object"``, ``"purge-cache"``,
``"index"``), ``"storage"`` (both ``"storage.put"`` and ``"storage.get"``), or ``"*"``.

Does not live here: applying a fault to an HTTP exchange (``server.py`` does it).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = ("status", "delay", "hang", "reset")
#: Default weights of the kinds drawn by :class:`RandomFaults`.
RANDOM_KINDS = {"status": 0.4, "delay": 0.25, "reset": 0.2, "hang": 0.15}


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
    hang_s: float | None = None  # a hang ends (connection reset) after this long; None: never

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
    fault_when: str | None = None  # "before" | "after" when ``fault`` is set


class FaultInjector:
    """The faults armed on an emulator (``emu.faults``)."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.storage_bytes_per_s: float | None = None
        self.chaos: RandomFaults | None = None

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

    def random(self, rate: float = 0.05, *, seed: int | None = 0, **options: Any) -> "RandomFaults":
        """Chaos mode: from now on every call (every endpoint and storage) meets a random fault
        with probability ``rate``. Armed faults (:meth:`inject`) still go first.

        Args:
            rate: probability (0..1) that one call meets a fault, before or after its handler.
            seed: seed of the draws (same seed and same call order: same faults).
            options: passed to :class:`RandomFaults` (``kinds``, ``endpoints``, ``exclude``,
                ``statuses``, ``max_delay_s``, ``hang_s``, ``reclaim_conflict_share``).

        Returns the :class:`RandomFaults` (its ``injected`` counts what it did). Stop it with
        :meth:`clear` or ``emu.faults.chaos = None``.
        """
        self.chaos = RandomFaults(rate, seed=seed, **options)
        return self.chaos

    def clear(self) -> None:
        """Disarm every fault, the random mode and the throttle."""
        self.faults.clear()
        self.chaos = None
        self.storage_bytes_per_s = None

    def take(self, service: str, api_name: str, when: str) -> Fault | None:
        """Consume one application of the first armed fault matching this call, if any; else,
        in random mode, maybe draw one."""
        for fault in self.faults:
            if fault.remaining > 0 and fault.when == when and fault.matches(service, api_name):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        if self.chaos is not None:
            return self.chaos.draw(service, api_name, when)
        return None


class RandomFaults:
    """Faults drawn at random for every call (``emu.faults.random(...)``).

    Each call gets two draws, one before its handler (the request is refused, state unchanged)
    and one after it (state changed, answer lost, replaced or late), each with probability
    ``rate / 2``, so about ``rate`` of the calls meet a fault.

    Args:
        rate: probability (0..1) that one call meets a fault.
        seed: seed of the random generator (None: not reproducible).
        kinds: weights of ``status``, ``delay``, ``hang``, ``reset`` (default :data:`RANDOM_KINDS`).
        endpoints: endpoint names (as :meth:`FaultInjector.inject`) that may meet faults
            (default ``("*",)``: every API call and storage).
        exclude: endpoint names that never meet random faults.
        statuses: the statuses of ``status`` faults (default 500, 502, 503).
        max_delay_s: ``delay`` faults wait uniformly 0..this many seconds.
        hang_s: a ``hang`` lasts until the client gives up, or at most this many seconds, then
            the connection is reset (None: until the client gives up or the emulator stops).
        reclaim_conflict_share: share (0..1) of the faults that meet ``reclaimTask`` *before* its
            handler that answer 409, as if the run were cancelled while the queue still holds it.

    Attributes:
        injected: ``Counter`` of ``(service.apiName, kind, when)``; a 409 counts as kind
            ``"conflict"``.
        calls_seen: how many draws were made (two per call that reached the end of its handler).
    """

    def __init__(self, rate: float = 0.05, *, seed: int | None = 0, kinds: dict[str, float] | None = None,
                 endpoints: tuple[str, ...] = ("*",), exclude: tuple[str, ...] = (),
                 statuses: tuple[int, ...] = (500, 502, 503), max_delay_s: float = 2.0,
                 hang_s: float | None = None, reclaim_conflict_share: float = 0.3) -> None:
        kinds = dict(RANDOM_KINDS if kinds is None else kinds)
        if not 0 <= rate <= 1 or any(k not in KINDS for k in kinds) or not kinds:
            raise ValueError(f"bad random faults: rate={rate!r} kinds={kinds!r}")
        self.rate = rate
        self.kinds = kinds
        self.endpoints = tuple(endpoints)
        self.exclude = tuple(exclude)
        self.statuses = tuple(statuses)
        self.max_delay_s = max_delay_s
        self.hang_s = hang_s
        self.reclaim_conflict_share = reclaim_conflict_share
        self.injected: Counter[tuple[str, str, str]] = Counter()
        self.calls_seen = 0
        self._random = random.Random(seed)

    @property
    def total(self) -> int:
        """Faults injected so far."""
        return sum(self.injected.values())

    def by_kind(self) -> Counter[str]:
        """Faults injected so far, per kind."""
        counts: Counter[str] = Counter()
        for (_, kind, _), n in self.injected.items():
            counts[kind] += n
        return counts

    def _eligible(self, service: str, api_name: str) -> bool:
        def hit(names: tuple[str, ...]) -> bool:
            return any(name in ("*", service, api_name, f"{service}.{api_name}") for name in names)

        return hit(self.endpoints) and not hit(self.exclude)

    def draw(self, service: str, api_name: str, when: str) -> Fault | None:
        """A fault for this call at this point (``"before"``/``"after"``), or None."""
        self.calls_seen += 1
        if not self._eligible(service, api_name) or self._random.random() >= self.rate / 2:
            return None
        rnd = self._random
        endpoint = f"{service}.{api_name}"
        if (api_name == "reclaimTask" and when == "before"
                and rnd.random() < self.reclaim_conflict_share):
            self.injected[(endpoint, "conflict", when)] += 1
            return Fault(endpoint, "status", 1, when, status=409, hits=1)
        kind = rnd.choices(list(self.kinds), weights=list(self.kinds.values()))[0]
        self.injected[(endpoint, kind, when)] += 1
        return Fault(endpoint, kind, 1, when, status=rnd.choice(self.statuses),
                     delay_s=rnd.uniform(0, self.max_delay_s), hits=1, hang_s=self.hang_s)
