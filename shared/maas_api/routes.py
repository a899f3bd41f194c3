"""Every route of the API, written once.

The function's routing and validation (function.py), the API Gateway resources (infra/model_api.py)
and the local API (maas/local_api.py) all come from `ROUTES`, so a route cannot exist in one
of them and not the others. Paths use API Gateway's syntax (`/models/{name}/invoke`).

Scope: a "model" route exists once per model and is answered by that model's own function, which
serves its live version (`tasks` narrows it to models of those tasks); a "version" route exists
once per kept version of a model (a call pinned to that version) and is answered by that version's
function; a "shared" route exists once per API and is answered by the default function. Imports no
Powertools and no AWS SDK.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .schemas import (
    EmbeddingsRequest,
    EmbeddingsResponse,
    ExplainRequest,
    ExplainResponse,
    Health,
    InvokeRequest,
    InvokeResponse,
    ModelList,
)

MODEL = "model"
VERSION = "version"
SHARED = "shared"
EMBEDDING_TASK = "embedding"
"""The task whose models answer the OpenAI embeddings routes."""
EXPLAIN_TASKS = frozenset({"image-classification", "text-classification", EMBEDDING_TASK})
"""The tasks whose serving halves explain (maas_runtime's `Task.explain_game`); a test keeps the two equal."""

_PARAM = re.compile(r"\{(\w+)\}")

ERRORS: dict[int, str] = {
    400: "Malformed request (not JSON, empty, too deeply nested)",
    403: "A missing or wrong x-api-key header (where the API requires a key)",
    404: "Unknown model or route",
    413: "Too many inputs or too large a request",
    415: "Content-Type is not application/json",
    422: "The request does not fit the schema or the model's inputs",
    429: "Throttled",
    500: "An unexpected failure in the function; the cause is logged with the request id",
    502: "A downstream service (SageMaker, S3) failed",
    503: "The model is unavailable",
    504: "A downstream service timed out",
}
"""Every error status a route may document, and what it means there."""

_PREDICT_ERRORS = (400, 404, 413, 415, 422, 429, 502, 503, 504)


@dataclass(frozen=True)
class RouteSpec:
    """One method on one path, and what answers it."""

    method: str
    path: str
    """API Gateway syntax: literal segments and `{param}` segments."""
    operation: str
    """The operation that answers (an `Operations` method in function.py) and the OpenAPI operationId."""
    summary: str
    request: type | None
    """The JSON body's pydantic model; None for a route without a body."""
    response: Any
    """The answer's model (a pydantic model or a type); None where the route answers a raw document."""
    errors: tuple[int, ...]
    """The error statuses the function answers on this route (keys of ERRORS)."""
    scope: str
    """MODEL (one per model, its live function), VERSION (one per kept version, that version's
    function) or SHARED (once, the default function)."""
    tasks: frozenset[str] | None = None
    """For a MODEL or VERSION route: only models of these tasks have it. None: every model."""
    documented: bool = True
    """Listed in /openapi.json."""
    _regex: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.scope not in (MODEL, VERSION, SHARED):
            raise ValueError(f"{self.path}: scope must be {MODEL!r}, {VERSION!r} or {SHARED!r}")
        if self.scope == MODEL and self.params != ("name",):
            raise ValueError(f"{self.path}: a model route takes exactly the {{name}} parameter")
        if self.scope == VERSION and self.params != ("name", "version"):
            raise ValueError(f"{self.path}: a version route takes exactly the {{name}} and {{version}} parameters")
        if self.tasks is not None and self.scope == SHARED:
            raise ValueError(f"{self.path}: only a model or version route can be limited to some tasks")
        unknown = set(self.errors) - set(ERRORS)
        if unknown:
            raise ValueError(f"{self.path}: undocumented error statuses {sorted(unknown)}")
        segments = (
            f"(?P<{m.group(1)}>[^/]+)" if (m := _PARAM.fullmatch(part)) else re.escape(part)
            for part in self.path.split("/")
        )
        object.__setattr__(self, "_regex", re.compile("^" + "/".join(segments) + "/*$"))

    @property
    def params(self) -> tuple[str, ...]:
        """Path parameter names, in order."""
        return tuple(_PARAM.findall(self.path))

    def render(self, **values: str) -> str:
        """The concrete path: render(name="minilm") -> /models/minilm/invoke."""
        return _PARAM.sub(lambda m: values[m.group(1)], self.path)

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters when `path` is this route's path (trailing slashes allowed), else None."""
        found = self._regex.match(path)
        return found.groupdict() if found else None

    def serves(self, task: str) -> bool:
        """Whether a model (MODEL routes) or a model's version (VERSION routes) of this task has this route."""
        return self.scope != SHARED and (self.tasks is None or task in self.tasks)


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("GET", "/health", "health", "Liveness of this model's function",
              None, Health, (503,), SHARED),
    RouteSpec("GET", "/openapi.json", "openapi", "The OpenAPI document of the whole API",
              None, None, (), SHARED, documented=False),
    RouteSpec("GET", "/models", "list_models", "The model catalog",
              None, ModelList, (503,), SHARED),
    RouteSpec("GET", "/models/{name}", "get_model",
              "One model's card: version, task, input/output schema, sha256, parity, target",
              None, dict, (404, 503), MODEL),
    RouteSpec("POST", "/models/{name}/invoke", "invoke", "Run the model on a batch of inputs",
              InvokeRequest, InvokeResponse, _PREDICT_ERRORS, MODEL),
    RouteSpec("POST", "/models/{name}/explain", "explain",
              "Why the model answered as it did: per-input attributions (Kernel SHAP) computed with the served model",
              ExplainRequest, ExplainResponse, _PREDICT_ERRORS, MODEL, tasks=EXPLAIN_TASKS),
    RouteSpec("POST", "/v1/embeddings", "embeddings",
              "OpenAI-compatible embeddings (the model field names an embedding model)",
              EmbeddingsRequest, EmbeddingsResponse, _PREDICT_ERRORS, SHARED),
    RouteSpec("POST", "/models/{name}/v1/embeddings", "model_embeddings",
              "OpenAI-compatible embeddings for one model (base_url .../models/<name>/v1)",
              EmbeddingsRequest, EmbeddingsResponse, _PREDICT_ERRORS, MODEL, tasks=frozenset({EMBEDDING_TASK})),
    RouteSpec("GET", "/models/{name}/versions/{version}", "get_version",
              "One kept version's card: its parity figures, sizes and sha256s",
              None, dict, (404, 503), VERSION),
    RouteSpec("POST", "/models/{name}/versions/{version}/invoke", "invoke_version",
              "Run one pinned version of the model on a batch of inputs",
              InvokeRequest, InvokeResponse, _PREDICT_ERRORS, VERSION),
    RouteSpec("POST", "/models/{name}/versions/{version}/explain", "explain_version",
              "Per-input attributions (Kernel SHAP) computed with one pinned version of the model",
              ExplainRequest, ExplainResponse, _PREDICT_ERRORS, VERSION, tasks=EXPLAIN_TASKS),
    RouteSpec("POST", "/models/{name}/versions/{version}/v1/embeddings", "version_embeddings",
              "OpenAI-compatible embeddings from one pinned version (base_url .../models/<name>/versions/<version>/v1)",
              EmbeddingsRequest, EmbeddingsResponse, _PREDICT_ERRORS, VERSION, tasks=frozenset({EMBEDDING_TASK})),
)

