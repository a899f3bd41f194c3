"""The proxy Lambda function for a heavy model: the same API, answered by a SageMaker endpoint.

Invoke and embeddings requests are forwarded with sagemaker-runtime InvokeEndpoint. The client
gives up well inside API Gateway's 29 s (see maas_api.constants), retries throttling with the
standard mode's backoff, and every failure becomes the API's statuses: throttled -> 429, the
endpoint missing or not ready -> 503, a timeout -> 504, the container failing -> 502, and a
container's own 4xx (bad input, too many inputs) is passed through as it is.

Handler: ``app.lambda_handler``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from maas_api import ApiFunction
from maas_api.catalog import Catalog
from maas_api.constants import (
    DEFAULT_CATALOG_FILE,
    ENV_CATALOG_PATH,
    ENV_MODEL_NAME,
    ENV_SAGEMAKER_ENDPOINT,
    ENV_SAGEMAKER_RUNTIME_URL,
    JSON,
    SAGEMAKER_CONNECT_TIMEOUT_S,
    SAGEMAKER_EXPLAIN,
    SAGEMAKER_EXPLAIN_READ_TIMEOUT_S,
    SAGEMAKER_MAX_ATTEMPTS,
    SAGEMAKER_READ_TIMEOUT_S,
)
from maas_api.errors import ApiError, BadGateway, GatewayTimeout, Throttled, Unavailable

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Config:
    model_name: str
    endpoint_name: str
    catalog_path: str | None = None
    runtime_url: str | None = None
    """Local only: where `maas serve` runs the serving program. Unset in AWS."""

    @classmethod
    def from_env(cls, env=None) -> "Config":
        env = os.environ if env is None else env
        return cls(
            model_name=env.get(ENV_MODEL_NAME, ""),
            endpoint_name=env.get(ENV_SAGEMAKER_ENDPOINT, ""),
            catalog_path=env.get(ENV_CATALOG_PATH) or str(HERE / DEFAULT_CATALOG_FILE),
            runtime_url=env.get(ENV_SAGEMAKER_RUNTIME_URL) or None,
        )


def client_config(read_timeout: int = SAGEMAKER_READ_TIMEOUT_S, attempts: int = SAGEMAKER_MAX_ATTEMPTS):
    from botocore.config import Config as BotoConfig

    return BotoConfig(
        connect_timeout=SAGEMAKER_CONNECT_TIMEOUT_S,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": attempts},
        tcp_keepalive=True,
    )


def runtime_client(runtime_url: str | None = None, config=None):
    import boto3

    config = config or client_config()
    if not runtime_url:
        return boto3.client("sagemaker-runtime", config=config)
    # The local serving program: any credentials will do, but the client must be able to sign.
    session = boto3.session.Session()
    credentials = session.get_credentials()
    return session.client(
        "sagemaker-runtime",
        endpoint_url=runtime_url,
        region_name=session.region_name or "us-east-1",
        aws_access_key_id=None if credentials else "local",
        aws_secret_access_key=None if credentials else "local",
        config=config,
    )


_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException", "ThrottledException"}
_UNAVAILABLE = {"ModelNotReadyException", "ServiceUnavailable", "ServiceUnavailableException"}


def sagemaker_error(exc: Exception) -> ApiError:
    """What a client sees for a failed InvokeEndpoint. Endpoint names and accounts stay in the logs."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return GatewayTimeout("the model endpoint did not answer in time", code="upstream_timeout")
    if isinstance(exc, EndpointConnectionError):
        return Unavailable("the model endpoint cannot be reached", code="endpoint_unavailable")
    if not isinstance(exc, ClientError):
        return BadGateway("the model endpoint call failed", code="upstream_error")
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if code in _THROTTLED:
        return Throttled("the model endpoint is throttling requests; retry with backoff", headers={"Retry-After": "1"})
    if code == "ModelError":
        return _model_error(exc.response)
    if code in _UNAVAILABLE:
        return Unavailable("the model endpoint is not available", code="endpoint_unavailable")
    if code == "ValidationException":
        # InvokeEndpoint says this when the endpoint does not exist (yet): a deployment problem.
        return Unavailable("the model endpoint is not available", code="endpoint_unavailable")
    return BadGateway("the model endpoint call failed", code="upstream_error")


