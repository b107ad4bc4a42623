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
    """Write a complete checkpoint folder (e.g. `step-N`) so that a kill at any moment leaves
    only complete folders under visible names:

        write every file into the hidden `.step-N.tmp/` (each flushed and fsync'd)
        rename it to `step-N` (an older `step-N` is first renamed out of the way)
        point `latest` at it, then delete all but the newest `keep` folders (renamed, then removed)
    """
    root = directory.parent
    prefix = directory.name.rpartition("-")[0] + "-"
    tmp = root / f".{directory.name}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    except OSError as e:
        raise SftrlError(f"{tmp}: cannot write ({e.strerror})") from None
    for name, data in files.items():
        atomic_write_bytes(tmp / name, data)
    if directory.exists():
        _remove(directory)
    tmp.rename(directory)
    fsync_dir(root)
    atomic_write_text(root / "latest", directory.name + "\n")
    for old in checkpoint_folders(root, prefix)[:-keep]:
        _remove(old)
    return directory


def _remove(directory: Path) -> None:
    """Delete a folder without ever leaving a half-deleted one under its visible name."""
    trash = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(trash, ignore_errors=True)
    directory.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def checkpoint_folders(root: Path, prefix: str = "") -> list[Path]:
    """Complete checkpoint folders `PREFIXN` under root, oldest first."""
    found = []
    for p in Path(root).glob(f"{prefix}*"):
        name, _, number = p.name.rpartition("-")
        if p.is_dir() and name and not name.startswith(".") and number.isdigit() \
                and (p / "trainer_state.json").exists():
            found.append(p)
    return sorted(found, key=lambda p: int(p.name.rpartition("-")[2]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of `out_dir/checkpoints`, or None.

    Folders are renamed into place only once every file is written, so any visible one is
    complete; using the newest (rather than trusting `latest`) also covers a kill between the
    rename and the rewrite of `latest`."""
    folders = checkpoint_folders(Path(out_dir) / "checkpoints")
    return folders[-1] if folders else None


def truncate_jsonl(path, key: str, last: int) -> None:
    """Keep the records of a JSONL log whose `key` is <= last (what a resumed run had checkpointed).
    A line cut short by a kill (not valid JSON) is dropped too."""
    import json

    path = Path(path)
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get(key, last + 1) <= last:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def append_jsonl(path, record: dict) -> None:
    """Append one JSON line and flush it to the kernel (a kill loses at most the line being written)."""
    import json

    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise SftrlError(f"{path}: cannot write ({e.strerror})") from None