INVOKE = "invoke"
"""The operation every model answers: its alarms, dashboards and outputs name this route."""
INVOKE_VERSION = "invoke_version"
"""The same for one pinned version."""


def route(operation: str) -> RouteSpec:
    """The route answered by `operation`."""
    for spec in ROUTES:
        if spec.operation == operation:
            return spec
    raise KeyError(f"no route for operation {operation!r}")


def model_routes(task: str | None = None) -> list[RouteSpec]:
    """The MODEL routes a model of `task` has; every MODEL route when task is None."""
    return [s for s in ROUTES if s.scope == MODEL and (task is None or s.serves(task))]


def version_routes(task: str | None = None) -> list[RouteSpec]:
    """The VERSION routes each kept version of a model of `task` has; every one when task is None."""
    return [s for s in ROUTES if s.scope == VERSION and (task is None or s.serves(task))]


def shared_routes() -> list[RouteSpec]:
    return [s for s in ROUTES if s.scope == SHARED]


def find(method: str, path: str) -> RouteSpec | None:
    """The route answering `method` on the concrete `path`, if any."""
    return next((s for s in ROUTES if s.method == method and s.match(path) is not None), None)


def allowed_methods(path: str) -> list[str]:
    """The methods some route accepts on `path` (empty: an unknown path, 404; else a wrong method is 405)."""
    return sorted({s.method for s in ROUTES if s.match(path) is not None})


def default_model(models: Iterable[tuple[str, str, str]]) -> str:
    """Of (name, task, target) models, the one whose function answers the shared routes: the first
    light (Lambda) embedding model, else the first light model, else the first."""
    models = list(models)
    light = [m for m in models if m[2] == "lambda"]
    embedding = [m for m in light if m[1] == EMBEDDING_TASK]
    return (embedding or light or models)[0][0]


def deployed(models: Iterable[tuple]) -> set[tuple[str, str]]:
    """(method, concrete path) of every route an API serving these (name, task[, versions]) models has."""
    found = {(s.method, s.path) for s in shared_routes()}
    for name, task, *versions in models:
        found |= {(s.method, s.render(name=name)) for s in model_routes(task)}
        for version in (versions[0] if versions else ()):
            found |= {(s.method, s.render(name=name, version=version)) for s in version_routes(task)}
    return found
