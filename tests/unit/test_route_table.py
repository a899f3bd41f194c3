"""The route table's helpers: paths rendered for Powertools and for a model, matched, filtered by task."""

from __future__ import annotations

import pytest

from maas_api import routes
from maas_api.schemas import InvokeRequest, InvokeResponse


def test_a_route_renders_its_path_for_one_model():
    spec = routes.route(routes.INVOKE)
    assert (spec.method, spec.path, spec.params) == ("POST", "/models/{name}/invoke", ("name",))
    assert spec.render(name="minilm") == "/models/minilm/invoke"


def test_a_route_matches_its_own_paths_only():
    spec = routes.route(routes.INVOKE)
    assert spec.match("/models/minilm/invoke") == {"name": "minilm"}
    assert spec.match("/models/minilm/invoke/") == {"name": "minilm"}
    assert spec.match("/models/minilm/invoke/extra") is None
    assert spec.match("/models/a/b/invoke") is None
    assert routes.route("openapi").match("/openapiXjson") is None


def test_allowed_methods_and_find_come_from_the_table():
    assert routes.allowed_methods("/models/minilm") == ["GET"]
    assert routes.allowed_methods("/models/minilm/invoke") == ["POST"]
    assert routes.allowed_methods("/nope") == []
    assert routes.find("POST", "/v1/embeddings").operation == "embeddings"
    assert routes.find("GET", "/v1/embeddings") is None


def test_task_limited_routes_exist_for_those_tasks_only():
    embedding = {s.operation for s in routes.model_routes("embedding")}
    image = {s.operation for s in routes.model_routes("image-classification")}
    assert embedding == {"get_model", "invoke", "model_embeddings", "explain"}
    assert image == {"get_model", "invoke", "explain"}
    assert routes.deployed([("digits", "image-classification")]) == {
        ("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/models"), ("POST", "/v1/embeddings"),
        ("GET", "/models/digits"), ("POST", "/models/digits/invoke"), ("POST", "/models/digits/explain"),
    }


def test_every_operation_name_and_method_path_pair_is_unique():
    assert len({s.operation for s in routes.ROUTES}) == len(routes.ROUTES)
    assert len({(s.method, s.path) for s in routes.ROUTES}) == len(routes.ROUTES)


@pytest.mark.parametrize("changes, message", [
    ({"scope": "everywhere"}, "scope"),
    ({"path": "/models/{name}/{other}"}, "exactly the {name}"),
    ({"scope": routes.SHARED, "path": "/x", "tasks": frozenset({"embedding"})}, "only a model or version route"),
    ({"errors": (418,)}, "undocumented"),
])
def test_a_malformed_route_is_refused(changes, message):
    fields = dict(method="POST", path="/models/{name}/invoke", operation="x", summary="x", request=InvokeRequest,
                  response=InvokeResponse, errors=(400,), scope=routes.MODEL)
    with pytest.raises(ValueError, match=message):
        routes.RouteSpec(**{**fields, **changes})


def test_the_default_model_is_the_first_light_embedding_model_else_the_first_light_one():
    models = [("digits", "image-classification", "lambda"), ("big", "embedding", "sagemaker"),
              ("minilm", "embedding", "lambda")]
    assert routes.default_model(models) == "minilm"
    assert routes.default_model(models[:2]) == "digits"
    assert routes.default_model(models[1:2]) == "big"
