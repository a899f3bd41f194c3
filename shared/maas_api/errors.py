"""The error envelope and the one place where failures become HTTP statuses.

Every error a client sees is ``{"error": {"code", "message"}, "request_id"}``. Messages name
the problem in the request; they never carry a stack trace, a file path or an AWS account id.
What a 5xx leaves out (the root cause, the artifact's key, the endpoint) goes to the log: an
ApiError raised ``from`` its cause carries it, with `log` for the facts the cause does not name.
"""

from __future__ import annotations

from http import HTTPStatus

from maas_runtime.errors import quoted as short  # noqa: F401 - one way to quote client input in a message


class ApiError(Exception):
    """An error with a status and a stable code, safe to show to a client as it is."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "internal_error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None, headers=None,
                 log: dict | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = HTTPStatus(status)
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.log = dict(log or {})
        """Facts for the structured log only (an artifact's S3 key, an endpoint name), never the body."""


# The kinds of failure a client can see: one line each, a table of status and stable code.
class BadRequest(ApiError): status, code = HTTPStatus.BAD_REQUEST, "bad_request"
class Forbidden(ApiError): status, code = HTTPStatus.FORBIDDEN, "forbidden"
class NotFound(ApiError): status, code = HTTPStatus.NOT_FOUND, "not_found"
class MethodNotAllowed(ApiError): status, code = HTTPStatus.METHOD_NOT_ALLOWED, "method_not_allowed"
class PayloadTooLarge(ApiError): status, code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "payload_too_large"
class UnsupportedMediaType(ApiError): status, code = HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"
class Unprocessable(ApiError): status, code = HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_input"
class Throttled(ApiError): status, code = HTTPStatus.TOO_MANY_REQUESTS, "throttled"
class BadGateway(ApiError): status, code = HTTPStatus.BAD_GATEWAY, "upstream_error"
class Unavailable(ApiError): status, code = HTTPStatus.SERVICE_UNAVAILABLE, "model_unavailable"
class GatewayTimeout(ApiError): status, code = HTTPStatus.GATEWAY_TIMEOUT, "upstream_timeout"


# maas_runtime error codes -> (status, code shown to clients). The runtime knows nothing of HTTP.
RUNTIME_STATUS = {
    "invalid_input": (HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_input"),
    "limit_exceeded": (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "limit_exceeded"),
    "not_supported": (HTTPStatus.NOT_FOUND, "not_supported"),
    "artifact_invalid": (HTTPStatus.SERVICE_UNAVAILABLE, "artifact_invalid"),
}


def from_runtime(exc) -> ApiError:
    """An ApiError for a maas_runtime.RuntimeLibraryError (duck-typed: .code and .message)."""
    status, code = RUNTIME_STATUS.get(getattr(exc, "code", ""), (HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error"))
    message = getattr(exc, "message", "") or "the model could not answer"
    if status == HTTPStatus.SERVICE_UNAVAILABLE:
        message = f"the model artifact failed verification and is not served: {message}"
    return ApiError(message, status=status, code=code)


def envelope(code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code, "message": message}, "request_id": request_id}

