"""maas_api: what the model handler and the SageMaker proxy share, and which is HTTP-shaped.

The route table (`routes`), request validation, the error envelope and its status mapping, the
catalog routes and the OpenAPI document. Shipped in the Lambda layer beside maas_runtime; imports
no AWS SDK.
"""

__version__ = "1.0.0"

from .errors import ApiError, envelope  # noqa: E402

# Imported on first use: the function pulls in Powertools' Logger and Metrics and pydantic, the
# route table pydantic, and `maas_api.constants` must stay cheap for a handler that starts loading
# its model first.
_LAZY = {
    "ApiFunction": "function",
    "Backend": "function",
    "check_json_body": "function",
    "LambdaEntry": "function",
    "ROUTES": "routes",
    "RouteSpec": "routes",
    "allowed_methods": "routes",
}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'maas_api' has no attribute {name!r}")


__all__ = ["ApiError", "envelope", *_LAZY]
