"""Names and limits the handlers, the serving program and the local API share.

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
ENV_SAGEMAKER_RUNTIME_URL = "MAAS_SAGEMAKER_RUNTIME_URL"
"""Local only: an endpoint override for the sagemaker-runtime client. Unset in AWS."""
ENV_API_KEY = "MAAS_API_KEY"
"""Local only: the x-api-key `maas serve` requires. In AWS, API Gateway checks keys."""
ENV_TMP_DIR = "MAAS_TMP_DIR"
"""Where S3 artifacts are downloaded (default: the system temp folder, /tmp in Lambda)."""

# SageMaker serving program (the container). SageMaker itself sets SM_MODEL_DIR in some images.
ENV_SM_MODEL_DIR = "SM_MODEL_DIR"
ENV_SERVING_PORT = "SAGEMAKER_BIND_TO_PORT"
DEFAULT_SM_MODEL_DIR = "/opt/ml/model"
DEFAULT_SERVING_PORT = 8080

DEFAULT_CATALOG_FILE = "catalog.json"
METRICS_NAMESPACE = "Maas"

# --- request limits ----------------------------------------------------------------------------
MAX_BODY_BYTES = 6 * 1024 * 1024
"""Lambda's synchronous payload limit: a larger body never reaches a function in AWS."""
MAX_JSON_DEPTH = 32
"""The deepest request we accept: an 8x8 image batch is 3 levels; thousands are an attack."""
HEALTH_CACHE_S = 5.0
"""How long GET /health reuses its last smoke inference (and a failure): probes cost no model time."""

# --- SageMaker runtime client: the whole call, retries included, stays under API Gateway's 29 s.
SAGEMAKER_CONNECT_TIMEOUT_S = 1
SAGEMAKER_READ_TIMEOUT_S = 5
SAGEMAKER_MAX_ATTEMPTS = 3
"""Attempts in all, the first included (botocore's total_max_attempts). Worst case: 3 x (1 + 5) s plus standard-mode backoff (< 1 s, then < 2 s) = 21 s."""
SAGEMAKER_EXPLAIN_READ_TIMEOUT_S = 25
"""An explanation runs the model hundreds of times: one attempt, (1 + 25) s, not worth repeating."""
SAGEMAKER_CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
"""How InvokeEndpoint's CustomAttributes reach the container."""
SAGEMAKER_EXPLAIN = "maas-operation=explain"
"""The CustomAttributes that ask the serving program for explanations (Model.explain) instead of predictions."""

# --- S3 client for artifacts: a cold start's download fails within Lambda's 10 s init, not hangs.
S3_CONNECT_TIMEOUT_S = 2
S3_READ_TIMEOUT_S = 5
"""Per read: a large object streams in many reads, each within this."""
S3_MAX_ATTEMPTS = 2
"""Attempts in all per object (botocore's total_max_attempts), the first included."""

API_KEY_HEADER = "x-api-key"
REQUEST_ID_HEADER = "x-request-id"
JSON = "application/json"
