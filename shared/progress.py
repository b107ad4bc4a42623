"""The progress of a training loop, on stderr: tqdm's bar on a terminal; a plain line now and then
when stderr is a file or a pipe, so that a redirected log (`sftrl pipeline ... 2> log`) holds a few
readable lines instead of a bar redrawn by a carriage return at every step."""

from __future__ import annotations

import math
import sys
import time

PLAIN_EVERY_SECONDS = 30.0   # off a terminal, a line at most this often...
PLAIN_PARTS = 10             # ...and at most once per tenth of the total, whichever is rarer


def duration(seconds: float) -> str:
    """Seconds for a progress line: `42 s` under a minute and a half, else `7 min`."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def progress_bar(total: int, desc: str, unit: str, initial: int = 0, quiet: bool = False, file=None,
                 leave: bool = True):
    """A progress bar of `total` units, `initial` of them done (a resumed run). On a terminal, tqdm's
    bar (leave=False: erased at the end); otherwise a PlainProgress. quiet: nothing is written.
    file: the stream, sys.stderr as it is at the call (a redirect_stderr counts)."""
    file = sys.stderr if file is None else file
    if quiet or not file.isatty():
        return PlainProgress(total, desc, unit, initial, quiet, file)
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=file, dynamic_ncols=True, leave=leave)


class PlainProgress:
    """tqdm's interface, as the trainers use it (update, set_postfix, write, close, `with`), in
    newline-terminated lines: one at the start, one at most every PLAIN_EVERY_SECONDS and every
    1/PLAIN_PARTS of the total, one at close; such as
    `sft: 120/400 steps (30 %), 2.1 steps/s, 2 min left, loss 1.234`. clock: seconds (tests pass a fake)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0, quiet: bool = False, file=None,
                 clock=time.monotonic):
        self.total, self.desc, self.unit, self.quiet = total, desc, unit, quiet
        self.file = sys.stderr if file is None else file
        self.clock, self.postfix, self.closed = clock, "", False
        self.n = self.start_n = self.last_n = initial
        self.started = self.last_time = clock()
        self.every_n = max(math.ceil(total / PLAIN_PARTS), 1)
        self.emit(self.line(self.started))

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if (now - self.last_time >= PLAIN_EVERY_SECONDS and self.n - self.last_n >= self.every_n
                and self.n < self.total):  # the last unit's line is close's
            self.last_n, self.last_time = self.n, now
            self.emit(self.line(now))

    def set_postfix(self, **values) -> None:
        """The line's tail, `loss 1.234, kl 0.010`: the values as the caller formatted them."""
        self.postfix = ", ".join(f"{name} {value}" for name, value in values.items())

    def write(self, text: str) -> None:
        """A message between the progress lines, on stdout as tqdm.write puts it."""
        print(text, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.emit(self.line(self.clock(), final=True))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def line(self, now: float, final: bool = False) -> str:
        """`desc: n/total units (pct %)`, then (once units were done here) the rate and the time left,
        or at close the time taken; then the postfix."""
        units = f"{self.unit}s"
        text = f"{self.desc}: {self.n}/{self.total} {units} ({100 * self.n / max(self.total, 1):.0f} %)"
        elapsed, done = now - self.started, self.n - self.start_n
        if final:
            text += f", {'done in' if self.n >= self.total else 'stopped after'} {duration(elapsed)}"
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.3g} {units}/s" if rate < 100 else f", {rate:.0f} {units}/s"
            if not final:
                text += f", {duration((self.total - self.n) / rate)} left"
        return text + (f", {self.postfix}" if self.postfix else "")

    def emit(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.file, flush=True)
