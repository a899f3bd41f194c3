"""The proxy Lambda function for a heavy model: the same API, the graph run by Triton on a GPU endpoint.

The function holds the model's artifact without its graph (card.json, tokenizer.json and the served
graph's KServe v2 metadata, staged by infra) and loads it with maas_runtime like any model function,
but with a `RemoteEngine`: requests are validated, tokenized and post-processed here by the same
task code, and only the tensors travel, as one KServe v2 binary request per batch through
sagemaker-runtime InvokeEndpoint to Triton (SageMaker's Triton image). So the Lambda path and the
GPU path answer alike for the same graph.

Failures become the API's statuses: throttled -> 429, a scale-to-zero model with no copy running ->
503 with Retry-After (the call itself is what wakes it: AWS's alarm counts such refusals), the
endpoint missing or not ready -> 503, a timeout -> 504, Triton refusing our tensors or failing ->
502 (the request was valid: a refusal is this kit's bug; Triton's message goes to the log with
the endpoint's name). The client's timeouts and retries are in maas_api.constants
(SAGEMAKER_WORST_CASE_S).

Handler: ``app.lambda_handler``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from maas_api import ApiFunction, LambdaEntry
from maas_api.constants import (
    DEFAULT_CATALOG_FILE,
    ENV_CATALOG_PATH,
    ENV_MODEL_DIR,
    ENV_MODEL_NAME,
    ENV_SAGEMAKER_ENDPOINT,
    ENV_SAGEMAKER_INFERENCE_COMPONENT,
    ENV_SAGEMAKER_RUNTIME_URL,
    INVOKE_ENDPOINT_MAX_BYTES,
    SAGEMAKER_CONNECT_TIMEOUT_S,
    SAGEMAKER_MAX_ATTEMPTS,
    SAGEMAKER_READ_TIMEOUT_S,
    SCALED_TO_ZERO_RETRY_AFTER_S,
)
from maas_api.errors import ApiError, BadGateway, GatewayTimeout, Throttled, Unavailable, from_runtime
from maas_runtime import Model, RuntimeLibraryError, read_card
from maas_runtime.kserve import ProtocolError, RemoteEngine, header_length_of, read_metadata, sagemaker_content_type

HERE = Path(__file__).resolve().parent

LOCAL_READ_TIMEOUT_S = 120
"""`maas serve` only: the local server runs the GPU's graph on this machine's CPU, far slower."""


@dataclass(frozen=True)
class Config:
    model_name: str
    endpoint_name: str
    model_dir: str | None = None
    """card.json, tokenizer.json and kserve-model.json: the artifact without its graph."""
    inference_component: str | None = None
    catalog_path: str | None = None
    runtime_url: str | None = None
    """Local only: where `maas serve` runs the endpoint. Unset in AWS."""

    @classmethod
    def from_env(cls, env=None) -> "Config":
        env = os.environ if env is None else env
        model_dir = env.get(ENV_MODEL_DIR)
        if model_dir and not os.path.isabs(model_dir):
            model_dir = str(HERE / model_dir)
        return cls(
            model_name=env.get(ENV_MODEL_NAME, ""),
            endpoint_name=env.get(ENV_SAGEMAKER_ENDPOINT, ""),
            model_dir=model_dir or None,
            inference_component=env.get(ENV_SAGEMAKER_INFERENCE_COMPONENT) or None,
            catalog_path=env.get(ENV_CATALOG_PATH) or str(HERE / DEFAULT_CATALOG_FILE),
            runtime_url=env.get(ENV_SAGEMAKER_RUNTIME_URL) or None,
        )


def client_config(read_timeout: float = SAGEMAKER_READ_TIMEOUT_S):
    from botocore.config import Config as BotoConfig

    return BotoConfig(
        connect_timeout=SAGEMAKER_CONNECT_TIMEOUT_S,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": SAGEMAKER_MAX_ATTEMPTS},
        tcp_keepalive=True,
    )


def runtime_client(runtime_url: str | None = None):
    import boto3

    if not runtime_url:
        return boto3.client("sagemaker-runtime", config=client_config())
    # The local endpoint: any credentials will do, but the client must be able to sign.
    session = boto3.session.Session()
    credentials = session.get_credentials()
    return session.client(
        "sagemaker-runtime",
        endpoint_url=runtime_url,
        region_name=session.region_name or "us-east-1",
        aws_access_key_id=None if credentials else "local",
        aws_secret_access_key=None if credentials else "local",
        config=client_config(LOCAL_READ_TIMEOUT_S),
    )


class SageMakerTransport:
    """KServe v2 requests through InvokeEndpoint, in the content type SageMaker's Triton reads as binary."""

    max_payload_bytes = INVOKE_ENDPOINT_MAX_BYTES

    def __init__(self, client, endpoint_name: str, inference_component: str | None = None):
        self._client = client
        self.endpoint_name = endpoint_name
        self.inference_component = inference_component

    def infer(self, body: bytes, header_length: int | None) -> tuple[bytes, int | None]:
        arguments = {"EndpointName": self.endpoint_name, "ContentType": sagemaker_content_type(header_length), "Body": body}
        if self.inference_component:
            arguments["InferenceComponentName"] = self.inference_component
        response = self._client().invoke_endpoint(**arguments)
        return response["Body"].read(), header_length_of(response.get("ContentType"))


_THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException", "ThrottledException"}
_UNAVAILABLE = {"ModelNotReadyException", "ServiceUnavailable", "ServiceUnavailableException"}
_INVALID = {"ValidationError", "ValidationException"}
"""InvokeEndpoint's 400s: today's botocore says ValidationError, older ones ValidationException."""
_NO_CAPACITY = "no capacity"
"""In the ValidationError of an inference component scaled to zero copies."""


def sagemaker_error(exc: Exception, model_name: str) -> ApiError:
    """What a client sees for a failed InvokeEndpoint. Endpoint names and accounts stay in the logs."""
    from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

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
        return BadGateway("the model server failed to process the request", code="model_error")
    if code in _INVALID and _NO_CAPACITY in str(error.get("Message", "")).lower():
        return Unavailable(
            f"model {model_name!r} is scaled to zero and is starting: a GPU instance takes several minutes to "
            f"come up; retry in {SCALED_TO_ZERO_RETRY_AFTER_S} s",
            code="model_starting",
            headers={"Retry-After": str(SCALED_TO_ZERO_RETRY_AFTER_S)},
        )
    if code in _UNAVAILABLE or code in _INVALID:
        # ValidationError also says that the endpoint does not exist (yet): a deployment problem.
        return Unavailable("the model endpoint is not available", code="endpoint_unavailable")
    return BadGateway("the model endpoint call failed", code="upstream_error")


class RemoteModelBackend:
    """The model's card, tokenizer and task here; its graph on the endpoint."""

    def __init__(self, config: Config, client=None):
        self.config = config
        self.name = config.model_name
        self._client = client
        self._model: Model | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = runtime_client(self.config.runtime_url)
        return self._client

    def model(self) -> Model:
        """The model, loaded on first use (a failure is answered, and retried on the next request)."""
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                if not (self.name and self.config.endpoint_name and self.config.model_dir):
                    self._error = "misconfigured"
                    raise Unavailable("this function has no SageMaker endpoint or model configured", code="misconfigured")
                folder = self.config.model_dir
                try:
                    transport = SageMakerTransport(lambda: self.client, self.config.endpoint_name, self.config.inference_component)
                    # Triton's max_batch_size is the card's serving.max_batch (maas.triton.config)
                    max_batch = read_card(folder).serving.max_batch
                    model = Model(folder, engine=RemoteEngine(read_metadata(folder), transport, max_batch=max_batch))
                except RuntimeLibraryError as exc:
                    self._error = exc.code
                    raise from_runtime(exc) from exc
                if model.name != self.name:
                    self._error = "artifact_invalid"
                    raise Unavailable(f"the packaged card is for model {model.name!r}, not {self.name!r}", code="artifact_invalid")
                self._model, self._error = model, None
        return self._model

    def task(self) -> str:
        return self.model().card.task

    def predict(self, inputs: list, parameters: dict) -> dict:
        model = self.model()
        prediction = self._remote(model.predict, inputs, parameters)
        return {"model": model.name, "version": model.version, "outputs": prediction.outputs, "usage": prediction.usage}

    def explain(self, inputs: list, parameters: dict) -> dict:
        """Kernel SHAP here, as in a model function: its coalitions go to the endpoint in batches, as
        predictions do (Triton batches them with other traffic); the card's explain limits bound them."""
        model = self.model()
        explanation = self._remote(model.explain, inputs, parameters)
        return {"model": model.name, "version": model.version, "outputs": explanation.outputs, "usage": explanation.usage}

    def _remote(self, call, inputs: list, parameters: dict):
        where = {"endpoint": self.config.endpoint_name, "inference_component": self.config.inference_component}
        try:
            return call(inputs, parameters)
        except RuntimeLibraryError as exc:
            raise from_runtime(exc) from exc
        except ProtocolError as exc:
            raise BadGateway("the model server's answer could not be read", code="upstream_error", log=where) from exc
        except Exception as exc:  # botocore's: every one is mapped to a status, none escapes as a 500
            error = sagemaker_error(exc, self.name)
            # Triton's own words ({"error": ...} inside a ModelError) go to the log, never to the client.
            response = getattr(exc, "response", None) or {}
            error.log.update(where, upstream_status=response.get("OriginalStatusCode"),
                             upstream_message=str(response.get("OriginalMessage") or "")[:1000] or None)
            raise error from exc

    def check(self) -> dict:
        """The card and tokenizer load, and an endpoint is configured. The endpoint is not called:
        each call is billed, a probe would keep a scale-to-zero model awake, and SageMaker watches
        the container's /ping itself."""
        return {"version": self.model().version}

    def status(self) -> dict:
        model = self._model
        return {"loaded": model is not None, "version": model.version if model else None, "error": self._error}


def create_function(config: Config, client=None, tenants=None) -> ApiFunction:
    """`tenants` (maas_api.tenants.TenantPolicy): `maas serve` passes the manifest's; None reads the environment."""
    return ApiFunction(RemoteModelBackend(config, client=client), config.catalog_path, tenants)


def _prepare(backend: RemoteModelBackend) -> None:
    """Load the card and tokenizer, and create the client (credentials, endpoint resolution)."""
    backend.model()
    backend.client  # noqa: B018


lambda_handler = LambdaEntry(lambda: create_function(Config.from_env()), prepare=_prepare)

if os.environ.get(ENV_MODEL_NAME):
    lambda_handler.init_phase()
