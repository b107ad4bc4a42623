"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

Write to a temporary file in the same directory, flush and fsync it, then `os.replace` it over
the target (atomic on POSIX), then fsync the directory so the rename itself survives a crash.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from shared.errors import SftrlError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise SftrlError(f"{path}: cannot write ({e.strerror})") from None
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SftrlError(f"{path}: cannot write ({e.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_dir(directory) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- checkpoint folders

def write_checkpoint(directory: Path, files: dict[str, bytes], keep: int) -> Path:
    """Write a complete step-N folder atomically: every file into `.step-N.tmp`, fsync, rename
    the folder, then point `latest` at it. A folder named step-N is always complete."""
    root = directory.parent
    tmp = root / f".{directory.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        atomic_write_bytes(tmp / name, data)
    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)
    fsync_dir(root)
    atomic_write_text(root / "latest", directory.name + "\n")
    steps = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: int(p.name[5:]))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The folder `out_dir/checkpoints/latest` names, if it is complete; else None."""
    out_dir = Path(out_dir)
    pointer = out_dir / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = out_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / "trainer_state.json").exists() else None


def truncate_jsonl(path, key: str, last: int) -> None:
    """Keep the records of a JSONL log whose `key` is <= last (what a resumed run had checkpointed)."""
    import json

    path = Path(path)
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)[key] <= last]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
