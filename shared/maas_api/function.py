"""One model's API function: routing, validation and errors around a backend, with Powertools'
Logger, Tracer and Metrics.

The per-model Lambda handler (a local ONNX model) and the SageMaker proxy (a remote endpoint)
differ only in their backend; validation, errors, metrics and the OpenAPI document are defined
here once. A request is routed by the table (`routes.find`), its body validated by the route's
pydantic model, and answered by the `Operations` method of the route's name; what that returns
is validated and serialized as the route's response model. Each `ApiFunction` is one warm
"instance": in Lambda there is one per process; the local API keeps one per model and never runs
two requests through the same one at once.

Why not Powertools' REST resolver (the project used it until measured): the route table already
matched every request once before the resolver matched it again (the JSON checks run before
routing), the OpenAPI document is generated from the table (openapi.py), and the resolver's
errors were translated back into the envelope by exception handlers. What it added on top cost,
on the 2-core bench machine, about 0.1 s of every cold start (importing its event handler and
OpenAPI machinery) and 0.3-0.8 ms of every request (its middleware chain and a second JSON parse;
quiet machine and bench runs), against a 3-4 ms model run at batch 1. Validation is still
pydantic's, with the same models.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
import sys
import time
import types
import warnings
from contextlib import nullcontext
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable, Protocol

import orjson
from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.shared.constants import TRACER_DISABLED_ENV as TRACE_DISABLED_ENV
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled
from pydantic import TypeAdapter, ValidationError

from . import __version__
from .catalog import Catalog
from .constants import HEALTH_CACHE_S, JSON, MAX_BODY_BYTES, MAX_JSON_DEPTH, METRICS_NAMESPACE, REQUEST_ID_HEADER
from .constants import METRIC_DIMENSION_MODEL, METRIC_DIMENSION_SERVICE, METRIC_DIMENSION_VERSION, METRIC_SERVER_ERRORS
from .constants import METRIC_DIMENSION_TENANT
from .errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    envelope,
    short,
)
from .routes import EMBEDDING_TASK, ROUTES, allowed_methods, find
from .tenants import TenantPolicy
from .schemas import EmbeddingsRequest, ExplainRequest, Health, InvokeRequest, ModelList

# Health, catalog and error answers record no metric by design; Powertools warns about each one.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

class Backend(Protocol):
    """What answers for one model: a local ONNX model, or a SageMaker endpoint.

    Every method but `status` raises ApiError on failure, raised ``from`` its root cause (and with
    `ApiError.log` naming what the cause does not: an S3 key, an endpoint), which the function logs.
    """

    name: str

    def task(self) -> str:
        """The model's task ("embedding", ...); may load the model."""

    def predict(self, inputs: list, parameters: dict) -> dict:
        """{"model", "version", "outputs", "usage"}."""

    def explain(self, inputs: list, parameters: dict) -> dict:
        """The inputs' explanations, shaped as predict's answer."""

    def status(self) -> dict:
        """{"loaded": bool, "version": str | None, "error": code | None} without loading anything."""

    def check(self) -> dict:
        """Prove the model answers: run its smoke input the way a request runs (loading it first if
        need be); {"version": str}. The health route calls it, at most once per HEALTH_CACHE_S."""


def serialize_json(body: Any) -> str:
    """Response bodies with orjson: a batch of embeddings is thousands of floats, which the
    standard library's encoder turns into text many times more slowly."""
    return orjson.dumps(body).decode()


def log_json(record: dict) -> str:
    """Powertools' log lines with orjson (its `json_serializer` hook): each rejected or failed
    request writes one, and each answered one where metrics are off. What orjson cannot encode
    (an int beyond 64 bits) falls back to json.dumps; other objects print as str, as Powertools'
    default does."""
    try:
        return orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(record, default=str, separators=(",", ":"))


