"""Where a number was measured: the CPU, the commit and the day, recorded beside every result file
(pipeline and study summaries, benchmark and parity results) so that the docs can say it."""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it ("AMD EPYC 7B13"), else the platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def git_commit(root=ROOT) -> str | None:
    """The checkout's commit (short hash, `-dirty` when tracked files differ from it); None outside
    a git checkout (an installed wheel)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def provenance() -> dict:
    """The CPU, core count, commit and UTC date of a measurement."""
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
