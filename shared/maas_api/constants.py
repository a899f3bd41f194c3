"""Names and limits the handlers, the proxy and the local API share.

Environment variable names live here and nowhere else (infra/ sets them, functions/ read them).
"""

from __future__ import annotations

# --- configuration of a deployed function (set by infra/, or by `maas serve` locally) ------------
ENV_MODEL_NAME = "MAAS_MODEL_NAME"
"""The one model this function serves (its manifest name)."""
ENV_MODEL_DIR = "MAAS_MODEL_DIR"
"""Folder inside the function package holding card.json and the files it lists."""
ENV_MODEL_S3_URI = "MAAS_MODEL_S3_URI"
"""s3://bucket/prefix/ holding card.json and its files; downloaded to /tmp once per cold start."""
ENV_CATALOG_PATH = "MAAS_CATALOG_PATH"
"""catalog.json packaged with every function (the shape of build/catalog.json)."""
ENV_SAGEMAKER_ENDPOINT = "MAAS_SAGEMAKER_ENDPOINT"
"""The SageMaker endpoint name the proxy forwards to."""
ENV_SAGEMAKER_INFERENCE_COMPONENT = "MAAS_SAGEMAKER_INFERENCE_COMPONENT"
"""With scale to zero (sagemaker.min_instances = 0): the inference component on that endpoint that
serves the model. Unset: the endpoint's variant serves it directly."""
ENV_SAGEMAKER_RUNTIME_URL = "MAAS_SAGEMAKER_RUNTIME_URL"
"""Local only: an endpoint override for the sagemaker-runtime client. Unset in AWS."""
ENV_API_KEY = "MAAS_API_KEY"
"""Local only: the x-api-key `maas serve` requires. In AWS, API Gateway checks keys."""
ENV_TENANT_KEY_IDS = "MAAS_TENANT_KEY_IDS"
"""Every tenant's API key id, "acme=abc123,globex=def456" (CDK joins the keys' refs; never a key's
value): a request's requestContext.identity.apiKeyId names its tenant in logs and metrics."""
ENV_ALLOWED_TENANTS = "MAAS_ALLOWED_TENANTS"
"""The tenants that may call this function's model, "acme,globex" (a usage plan cannot forbid a
method, so the function answers 403 to the others). Unset: no tenant rules."""
ENV_TMP_DIR = "MAAS_TMP_DIR"
"""Where S3 artifacts are downloaded (default: the system temp folder, /tmp in Lambda)."""
MODEL_FUNCTION_ENV = {"OPENBLAS_NUM_THREADS": "1"}
"""What every model function's environment sets besides its model: numpy's BLAS gets one thread.
ONNX Runtime runs the model on its own threads; a second pool of numpy's (an explanation's solve is
its only use) would fight them for Lambda's few vCPUs, and starting it costs its import ~10 ms."""

# The canary's pre-traffic hook (functions/pre_traffic_hook), one per model function.
ENV_HOOK_TARGET_VERSION = "MAAS_HOOK_TARGET_VERSION"
"""The qualified ARN of the version being deployed (the hook invokes it directly, not the alias)."""
ENV_HOOK_REQUESTS = "MAAS_HOOK_REQUESTS"
"""JSON list of the requests the hook sends that version, each with the answer it must get."""

DEFAULT_CATALOG_FILE = "catalog.json"
METRICS_NAMESPACE = "Maas"
METRIC_SERVER_ERRORS = "server_errors"
"""Counted once per 5xx answer, with the version that gave it: the canary rolls a version back on it."""
METRIC_DIMENSION_MODEL = "model"
METRIC_DIMENSION_VERSION = "version"
METRIC_DIMENSION_SERVICE = "service"
METRIC_DIMENSION_TENANT = "tenant"
TENANT_METRICS = ("requests", "inputs", "input_tokens")
"""Counted per tenant and model on every answered prediction or explanation: what `maas usage` reports."""

# --- request limits ----------------------------------------------------------------------------
MAX_BODY_BYTES = 5 * 1024 * 1024
"""The largest request body the API takes, locally and in AWS alike. Lambda's 6 MB limit applies to
the whole event (the body as a JSON string, headers and request context), so a body close to 6 MB
never reaches a function there; 5 MiB leaves that room, and the function answers a larger one
with its own 413. (A body whose JSON escaping would more than double it, such as pages of quotes,
can still exceed the event limit below 5 MiB: API Gateway then answers 413 or 5xx itself.)"""
MAX_JSON_DEPTH = 32
"""The deepest request we accept: an 8x8 image batch is 3 levels; thousands are an attack."""
HEALTH_CACHE_S = 5.0
"""How long GET /health reuses its last smoke inference (and a failure): probes cost no model time."""

INVOKE_ENDPOINT_MAX_BYTES = 6 * 1024 * 1024
"""SageMaker InvokeEndpoint's limit on a request body and on an answer body alike."""

# --- SageMaker runtime client (the proxy): the whole call, retries included, must end inside the
# proxy function's timeout (default 15 s) and API Gateway's 29 s.
SAGEMAKER_CONNECT_TIMEOUT_S = 1
SAGEMAKER_READ_TIMEOUT_S = 3
"""A GPU answers a full batch in well under a second; an answer this late means an overloaded or
broken endpoint, and waiting longer only holds the client (and the proxy) longer."""
SAGEMAKER_MAX_ATTEMPTS = 2
"""Attempts in all, the first included (botocore's standard mode, total_max_attempts): one retry.
Standard mode retries throttling, connection errors and read timeouts alike; an inference that
timed out may still be running on the GPU, so it is sent again at most once."""
SAGEMAKER_RETRY_AFTER_ALLOWANCE_S = 5
"""botocore stretches a backoff to a service's x-amz-retry-after header, by at most 5 s."""
SAGEMAKER_WORST_CASE_S = (
    SAGEMAKER_MAX_ATTEMPTS * (SAGEMAKER_CONNECT_TIMEOUT_S + SAGEMAKER_READ_TIMEOUT_S)
    + sum(min(2**i, 20) + SAGEMAKER_RETRY_AFTER_ALLOWANCE_S for i in range(SAGEMAKER_MAX_ATTEMPTS - 1))
)
"""The longest one InvokeEndpoint call can take, every attempt timing out: 2 x (1 + 3) s, plus the
first retry's backoff (standard mode: rand(0, 1) x 2**0 s for throttling, less otherwise) and its
x-amz-retry-after allowance = 14 s. A proxy function's timeout must exceed it (with room to
tokenize and answer); `maas_api.constants` is where infra reads it."""
SCALED_TO_ZERO_RETRY_AFTER_S = 60
"""Retry-After on the 503 answered while a scale-to-zero model has no copy running: starting one
takes minutes, and every refused call counts towards the alarm that starts it."""

# --- S3 client for artifacts: a cold start's download fails within Lambda's 10 s init, not hangs.
S3_CONNECT_TIMEOUT_S = 2
S3_READ_TIMEOUT_S = 5
"""Per read: a large object streams in many reads, each within this."""
S3_MAX_ATTEMPTS = 2
"""Attempts in all per object (botocore's total_max_attempts), the first included."""

API_KEY_HEADER = "x-api-key"
REQUEST_ID_HEADER = "x-request-id"
JSON = "application/json"
