"""The route table (maas_api.routes) is the API: the function, the synthesized template and the
local API serve exactly its routes, and the function validates each with the table's models."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from maas.lambda_worker import LambdaContext
from maas.local_api import configure_local_environment, load_function_module, manifest_stack
from maas.template_api import load_assembly
from maas_api import routes


@pytest.fixture(scope="module")
def function(repo_root, artifacts):
    configure_local_environment()
    handler = load_function_module(repo_root / "functions" / "model")
    build = repo_root / "build"
    return handler.create_function(handler.Config(model_name="digits", catalog_path=str(build / "catalog.json")))


@pytest.fixture(scope="module")
def local_stack(manifest, artifacts):
    configure_local_environment()
    stack = manifest_stack(manifest)
    yield stack
    stack.close()


def _answered_routes(function) -> set[tuple[str, str]]:
    """(method, path in API Gateway syntax) of every route of the table the function has an
    operation for, taking exactly the route's path parameters (and `body` where it has one)."""
    found = set()
    for spec in routes.ROUTES:
        operation = getattr(function.operations, spec.operation, None)
        if operation is not None:
            taken = list(inspect.signature(operation).parameters)
            assert taken == [*spec.params, *(["body"] if spec.request else [])], spec.operation
            found.add((spec.method, spec.path))
    return found


def _per_model(pairs: set[tuple[str, str]], models: list[tuple]) -> set[tuple[str, str]]:
    """Each {name} route once per model that has it (by the table's task filter), each {version}
    route once per kept version, the rest as they are."""
    table = {(s.method, s.path): s for s in routes.ROUTES}
    found = set()
    for method, path in pairs:
        if "{name}" not in path:
            found.add((method, path))
            continue
        spec = table.get((method, path))
        for name, task, versions in models:
            if spec is None or spec.serves(task):
                for version in versions if "{version}" in path else (None,):
                    found.add((method, path.replace("{name}", name).replace("{version}", version or "")))
    return found


def test_function_template_and_local_api_serve_the_same_routes(function, synth, local_stack, manifest):
    # GIVEN the shipped manifest's models
    models = [(s.name, s.task, s.versions) for s in manifest.models]
    # WHEN the routes are read from each of the three places that serve the API
    answered = _per_model(_answered_routes(function), models)
    template = {(m.http_method, m.path) for m in load_assembly(synth.outdir).methods}
    local = {(r.method, r.resource) for r in local_stack.routes if r.method != "ANY"}
    # THEN each serves exactly the table's routes: a route in one and not the others fails here
    expected = routes.deployed(models)
    assert answered == expected, f"function: extra {answered - expected}, missing {expected - answered}"
    assert template == expected, f"template: extra {template - expected}, missing {expected - template}"
    assert local == expected, f"local API: extra {local - expected}, missing {expected - local}"


def test_every_route_is_documented_per_model_from_the_table_and_the_cards(function, manifest):
    # GIVEN the OpenAPI document the function generates from the table, the catalog and the models
    doc = json.loads(function.openapi_json())
    models = [(s.name, s.task, s.versions) for s in manifest.models]
    # THEN its operations are exactly the table's documented routes, each model's own under its own path
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    expected = {(m, p) for m, p in routes.deployed(models) if p != routes.route("openapi").path}
    assert documented == expected
    catalog = {(e["card"]["name"], e["card"]["version"]): e["card"]
               for e in json.loads(Path(function.catalog_path).read_text())["models"]}
    for spec in routes.ROUTES:
        if not spec.documented:
            continue
        for name, task, versions in (models if spec.scope != routes.SHARED else [(None, None, ())]):
            if name is not None and not spec.serves(task):
                continue
            for version in versions if spec.scope == routes.VERSION else (None,):
                _check_documented(doc, spec, spec.render(name=name, version=version) if name else spec.path,
                                  catalog.get((name, version or manifest.get(name).version)) if name else None)
    # without a key in front, no security scheme and no 403; with one, both
    assert "security" not in doc and "403" not in doc["paths"]["/health"]["get"]["responses"]
    keyed = json.loads(function.openapi_json(True))
    assert keyed["security"] == [{"apiKey": []}]
    assert keyed["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "x-api-key"}
    assert "403" in keyed["paths"]["/models/digits/invoke"]["post"]["responses"]
    assert "403" in keyed["paths"]["/models/digits/versions/1.1.0/invoke"]["post"]["responses"]


def _check_documented(doc: dict, spec, path: str, card: dict | None) -> None:
    """One operation of the document: its id, summary, success and error answers, and the card's own inputs."""
    operation = doc["paths"][path][spec.method.lower()]
    assert operation["operationId"].startswith(spec.operation) and operation["summary"] == spec.summary
    # ... with the success answer's schema and every error status of the route, with the envelope
    assert operation["responses"]["200"]["content"]["application/json"]["schema"]
    for status in (*spec.errors, 500):
        error = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    assert (body is None) == (spec.request is None), path
    if spec.operation in (routes.INVOKE, routes.INVOKE_VERSION):
        # ... and the model's own inputs: its batch size, strings or 8x8 pixel arrays
        inputs = body["properties"]["inputs"]
        assert inputs["maxItems"] == card["serving"]["max_batch"]
        item = inputs["items"]
        if card["inputs"]["type"] == "text":
            assert item["type"] == "string" and item["maxLength"] > 0
        else:
            assert {v["maxItems"] for v in item["oneOf"]} == {8, 64}


def test_the_function_validates_bodies_and_answers_with_the_tables_models(function):
    # GIVEN each route of the table that takes a body, and a body its request model refuses
    for spec in routes.ROUTES:
        if spec.request is None:
            continue
        path = spec.render(name="digits", version="1.1.0") if spec.params else spec.path
        event = {"httpMethod": spec.method, "path": path, "headers": {"content-type": "application/json"},
                 "body": json.dumps({"unexpected": 1}), "requestContext": {"requestId": "r"}}
        # WHEN the function answers
        response = function.invoke(event, LambdaContext())
        # THEN it is the request model's refusal (422 schema_violation naming the field), not the operation's
        assert response["statusCode"] == 422, (path, response["body"])
        error = json.loads(response["body"])["error"]
        assert error["code"] == "schema_violation" and "unexpected" in error["message"], (path, error)
    # AND an answer is serialized as the route's response model: the catalog as ModelList
    listed = function.invoke({"httpMethod": "GET", "path": "/models", "headers": {}, "requestContext": {}},
                             LambdaContext())
    assert listed["statusCode"] == 200 and listed["multiValueHeaders"]["Content-Type"] == ["application/json"]
    assert routes.route("list_models").response.model_validate_json(listed["body"]).models


def test_wrong_methods_and_unknown_paths_answer_405_and_404_from_the_table(function):
    # GIVEN an event for each path of the table with a method it does not take
    for spec in routes.ROUTES:
        path = spec.render(name="digits", version="1.1.0") if spec.params else spec.path
        wrong = "DELETE"
        event = {"httpMethod": wrong, "path": path, "headers": {}, "requestContext": {"requestId": "r"}}
        # WHEN the function answers
        response = function.invoke(event, LambdaContext())
        # THEN it is 405 and Allow lists the table's methods for that path
        assert response["statusCode"] == 405, (path, response["body"])
        allow = response.get("multiValueHeaders", {}).get("Allow") or [response["headers"]["Allow"]]
        assert allow == [", ".join(routes.allowed_methods(path))]
    unknown = {"httpMethod": "GET", "path": "/nope", "headers": {}, "requestContext": {}}
    assert function.invoke(unknown, LambdaContext())["statusCode"] == 404