class RequestMetrics(EphemeralMetrics):
    """Powertools' EMF metrics (its provider and its record), printed with orjson.

    In Lambda every answered request flushes one EMF record. Powertools' flush encodes it with the
    standard library's json and reads the environment again for whether metrics are off: timed
    right after a short text's model run (where the interpreter's state is out of the CPU
    caches), 0.13 ms of the API's 0.3 ms after the model; orjson and the flag read once make it
    about half. Where metrics are off, or nothing was recorded, Powertools' own flush decides."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.disabled = is_metrics_disabled()

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if self.disabled or not self.metric_set:
            super().flush_metrics(raise_on_empty_metrics)
            return
        print(orjson.dumps(self.serialize_metric_set()).decode())
        self.clear_metrics()


def _tracing_disabled() -> bool:
    return os.environ.get(TRACE_DISABLED_ENV, "false").strip().lower() in ("1", "true", "yes", "on")


def _header(event: dict, name: str) -> str | None:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return value
    return None


def request_id_of(event: dict, context=None) -> str | None:
    rid = ((event or {}).get("requestContext") or {}).get("requestId")
    return rid or getattr(context, "aws_request_id", None)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def check_json_body(event: dict) -> dict:
    """The body of a route that takes one, parsed; rejected (4xx) where no route could use it: too
    large, not JSON, empty, too deep, not an object."""
    raw = event.get("body")
    if event.get("isBase64Encoded") and raw is not None:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("the request body is not valid base64") from None
    else:
        data = (raw or "").encode("utf-8", "surrogatepass")
    if len(data) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is {len(data)} bytes; the limit is {MAX_BODY_BYTES}")
    content_type = (_header(event, "content-type") or "").split(";")[0].strip().lower()
    if content_type and content_type != JSON:
        raise UnsupportedMediaType(f"Content-Type must be {JSON}, got {short(content_type)}")
    if not data.strip():
        raise BadRequest('the request body is empty; send a JSON object such as {"inputs": [...]}')
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise BadRequest(f"the request body is nested too deeply (limit {MAX_JSON_DEPTH} levels)") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if _depth(parsed) > MAX_JSON_DEPTH:
        raise BadRequest(f"the request body is nested too deeply (limit {MAX_JSON_DEPTH} levels)")
    if not isinstance(parsed, dict):
        raise Unprocessable(f"the request body must be a JSON object, got {type(parsed).__name__}")
    return parsed


def validation_message(errors: list[dict]) -> str:
    """pydantic's errors as one message; field names come from the client, so each is cut short."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(p if isinstance(p, str) and p.isidentifier() and len(p) <= 40 else short(p, 40)
                       for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {str(err.get('msg') or err.get('type'))[:200]}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


@lru_cache(maxsize=None)
def _adapter(model: Any) -> TypeAdapter:
    """pydantic's validator and serializer for a route's request or response model, made once."""
    return TypeAdapter(model)


def validated_body(model: type, body: dict) -> Any:
    """The body as the route's request model; 422 schema_violation naming each failing field."""
    try:
        return _adapter(model).validate_python(body)
    except ValidationError as exc:
        raise Unprocessable(validation_message(exc.errors()), code="schema_violation") from None


def response_body(model: Any, answer: Any) -> str:
    """An operation's answer validated as the route's response model (a mismatch is a bug: 500)
    and serialized as that model; a route without one (None) answers a JSON document as is."""
    if model is None:
        return answer
    adapter = _adapter(model)
    return adapter.dump_json(adapter.validate_python(answer), by_alias=True).decode()


def proxy_response(status: int, body: str, headers: dict[str, str] | None = None) -> dict:
    """An API Gateway REST proxy answer (payload 1.0) with a JSON body, each header a one-value list."""
    headers = {"Content-Type": JSON, **(headers or {})}
    return {"statusCode": status, "multiValueHeaders": {name: [value] for name, value in headers.items()},
            "body": body, "isBase64Encoded": False}


def build_validators() -> None:
    """Build every route's validators and serializers now rather than on first use (the models
    defer them: an import builds none, a cold start builds those it needs)."""
    for spec in ROUTES:
        for model in (spec.request, spec.response):
            if model is not None:
                _adapter(model).rebuild(force=True)


