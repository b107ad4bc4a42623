"""Errors a user can cause. The CLI prints them as one line `error: ...` and exits with code 2.

Anything else that escapes is a bug and keeps its traceback.
"""


class SftrlError(Exception):
    """Base class of every user-caused error (bad file, bad flag, bad config)."""


class DataError(SftrlError):
    """A data file that cannot be used: the message names `path:line` and the field."""

    def __init__(self, path, problem, line=None, field=None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        what = f"field '{field}': {problem}" if field is not None else problem
        super().__init__(f"{where}: {what}")
        self.path, self.line, self.field, self.problem = str(path), line, field, problem


class ConfigError(SftrlError):
    """An invalid configuration value: the message names the field (and the file, if any)."""

    def __init__(self, field, problem, path=None):
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{field}: {problem}")
        self.field, self.problem, self.path = field, problem, path


class CheckpointError(SftrlError):
    """A checkpoint or model folder that is missing, incomplete or does not match."""
