"""How one command ended (:class:`CommandOutcome`) and the exit block written to the task log.

The block follows generic-worker's layout (``../shared/reference/peer-workers.md`` 3.10)::

       Exit Code: 0
       User Time: 1.2ms
     Kernel Time: 800µs
       Wall Time: 3.1ms
          Result: SUCCEEDED

What does not live here: running processes (``native.py``).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from tcworker.engines.base import ExitResult


@dataclass(frozen=True)
class CommandOutcome:
    """One command's end.

    Attributes:
        index: position in ``SandboxSpec.commands`` (None before any command ran).
        returncode: as ``subprocess`` gives it: >= 0 exit status, < 0 killed by that signal.
        start_error: the command could not be started (then ``returncode`` is None).
        aborted: ended by an abort; timed_out: ended by ``maxRunTime``.
        duration_s: wall-clock seconds; cpu_s: (user, system) CPU seconds if known.
    """

    index: int | None
    returncode: int | None = None
    start_error: str | None = None
    aborted: bool = False
    timed_out: bool = False
    duration_s: float = 0.0
    cpu_s: tuple[float, float] | None = None

    @classmethod
    def from_process(
        cls, index: int, returncode: int | None, ended_by: str, duration_s: float, cpu_s: tuple[float, float] | None
    ) -> "CommandOutcome":
        """Outcome of a started command; ``ended_by`` is ``"exit"``, ``"abort"`` or ``"timeout"``."""
        return cls(
            index=index,
            returncode=returncode,
            aborted=ended_by == "abort",
            timed_out=ended_by == "timeout",
            duration_s=duration_s,
            cpu_s=cpu_s,
        )

    @property
    def succeeded(self) -> bool:
        """Exited 0 by itself."""
        return self.returncode == 0 and not (self.aborted or self.timed_out or self.start_error)

    @property
    def verdict(self) -> str:
        """``SUCCEEDED``, ``FAILED`` or ``ABORTED`` (abort and maxRunTime)."""
        if self.aborted or self.timed_out:
            return "ABORTED"
        return "SUCCEEDED" if self.succeeded else "FAILED"

    def result(self, *, aborted: bool, duration_s: float) -> ExitResult:
        """The run's :class:`ExitResult` when this was its last command."""
        code = self.returncode
        ok = self.succeeded and not aborted
        return ExitResult(
            exit_code=code if code is not None and code >= 0 else None,
            failed_command=None if ok else self.index,
            start_error=self.start_error,
            signal=-code if code is not None and code < 0 else None,
            aborted=aborted,
            timed_out=self.timed_out,
            duration_s=duration_s,
        )


def exit_block(outcome: CommandOutcome) -> str:
    """The multi-line exit block for :meth:`TaskLog.info` (one prefix per line)."""
    lines = [f"   Exit Code: {_exit_code(outcome)}"]
    if outcome.cpu_s is not None:
        lines.append(f"   User Time: {go_duration(outcome.cpu_s[0])}")
        lines.append(f" Kernel Time: {go_duration(outcome.cpu_s[1])}")
    lines.append(f"   Wall Time: {go_duration(outcome.duration_s)}")
    result = outcome.verdict
    if outcome.timed_out:
        result += " (max run time exceeded)"
    lines.append(f"      Result: {result}")
    return "\n".join(lines)


def _exit_code(outcome: CommandOutcome) -> str:
    code = outcome.returncode
    if outcome.start_error is not None or code is None:
        return "none (command did not start)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"-1 (killed by {name})"
    return str(code)


def go_duration(seconds: float) -> str:
    """A duration the way Go prints ``time.Duration``, to 3 decimals: ``1.5s``, ``2m3.25s``, ``12ms``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1e-3:
        return _trim(seconds * 1e6) + "µs"
    if seconds < 1:
        return _trim(seconds * 1e3) + "ms"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = _trim(rest) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _trim(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def start_error_message(argv: tuple[str, ...], err: BaseException) -> str:
    """One line saying why ``argv`` could not start (``<program>: <reason>``)."""
    if isinstance(err, OSError):
        return f"{argv[0]}: {err.strerror or err}"
    return f"{argv[0]}: {err}"


def cpu_delta(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> tuple[float, float] | None:
    """``(user, system)`` CPU seconds spent between two samples, or None when one is missing."""
    if before is None or after is None:
        return None
    return after[0] - before[0], after[1] - before[1]
