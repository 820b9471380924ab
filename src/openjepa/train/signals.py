"""Stopping a run cleanly: SIGINT (Ctrl-C), SIGTERM and SIGUSR1 (SLURM's warning before preemption).

The handler only records the request; the loop finishes the step it is in, writes ``checkpoint-latest``
and stops with :class:`RunInterrupted` (exit code :data:`EXIT_INTERRUPTED` from the CLI), so ``--resume``
continues from that exact step. A second Ctrl-C stops at once (the last periodic checkpoint stays valid:
checkpoints are written atomically).
"""

from __future__ import annotations

import signal
from types import FrameType

from openjepa.errors import OpenJepaError

# EX_TEMPFAIL from sysexits.h: "try again later", which is what a preempted run asks for.
EXIT_INTERRUPTED = 75
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")


class RunInterrupted(OpenJepaError):
    """The run stopped on a signal after writing its checkpoint; ``--resume`` continues it."""

    exit_code = EXIT_INTERRUPTED


class StopSignals:
    """Context manager that turns stop signals into a flag the loop reads between steps.

    Installs handlers only in the main thread (signals cannot be handled elsewhere) and restores the
    previous handlers on exit.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.received is not None and name == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the step
        self.received = name

    def __enter__(self) -> StopSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
