"""Errors the runtime raises. Each carries a stable machine-readable ``code``.

The runtime knows nothing of HTTP: handlers map these codes to statuses in one place.
"""

from __future__ import annotations


def quoted(value, limit: int = 64) -> str:
    """A client-supplied value quoted for an error message: repr (so control characters and lone
    surrogates are escaped), cut to a readable length. Error messages never echo input unbounded."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


class RuntimeLibraryError(Exception):
    code = "runtime_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(RuntimeLibraryError):
    """The request's inputs or parameters do not fit the model's schema."""

    code = "invalid_input"


class LimitExceeded(RuntimeLibraryError):
    """The request is larger than the model's serving limits allow."""

    code = "limit_exceeded"


class NotSupported(RuntimeLibraryError):
    """The model does not offer what the request asks for (an explanation of a model without one)."""

    code = "not_supported"


class ArtifactError(RuntimeLibraryError):
    """A model artifact is missing, tampered with or truncated: it is never served."""

    code = "artifact_invalid"