def _model_error(response: dict) -> ApiError:
    """The container answered non-2xx: pass its own 4xx envelope through, anything else is a 502."""
    original = response.get("OriginalStatusCode")
    try:
        status = int(original)
    except (TypeError, ValueError):
        status = 0
    if 400 <= status < 500 and status != 404:
        try:
            detail = json.loads(response.get("OriginalMessage") or "")["error"]
            return ApiError(str(detail["message"])[:500], status=status, code=str(detail["code"])[:64])
        except (ValueError, KeyError, TypeError):
            pass
    return BadGateway("the model endpoint failed to process the request", code="model_error")


class SageMakerBackend:
    def __init__(self, config: Config, client=None, explain_client=None):
        self.config = config
        self.name = config.model_name
        self._client = client
        self._explain_client = explain_client
        self._lock = threading.Lock()
        self._catalog: Catalog | None = None

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = runtime_client(self.config.runtime_url)
        return self._client

    def _entry(self):
        if self._catalog is None:
            self._catalog = Catalog.load(self.config.catalog_path)
        entry = self._catalog.entry(self.name)
        if entry is None:
            raise Unavailable(f"model {self.name!r} is not in this function's catalog", code="misconfigured")
        return entry

    def task(self) -> str:
        return self._entry().card.task

    @property
    def explain_client(self):
        if self._explain_client is None:
            with self._lock:
                if self._explain_client is None:
                    config = client_config(read_timeout=SAGEMAKER_EXPLAIN_READ_TIMEOUT_S, attempts=1)
                    self._explain_client = runtime_client(self.config.runtime_url, config)
        return self._explain_client

    def predict(self, inputs: list, parameters: dict) -> dict:
        return self._invoke(self.client, inputs, parameters, {})

    def explain(self, inputs: list, parameters: dict) -> dict:
        """The container explains with the same runtime (Model.explain), asked through InvokeEndpoint's
        CustomAttributes; with a client of its own: one attempt, a longer read timeout."""
        return self._invoke(self.explain_client, inputs, parameters, {"CustomAttributes": SAGEMAKER_EXPLAIN})

    def _invoke(self, client, inputs: list, parameters: dict, extra: dict) -> dict:
        if not self.config.endpoint_name:
            raise Unavailable("this function has no SageMaker endpoint configured", code="misconfigured")
        body = json.dumps({"inputs": inputs, "parameters": parameters})
        try:
            response = client.invoke_endpoint(
                EndpointName=self.config.endpoint_name, ContentType=JSON, Accept=JSON, Body=body, **extra
            )
            payload = json.loads(response["Body"].read())
        except ValueError:
            raise BadGateway("the model endpoint answered with something other than JSON", code="upstream_error",
                             log={"endpoint": self.config.endpoint_name})
        except Exception as exc:
            error = sagemaker_error(exc)
            error.log["endpoint"] = self.config.endpoint_name
            raise error from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("outputs"), list):
            raise BadGateway("the model endpoint's answer has no outputs", code="upstream_error")
        if len(payload["outputs"]) != len(inputs):
            raise BadGateway("the model endpoint answered for a different number of inputs", code="upstream_error")
        return {
            "model": self.name,
            "version": str(payload.get("version") or self._entry().card.version),
            "outputs": payload["outputs"],
            "usage": payload.get("usage") if isinstance(payload.get("usage"), dict) else {},
        }

    def check(self) -> dict:
        """The minimal check: the model is in the catalog and an endpoint is configured. It does not
        call the endpoint (each call is billed, and SageMaker's own health checks watch /ping)."""
        if not self.config.endpoint_name:
            raise Unavailable("this function has no SageMaker endpoint configured", code="misconfigured")
        return {"version": self._entry().card.version}

    def status(self) -> dict:
        try:
            version = self._entry().card.version
        except ApiError:
            return {"loaded": False, "version": None, "error": "misconfigured"}
        return {"loaded": self._client is not None, "version": version, "error": None}


def create_function(config: Config, client=None) -> ApiFunction:
    return ApiFunction(SageMakerBackend(config, client=client), config.catalog_path)


_function: ApiFunction | None = None


def lambda_handler(event, context):
    global _function
    if _function is None:
        _function = create_function(Config.from_env())
    return _function.invoke(event, context)


if os.environ.get(ENV_MODEL_NAME):
    # Create the client in the init phase (credential resolution, endpoint discovery).
    _function = create_function(Config.from_env())
    _function.backend.client  # noqa: B018