def _float32_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class ApiFunction:
    """The handler for one model, with its own logger, tracer and metrics."""

    def __init__(self, backend: Backend, catalog_path: str | None, tenants: TenantPolicy | None = None):
        self.backend = backend
        self.catalog_path = catalog_path
        self.tenants = tenants if tenants is not None else TenantPolicy.from_env()
        self._catalog: Catalog | None = None
        self._openapi: dict[bool, str] = {}
        self._health: tuple[float, Health | ApiError] | None = None
        self.event: dict = {}
        """The request being answered (its tenant, identity and request id)."""
        self.operations = Operations(self)
        service = f"maas-{backend.name}"
        self.logger = Logger(service=service, json_serializer=log_json)
        # Tracer imports the X-Ray SDK (and botocore) and starts its sampler, on every
        # cold start. Where tracing is off (locally, in tests, in bench) it is never created.
        self.tracer = None if _tracing_disabled() else Tracer(service=service)
        self.metrics = RequestMetrics(namespace=METRICS_NAMESPACE, service=service)
        self.metrics.set_default_dimensions(model=backend.name)
        # Off Lambda (POWERTOOLS_METRICS_DISABLED, read once: `self.metrics.disabled`), record
        # nothing rather than buffer and print.
        handler = self.metrics.log_metrics(capture_cold_start_metric=True)(self._resolve)
        if self.tracer is not None:
            # Responses (embeddings, user data) stay out of X-Ray; errors are still recorded.
            handler = self.tracer.capture_lambda_handler(handler, capture_response=False)
        # The correlation id (API Gateway's request id) is set in _resolve, which reads it anyway,
        # rather than by a JMESPath query over the event on every request.
        self._handler = self.logger.inject_lambda_context(clear_state=True)(handler)

    # --- the Lambda entry point ---------------------------------------------------------------

    def invoke(self, event: dict, context) -> dict:
        return self._handler(event, context)

    __call__ = invoke

    def _resolve(self, event: dict, context) -> dict:
        request_id = request_id_of(event, context)
        self.logger.set_correlation_id(request_id)
        tenant = self.tenants.tenant(event)
        if tenant is not None:
            self.logger.append_keys(tenant=tenant)
        self.event = event
        try:
            result = self._dispatch(event)
        except ApiError as exc:
            result = self._error_dict(exc, request_id)
        except Exception as exc:  # noqa: BLE001 - a bug: a 500 with its cause logged, never a stack trace
            error = ApiError("internal error; quote the request_id when reporting it")
            error.__cause__ = exc
            result = self._error_dict(error, request_id)
        finally:
            self.event = {}
        if not self.metrics.disabled and int(result.get("statusCode") or 500) >= 500:
            self._count_server_error(context)
        if request_id:
            result["multiValueHeaders"][REQUEST_ID_HEADER] = [request_id]
        return result

    def _dispatch(self, event: dict) -> dict:
        """The route's answer: found in the table (405 naming the allowed methods, else 404), its
        body checked and validated, its operation called with the path parameters."""
        method = str(event.get("httpMethod") or "").upper()
        path = str(event.get("path") or "/")
        spec = find(method, path)
        if spec is None:
            allowed = allowed_methods(path)
            if allowed:
                raise MethodNotAllowed(f"{method} is not allowed on {short(path, 100)}; use {', '.join(allowed)}",
                                       headers={"Allow": ", ".join(allowed)})
            raise NotFound(f"no route {method} {short(path, 100)}; GET /openapi.json lists the API")
        arguments: dict[str, Any] = spec.match(path)
        if spec.request is not None:
            arguments["body"] = validated_body(spec.request, check_json_body(event))
        answer = getattr(self.operations, spec.operation)(**arguments)
        return proxy_response(200, response_body(spec.response, answer))

    def _count_server_error(self, context) -> None:
        """One `server_errors` metric, flushed now, with the version that answered: the canary's
        rollback alarm watches the version being deployed (a 5xx answer is no Lambda error)."""
        version = getattr(context, "function_version", None) or "$LATEST"
        dimensions = {METRIC_DIMENSION_SERVICE: self.metrics.service, METRIC_DIMENSION_MODEL: self.backend.name,
                      METRIC_DIMENSION_VERSION: version}
        with single_metric(name=METRIC_SERVER_ERRORS, unit=MetricUnit.Count, value=1, namespace=METRICS_NAMESPACE,
                           default_dimensions=dimensions):
            pass

    def _error_dict(self, exc: ApiError, request_id: str | None) -> dict:
        self._log_error(exc, request_id)
        return proxy_response(int(exc.status), json.dumps(envelope(exc.code, exc.message, request_id)), exc.headers)

    # --- what the operations use ----------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.load(self.catalog_path)
        return self._catalog

    def _log_error(self, exc: ApiError, request_id: str | None) -> None:
        """A 4xx is logged as the client's problem; a 5xx (as an error) and a 429 (as a warning: a
        capacity signal) with the root cause (the deepest exception it was raised from: type,
        message, traceback) and what ApiError.log names along the way."""
        fields = {"status": int(exc.status), "code": exc.code, "request_id": request_id}
        if exc.status < 500 and exc.status != 429:
            self.logger.info("request rejected", extra=fields)
            return
        root: BaseException = exc
        for _ in range(16):  # a chain, not a cycle
            below = root.__cause__ or (None if root.__suppress_context__ else root.__context__)
            if below is None:
                break
            root = below
            fields.update(getattr(root, "log", None) or {})
        fields.update(exc.log)
        fields.update(error_type=type(root).__name__, error_message=str(root)[:2000])
        exc_info = (type(root), root, root.__traceback__) if root is not exc else None
        log = self.logger.error if exc.status >= 500 else self.logger.warning
        log(f"request failed: {exc.message}", extra=fields, exc_info=exc_info)

    def own_model(self, name: str) -> None:
        """Refuse (404) a path naming a model this function does not serve."""
        if name == self.backend.name:
            return
        try:
            known = self.catalog.names()
        except ApiError:
            known = [self.backend.name]
        if name in known:
            raise NotFound(f"model {short(name)} is served by its own function, not this one ({self.backend.name!r})")
        raise NotFound(f"unknown model {short(name)}; known models: {', '.join(known)} (GET /models lists them)")

    def own_version(self, name: str, version: str) -> None:
        """Refuse (404) a pinned path naming a version this function does not serve: an unknown one
        (naming the versions kept), or one served by another version's function."""
        self.own_model(name)
        self.catalog.version_entry(name, version)
        self.backend.task()  # loads the model: the backend then knows its version
        served = self.backend.status().get("version")
        if served != version:
            raise NotFound(f"version {short(version)} of {name!r} is served by its own function, not this one "
                           f"({served!r}); POST /models/{name}/versions/{short(version)}/invoke reaches it through the API")

    def predict(self, inputs: list, parameters: dict) -> dict:
        """The backend's answer, timed, traced, logged and recorded as metrics."""
        return self._answer("predict", self.backend.predict, inputs, parameters)

    def explain(self, inputs: list, parameters: dict) -> dict:
        """The backend's explanations, recorded like predictions (their latency under its own name:
        an explanation runs the model thousands of times, and would skew the prediction latency)."""
        return self._answer("explain", self.backend.explain, inputs, parameters)

    def _answer(self, operation: str, call: Callable[[list, dict], dict], inputs: list, parameters: dict) -> dict:
        event = self.event
        self.tenants.check(event, self.backend.name)
        started = time.perf_counter()
        span = nullcontext() if self.tracer is None else self.tracer.provider.in_subsegment(f"## {operation}")
        with span:
            result = call(inputs, parameters)
        latency_ms = (time.perf_counter() - started) * 1000
        usage = result.get("usage") or {}
        message = "invoked" if operation == "predict" else operation
        if self.metrics.disabled:
            self.logger.info(message, extra={"batch_size": len(inputs), "latency_ms": round(latency_ms, 2), "usage": usage})
            return result
        # In Lambda the request's one line is its EMF record: the metrics, and as its metadata
        # (Powertools' add_metadata: searchable in the logs, no metric) what the log line said.
        # A separate INFO line cost as much as the rest of the API's work together, on a request
        # whose interpreter state the model run has just pushed out of the CPU caches.
        self._add_metrics(latency_ms, len(inputs), usage, "latency" if operation == "predict" else f"{operation}_latency")
        tenant = self.tenants.tenant(event)
        request = {"message": message, "request_id": self.logger.get_correlation_id(), "usage": usage}
        if tenant is not None:
            request["tenant"] = tenant
            self._count_tenant_usage(tenant, len(inputs), usage)
        for key, value in request.items():
            self.metrics.add_metadata(key, value)
        return result

    def _count_tenant_usage(self, tenant: str, batch_size: int, usage: dict) -> None:
        """requests, inputs and input_tokens by model and tenant, flushed now as one EMF record: what
        `maas usage` reads from CloudWatch. Its own record, so the model's other metrics keep their
        dimensions (and the alarms and dashboards on them)."""
        metrics = RequestMetrics(namespace=METRICS_NAMESPACE, service=self.metrics.service)
        metrics.set_default_dimensions(**{METRIC_DIMENSION_MODEL: self.backend.name, METRIC_DIMENSION_TENANT: tenant})
        metrics.add_metric(name="requests", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="inputs", unit=MetricUnit.Count, value=batch_size)
        metrics.add_metric(name="input_tokens", unit=MetricUnit.Count, value=int(usage.get("input_tokens", 0)))
        metrics.flush_metrics()

    def _add_metrics(self, latency_ms: float, batch_size: int, usage: dict, latency: str = "latency") -> None:
        self.metrics.add_metric(name=latency, unit=MetricUnit.Milliseconds, value=latency_ms)
        self.metrics.add_metric(name="batch_size", unit=MetricUnit.Count, value=batch_size)
        if "input_tokens" in usage:
            self.metrics.add_metric(name="input_tokens", unit=MetricUnit.Count, value=usage["input_tokens"])

    def health(self) -> Health:
        """The backend's check, reused for HEALTH_CACHE_S (a failure too: a broken model is not
        retried on every probe); a failure answers 503 with its reason."""
        now = time.monotonic()
        if self._health is None or now - self._health[0] > HEALTH_CACHE_S:
            try:
                result = self.backend.check()
                outcome: Health | ApiError = Health(
                    status="ok", model=self.backend.name, version=str(result["version"]), loaded=True,
                    checked_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                )
            except ApiError as exc:
                outcome = exc
            except Exception as exc:  # noqa: BLE001 - a backend bug: still a 503 with its cause logged
                outcome = Unavailable(f"the health check failed ({type(exc).__name__})", code="model_error")
                outcome.__cause__ = exc
            self._health = (now, outcome)
        outcome = self._health[1]
        if isinstance(outcome, ApiError):
            raise Unavailable(f"health check failed: {outcome.message}", code=outcome.code) from outcome
        return outcome

    def openapi_json(self, api_key_required: bool = False) -> str:
        """The OpenAPI document of the whole API (maas_api.openapi), with the API key as a security
        scheme where requests reach this function through a key check (API Gateway's methods
        require one; `maas serve` where it was given one)."""
        if api_key_required not in self._openapi:
            # Imported here, not at module load: only this route needs it (and pydantic's schema
            # generation), and importing it at load would lengthen every cold start.
            from .openapi import document

            self._openapi[api_key_required] = serialize_json(document(
                self.catalog, self.backend.name, api_key_required=api_key_required,
                title="maas: models as a service", version=__version__,
                description="Optimized ONNX models behind one HTTPS API, one path per model. Errors are "
                            '{"error": {"code", "message"}, "request_id"}.',
            ))
        return self._openapi[api_key_required]


