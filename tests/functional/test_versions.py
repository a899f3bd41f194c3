"""Versions side by side over the local API: two built versions of digits (pruned 50% and 30%)
served at once, pinned calls answered by their own version, the unpinned route by `live`, the
catalog and the OpenAPI document listing both."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest

from maas.local_api import LocalApi, configure_local_environment, manifest_stack, warm_up
from maas.manifest import load_manifest

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(ROOT / "models.toml")


@pytest.fixture(scope="module")
def server(manifest):
    kept = manifest.versions_of("digits")
    missing = [v.version for v in kept if not (BUILD / "digits" / v.version / "card.json").is_file()]
    if missing:
        pytest.skip(f"digits {missing} not built: run `maas build digits` first")
    stack = manifest_stack(manifest, models=["digits"])
    warm_up(stack)
    api = LocalApi(stack.routes)
    api.start("127.0.0.1", 0)
    yield api
    api.stop()
    stack.close()


def call(server, method: str, path: str, body=None):
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"} if body is not None else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def images():
    """Held-out digits (the recipe trains on the first 1347 of scikit-learn's 1797)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images[-60:].astype(int).tolist(), data.target[-60:].tolist()


def probabilities(body) -> np.ndarray:
    """The answer's probabilities, one row of 10 per input, in label order."""
    return np.array([[c["score"] for c in sorted(out, key=lambda c: c["label"])] for out in body["outputs"]])


def test_pinned_calls_answer_from_their_own_version(server, manifest, images):
    inputs, _ = images
    request = {"inputs": inputs, "parameters": {"top_k": 10}}
    answers = {}
    for version in ("1.0.0", "1.1.0"):
        status, body = call(server, "POST", f"/models/digits/versions/{version}/invoke", request)
        assert status == 200, body
        assert body["model"] == "digits" and body["version"] == version
        answers[version] = probabilities(body)
    status, live = call(server, "POST", "/models/digits/invoke", request)
    assert status == 200 and live["version"] == manifest.get("digits").version == "1.0.0"
    # the live route is version 1.0.0's model exactly; 1.1.0 (pruned 30%, not 50%) is another model
    np.testing.assert_array_equal(probabilities(live), answers["1.0.0"])
    assert np.abs(answers["1.0.0"] - answers["1.1.0"]).max() > 1e-3


def test_each_version_matches_its_own_card(server, images):
    inputs, labels = images
    for version in ("1.0.0", "1.1.0"):
        card = json.loads((BUILD / "digits" / version / "card.json").read_text())
        assert card["optimization"]["pruning"]["achieved"] == pytest.approx({"1.0.0": 0.5, "1.1.0": 0.3}[version], abs=0.01)
        status, body = call(server, "POST", f"/models/digits/versions/{version}/invoke", {"inputs": inputs})
        accuracy = np.mean([out[0]["label"] == str(y) for out, y in zip(body["outputs"], labels)])
        assert status == 200 and accuracy >= card["parity"]["threshold"]["min_accuracy"] - 0.1


def test_the_catalog_lists_every_version_with_its_parity(server):
    status, card = call(server, "GET", "/models/digits")
    assert status == 200 and card["version"] == "1.0.0"
    listed = {v["version"]: v for v in card["versions"]}
    assert set(listed) == {"1.0.0", "1.1.0"}
    assert listed["1.0.0"]["live"] and not listed["1.1.0"]["live"]
    for version, entry in listed.items():
        built = json.loads((BUILD / "digits" / version / "card.json").read_text())
        assert entry["parity"]["figures"] == built["parity"]["figures"]
        assert entry["pruning_sparsity"] == built["optimization"]["pruning"]["achieved"]
        assert entry["invoke_path"] == f"/models/digits/versions/{version}/invoke"
    status, pinned = call(server, "GET", "/models/digits/versions/1.1.0")
    assert status == 200 and pinned["version"] == "1.1.0" and pinned["live"] is False


def test_an_unknown_version_is_a_404_naming_the_kept_ones(server):
    for method, path, body in (("POST", "/models/digits/versions/9.9.9/invoke", {"inputs": [[[0] * 8] * 8]}),
                               ("GET", "/models/digits/versions/9.9.9", None)):
        status, answer = call(server, method, path, body)
        assert status == 404, answer
        assert "1.0.0, 1.1.0" in answer["error"]["message"]


def test_a_pinned_version_explains_with_its_own_model(server, images):
    inputs, _ = images
    answers = {}
    for version in ("1.0.0", "1.1.0"):
        status, body = call(server, "POST", f"/models/digits/versions/{version}/explain",
                            {"inputs": inputs[:1], "parameters": {"target": "0"}})
        assert status == 200 and body["version"] == version, body
        answers[version] = np.array(body["outputs"][0]["attributions"])
    assert not np.allclose(answers["1.0.0"], answers["1.1.0"])


def test_the_openapi_document_has_each_versions_routes(server):
    status, doc = call(server, "GET", "/openapi.json")
    assert status == 200
    for version in ("1.0.0", "1.1.0"):
        for path in (f"/models/digits/versions/{version}/invoke", f"/models/digits/versions/{version}/explain",
                     f"/models/digits/versions/{version}"):
            assert path in doc["paths"], path
        operation = doc["paths"][f"/models/digits/versions/{version}/invoke"]["post"]
        assert operation["operationId"] == f"invoke_version_digits_{version.replace('.', '_')}"


def test_a_version_function_refuses_another_versions_pinned_path(manifest):
    """In AWS each version has its own function; one reached with another version's path (a
    misrouted request) answers 404 rather than answering from the wrong model."""
    from maas.lambda_worker import LambdaContext
    from maas.local_api import FUNCTIONS_DIR, load_function_module

    if not (BUILD / "digits" / "1.1.0" / "card.json").is_file():
        pytest.skip("digits 1.1.0 not built")
    handler = load_function_module(ROOT / FUNCTIONS_DIR / "model")
    function = handler.create_function(handler.Config(model_name="digits", model_dir=str(BUILD / "digits" / "1.1.0"),
                                                      catalog_path=str(BUILD / "catalog.json")))
    event = {"httpMethod": "POST", "path": "/models/digits/versions/1.0.0/invoke", "resource": "/{proxy+}",
             "headers": {"content-type": "application/json"}, "body": json.dumps({"inputs": [[[0] * 8] * 8]}),
             "requestContext": {"requestId": "r-1", "stage": "prod"}, "isBase64Encoded": False}
    result = function.invoke(event, LambdaContext())
    assert result["statusCode"] == 404 and "served by its own function" in json.loads(result["body"])["error"]["message"]
    event["path"] = "/models/digits/versions/1.1.0/invoke"
    result = function.invoke(event, LambdaContext())
    assert result["statusCode"] == 200 and json.loads(result["body"])["version"] == "1.1.0"
