"""One error taxonomy for every component.

- ``ConfigError``: bad configuration; fatal at start, exit code 2, names the file and field.
- ``TransientError``: may succeed if retried (bounded retry with jittered backoff).
- ``FatalError``: stop the worker with a clear message; never retried.
- ``RecordError``: one bad record; goes to a dead-letter topic, never retried in place.

Unknown exceptions are treated as fatal, not retried.
"""
from __future__ import annotations


class PlatformError(Exception):
    """Root of every error the platform raises on purpose."""

    exit_code = 1


class ConfigError(PlatformError):
    """Configuration is invalid; nothing may run. The message names file and field."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.line = line
        self.field = field
        where = ""
        if file:
            where = file + (f":{line}" if line else "")
        if field:
            where = f"{where} [{field}]" if where else f"[{field}]"
        super().__init__(f"{where}: {message}" if where else message)


class TransientError(PlatformError):
    """A temporary failure (connection lost, deadlock, broker unavailable)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class FatalError(PlatformError):
    """A failure that retrying cannot fix (authentication, schema mismatch)."""


class RecordError(PlatformError):
    """One record cannot be processed; it goes to the dead-letter topic with this reason.

    ``reason`` is a short stable code used as a metric label (bounded cardinality);
    the message carries the details (field, value, record key).
    """

    def __init__(self, reason: str, message: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(message)
