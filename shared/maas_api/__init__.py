"""maas_api: what the model handler and the SageMaker proxy share, and which is HTTP-shaped.

Routes, request validation, the error envelope and its status mapping, the catalog routes and the
OpenAPI document. Shipped in the Lambda layer beside maas_runtime; imports no AWS SDK.
"""

__version__ = "1.0.0"

from .errors import ApiError, envelope  # noqa: E402

_FUNCTION_NAMES = ("ROUTES", "ApiFunction", "Backend", "allowed_methods", "check_json_body")


def __getattr__(name: str):
    # The resolver pulls in Powertools and pydantic: import it on first use, so that
    # `maas_api.constants` stays cheap for a handler that starts loading its model first.
    if name in _FUNCTION_NAMES:
        from . import function

        return getattr(function, name)
    raise AttributeError(f"module 'maas_api' has no attribute {name!r}")

__all__ = ["ROUTES", "ApiError", "ApiFunction", "Backend", "allowed_methods", "check_json_body", "envelope"]
