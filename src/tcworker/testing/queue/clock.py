"""The emulator's injectable clock and its timestamp helpers.

Lives here: :class:`Clock` (real time plus an offset that tests move with :meth:`Clock.advance`),
and the conversions between epoch seconds and the queue's ``YYYY-MM-DDTHH:MM:SS.mmmZ`` strings.
Only the run state machine (takenUntil, deadlines, expiries) reads this clock; Hawk signature checks
and credential certificates use real time, as the real auth service does.

Does not live here: the resolvers that act on time (``state.py``), or any sleeping.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from .errors import ApiError


class Clock:
    """Real time shifted by an offset that only ever grows.

    ``now()`` returns epoch seconds as float. ``advance(seconds)`` moves the clock forward and
    runs every listener synchronously (the emulator registers its resolvers), so when
    ``advance`` returns, claim expiry and deadline resolution have already happened.
    """

    def __init__(self) -> None:
        self.offset_s = 0.0
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        """Emulator time, epoch seconds as float."""
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` (>= 0) forward and run the time-driven resolvers at once.

        Raises:
            ValueError: ``seconds`` is negative (time never goes back, as on a real deployment).
        """
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        self.offset_s += seconds
        for listener in list(self._listeners):
            listener()

    def on_advance(self, listener: Callable[[], None]) -> None:
        """Register a sync callable run after every :meth:`advance`."""
        self._listeners.append(listener)


def iso(epoch_s: float) -> str:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (JS ``Date.toJSON()``, milliseconds)."""
    ms = int(round(epoch_s * 1000))
    d = dt.datetime.fromtimestamp(ms // 1000, tz=dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def parse_time(value: str, field: str = "date") -> float:
    """Parse an RFC 3339 string (``Z`` or offset, any sub-second precision) → epoch seconds,
    truncated to milliseconds as upstream's ``new Date(s)`` does.

    Raises:
        ApiError: 400 InputError when the string is not a date-time.
    """
    try:
        d = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, AttributeError) as err:
        raise ApiError(400, "InputError", f"{field} is not a valid date-time: {value!r}") from err
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp() * 1000) / 1000


def to_datetime(epoch_s: float) -> dt.datetime:
    """Epoch seconds → aware UTC datetime."""
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.timezone.utc)