PYDANTIC_PLUGINS_ENV = "PYDANTIC_DISABLE_PLUGINS"
_PYDANTIC_PLUGIN_LOADER = "pydantic.plugin._loader"


def _no_pydantic_plugins() -> None:
    """Where all pydantic plugins are disabled, tell pydantic it has none without its plugin loader.

    Disabled plugins are never looked up, but the loader module imports `importlib.metadata` at its
    top (and with it email, zipfile, csv, ...): ~20 ms of GIL-bound work in a cold start, for
    nothing. Its one entry point, `get_plugins()`, returns no plugins when they are all disabled; a
    module whose `get_plugins()` returns none is registered in its place. A loader already imported,
    or plugins not all disabled, are left alone. (pydantic 2.14: `plugin/_schema_validator.py`
    imports `get_plugins` from it, when the first validator is built.)
    """
    if os.environ.get(PYDANTIC_PLUGINS_ENV) not in ("__all__", "1", "true") or _PYDANTIC_PLUGIN_LOADER in sys.modules:
        return
    loader = types.ModuleType(_PYDANTIC_PLUGIN_LOADER, "pydantic plugins, all disabled (maas_api.function)")
    loader.get_plugins = lambda: ()
    sys.modules[_PYDANTIC_PLUGIN_LOADER] = loader


