"""Stopping on SIGTERM / Ctrl-C without losing work.

The first signal asks the loop to stop: it finishes the current step, saves a checkpoint, waits
until the checkpoint is durable, and only then says so. Further signals while that happens are
acknowledged, not obeyed: a second Ctrl-C cannot leave a half-written checkpoint behind. A process
that does not reach the end of a step within `grace_s` of the first signal (a hung data pipeline,
a collective waiting for a dead peer) exits on its own, without a final checkpoint; the last
complete one is kept. With several processes the stop is agreed on every step, so all processes
save the same step together even when only one of them was signalled.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopRequested:
    def __init__(self, grace_s: float = 300.0, *, name: str = "run"):
        self.grace_s, self.name = grace_s, name
        self._requested = False
        self._saving = False
        self._watchdog: threading.Timer | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        what = signal.Signals(signum).name
        if self._saving:
            print(f"{self.name}: {what} received while the final checkpoint is written; "
                  "finishing it first", file=sys.stderr, flush=True)
            return
        if self._requested:
            print(f"{self.name}: {what} again; still waiting for the current step to end",
                  file=sys.stderr, flush=True)
            return
        self._requested = True
        print(f"{self.name}: {what} received; saving a checkpoint after the current step",
              file=sys.stderr, flush=True)
        self._watchdog = threading.Timer(self.grace_s, self._give_up, args=(signum,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _give_up(self, signum):
        if self._saving:
            return
        print(f"{self.name}: no step ended within {self.grace_s:.0f} s of the signal; exiting "
              "without a final checkpoint (the last complete checkpoint is kept)",
              file=sys.stderr, flush=True)
        os._exit(128 + signum)

    @property
    def requested(self) -> bool:
        """Whether any process of the run was asked to stop (agreed across processes)."""
        if jax.process_count() == 1:
            return self._requested
        flags = multihost_utils.process_allgather(np.array(self._requested))
        return bool(np.any(flags))

    def saving(self) -> None:
        """The final save has started: signals no longer interrupt, the watchdog stands down."""
        self._saving = True
        if self._watchdog is not None:
            self._watchdog.cancel()

    def __exit__(self, *exc):
        if self._watchdog is not None:
            self._watchdog.cancel()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
