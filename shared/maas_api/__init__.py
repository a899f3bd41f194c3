"""maas_api: what the model handler and the SageMaker proxy share, and which is HTTP-shaped.

Routes, request validation, the error envelope and its status mapping, the catalog routes and the
OpenAPI document. Shipped in the Lambda layer beside maas_runtime; imports no AWS SDK.
"""

__version__ = "1.0.0"

from .errors import ApiError, envelope  # noqa: E402
from .function import ROUTES, ApiFunction, Backend, allowed_methods, check_json_body  # noqa: E402

__all__ = ["ROUTES", "ApiError", "ApiFunction", "Backend", "allowed_methods", "check_json_body", "envelope"]