class LambdaEntry:
    """A handler module's ``lambda_handler``: its ApiFunction, made once per process.

    Lambda imports the module in its init phase, which runs at full CPU before the first
    request's clock starts: `init_phase` makes the function there, builds every route's
    validators, and `prepare`s its backend (loads the model, creates clients). A failure then is
    no crash: it is answered per request (503/502) and retried on the next one.

    The process loads no pydantic plugins unless PYDANTIC_DISABLE_PLUGINS is set otherwise: looking
    for them scans the entry points of every installed distribution when the first validator is
    built, 20-35 ms of a cold start on 2 cores, and a function has none (`_no_pydantic_plugins`).
    """

    def __init__(self, create: Callable[[], "ApiFunction"], prepare: Callable[[Backend], object]):
        os.environ.setdefault(PYDANTIC_PLUGINS_ENV, "__all__")
        _no_pydantic_plugins()
        self._create, self._prepare = create, prepare
        self.function: ApiFunction | None = None

    def __call__(self, event: dict, context) -> dict:
        if self.function is None:
            self.function = self._create()
        return self.function.invoke(event, context)

    def init_phase(self) -> None:
        self.function = self._create()
        build_validators()  # the first costs ~30 ms of pydantic's set-up: here, while a packaged model loads
        try:
            self._prepare(self.function.backend)
        except ApiError:
            pass


