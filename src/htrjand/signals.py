"""Stopping long jobs on a signal without losing their work.

SIGTERM (`kill`, a scheduler's preemption or time limit, a container stop) or a first Ctrl-C asks the
job to stop at its next safe point (after a training step is saved, after the lines being read are
written); a second signal stops at once. Training (`training.faults`) and `htrjand recognize` use
it (docs/reliability.md). Light: no PyTorch here.
"""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger("htrjand")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # a terminal's Ctrl-C; kill, schedulers, container stops


class Stopped(Exception):
    """A job stopped on a signal after keeping its work (`exit_code` = 128 + the signal number, as a
    shell reports a process killed by it)."""

    def __init__(self, signum: int, message: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} {message}")
        self.signum, self.exit_code = signum, 128 + signum


class StopSignals:
    """Turns SIGTERM or a first Ctrl-C into `received` (the signal number), for the job to check at
    its safe points; a second signal stops at once, as without this (a SIGTERM by its default
    action, Ctrl-C by KeyboardInterrupt). `when` ends the warning: what the job finishes first.
    Installed by `install()` or `with`; only the main thread can install handlers."""

    def __init__(self, when: str = "the work in progress is saved"):
        self.when = when
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        self.install()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # the second signal: stop at once
            self.restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.received = signum
        log.warning("%s received: stopping once %s (send it again to stop at once)", signal.Signals(signum).name,
                    self.when)


__all__ = ["STOP_SIGNALS", "StopSignals", "Stopped"]
