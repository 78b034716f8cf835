"""The one exception tree of streamrec; the CLI turns each into one readable line."""


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""


class ConfigError(StreamrecError):
    """A setting or argument is wrong; the message says which and what to use instead."""


class InvalidEvent(StreamrecError):
    """An event does not follow the contract; ``reason`` goes to the dead-letter header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokerUnavailable(StreamrecError):
    """No Kafka-compatible broker answered in time."""


class DataNotFound(StreamrecError):
    """A data set folder is missing or incomplete and could not be downloaded."""


class ModelStateError(StreamrecError):
    """A checkpoint or state store is missing, corrupt or from an incompatible model."""


class LookupFailed(StreamrecError):
    """The lookup API did not give a recommendation list: not reachable, too slow, refused
    the token, or rejected the request. ``status_code`` is the HTTP status when it answered."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class MissingExtra(StreamrecError):
    """An optional dependency is not installed; the message names the extra that brings it."""