class Operations:
    """What each route does, one method per operation name of `routes.ROUTES`.

    Methods take the route's path parameters and, for a route with a body, `body` (already
    validated against the route's request model); what they return is validated against the
    route's response model, or is the JSON document itself where the route has none.
    """

    def __init__(self, function: ApiFunction):
        self.fn = function

    def health(self) -> Health:
        return self.fn.health()

    def openapi(self) -> str:
        identity = (self.fn.event.get("requestContext") or {}).get("identity") or {}
        return self.fn.openapi_json(bool(identity.get("apiKeyId")))

    def list_models(self) -> ModelList:
        return ModelList(models=self.fn.catalog.summaries())

    def get_model(self, name: str) -> dict:
        return self.fn.catalog.card(name)

    def invoke(self, name: str, body: InvokeRequest) -> dict:
        self.fn.own_model(name)
        return self.fn.predict(body.inputs, body.parameters)

    def explain(self, name: str, body: ExplainRequest) -> dict:
        self.fn.own_model(name)
        return self.fn.explain(body.inputs, body.parameters)

    def get_version(self, name: str, version: str) -> dict:
        return self.fn.catalog.version_card(name, version)

    def invoke_version(self, name: str, version: str, body: InvokeRequest) -> dict:
        self.fn.own_version(name, version)
        return self.fn.predict(body.inputs, body.parameters)

    def explain_version(self, name: str, version: str, body: ExplainRequest) -> dict:
        self.fn.own_version(name, version)
        return self.fn.explain(body.inputs, body.parameters)

    def embeddings(self, body: EmbeddingsRequest) -> dict:
        return self._embeddings(body, None)

    def model_embeddings(self, name: str, body: EmbeddingsRequest) -> dict:
        return self._embeddings(body, name)

    def version_embeddings(self, name: str, version: str, body: EmbeddingsRequest) -> dict:
        return self._embeddings(body, name, version)

    def _embeddings(self, body: EmbeddingsRequest, path_name: str | None, version: str | None = None) -> dict:
        own = self.fn.backend.name
        if version is not None:
            self.fn.own_version(path_name, version)
        elif path_name is not None:
            self.fn.own_model(path_name)
        if body.model != own:
            hint = (
                f"this endpoint serves {own!r}"
                if path_name is not None
                else f"this function serves {own!r}; use base_url .../models/<model>/v1 for another embedding model"
            )
            raise NotFound(f"model {short(body.model)} is not an embedding model served here: {hint}")
        if self.fn.backend.task() != EMBEDDING_TASK:
            raise NotFound(f"model {own!r} is not an embedding model; use POST /models/{own}/invoke")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise Unprocessable("input must not be empty")
        result = self.fn.predict(texts, {})
        vectors = result["outputs"]
        if body.dimensions is not None and vectors and body.dimensions != len(vectors[0]):
            raise Unprocessable(f"dimensions: model {own!r} returns {len(vectors[0])} dimensions only")
        encode = _float32_base64 if body.encoding_format == "base64" else (lambda v: v)
        usage = result.get("usage") or {}
        tokens = int(usage.get("input_tokens", 0))
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "model": own,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens,
                      "truncated_inputs": int(usage.get("truncated_inputs", 0))},
        }
