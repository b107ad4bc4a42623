"""Ctrl-C during training: finish the current step, write a checkpoint, say how to resume.

A KeyboardInterrupt can land anywhere -- half way through an optimizer step, between two
tensors of a checkpoint -- so the trainers do not let it: inside `StopRequest`, the first SIGINT
(or SIGTERM, which is what schedulers and `kill` send) only sets `requested`, and the training
loop checks it after each step. A second SIGINT raises KeyboardInterrupt at once, for the
impatient (the last complete checkpoint stays the latest).

    with StopRequest() as stop:
        for step in ...:
            train_step()
            if stop.requested:
                checkpoint(); break
"""

from __future__ import annotations

import signal
import sys
import threading

EXIT_INTERRUPTED = 130  # the shell's code for a process stopped by SIGINT (128 + 2)


def interrupted_message(where: str, checkpoint) -> str:
    """The line both trainers' commands print after a stop request: where, and how to go on."""
    return (f"interrupted at {where}: checkpoint written to {checkpoint}; to continue, run the same "
            "command with --resume")


class StopRequest:
    def __init__(self, message: str = "stopping after this step and writing a checkpoint "
                                      "(press Ctrl-C again to stop at once)"):
        self.message = message
        self.requested = False
        self.signal_name = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        sys.stderr.write(f"\n{self.signal_name}: {self.message}\n")
        sys.stderr.flush()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False
