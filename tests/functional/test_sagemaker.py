"""The heavy model's proxy function: the task here, the graph on Triton behind SageMaker's InvokeEndpoint.

Over real HTTP: the proxy handler's boto3 client -> the SageMaker front (maas.triton.front) ->
Triton or its stand-in over KServe v2, as `maas serve` runs it. The error mapping with botocore's
Stubber and a scripted sagemaker-runtime on 127.0.0.1; moto for InvokeEndpoint's answer shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient", reason="tritonclient (Triton's model_config_pb2) is installed by `make setup`")

from maas.lambda_worker import LambdaContext  # noqa: E402
from maas.local_api import configure_local_environment, load_function_module  # noqa: E402
from maas.manifest import LambdaSettings, load_manifest  # noqa: E402
from maas.triton.endpoint import LocalEndpoint, stage_local_model  # noqa: E402
from maas.triton.front import NO_CAPACITY_MESSAGE  # noqa: E402
from maas.triton.graph import POOLED_OUTPUT  # noqa: E402
from maas.triton.httpd import Handler, LocalServer  # noqa: E402
from maas.triton.server import unavailable_reason  # noqa: E402
from maas_api import constants  # noqa: E402
from maas_runtime.kserve import encode_response, sagemaker_content_type  # noqa: E402

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
BUILD = ROOT / "build"
NAME = "minilm-gpu"
ARTIFACT = BUILD / NAME / "1.0.0"
ENDPOINT = f"maas-{NAME}"
COMPONENT = f"{NAME}-copy"
SENTENCES = ["Heavy models run on a GPU endpoint.", "The proxy tokenizes and pools; Triton runs the encoder."]
TRITON_MISSING = unavailable_reason(ROOT)


@pytest.fixture(scope="module")
def staged():
    if not (ARTIFACT / "card.json").is_file() or not (BUILD / "catalog.json").is_file():
        pytest.skip(f"{ARTIFACT} is not built: run `maas build` first")
    return stage_local_model(ROOT, load_manifest(ROOT / "models.toml").get(NAME), ARTIFACT)


@pytest.fixture(scope="module", params=["triton", "stand-in"])
def endpoint(request, staged):
    if request.param == "triton" and TRITON_MISSING:
        pytest.skip(f"the local Triton cannot run here: {TRITON_MISSING}")
    started = LocalEndpoint(ROOT, staged[0], NAME, ENDPOINT, COMPONENT, use_triton=request.param == "triton")
    assert started.kind == request.param, started.fallback_reason
    yield started
    started.close()


@pytest.fixture(scope="module")
def proxy_module():
    return load_function_module(ROOT / "functions" / "sagemaker_proxy")


@pytest.fixture(scope="module")
def lambda_path():
    """The same artifact through the per-model Lambda handler: what the GPU path must answer too."""
    handler = load_function_module(ROOT / "functions" / "model")
    return handler.create_function(handler.Config(model_name=NAME, model_dir=str(ARTIFACT), catalog_path=str(BUILD / "catalog.json")))


def proxy(proxy_module, staged, *, client=None, runtime_url=None, component=COMPONENT, endpoint_name=ENDPOINT):
    config = proxy_module.Config(
        model_name=NAME, endpoint_name=endpoint_name, model_dir=str(staged[1]), inference_component=component,
        catalog_path=str(BUILD / "catalog.json"), runtime_url=runtime_url,
    )
    return proxy_module.create_function(config, client=client)


def invoke_event(inputs: list, parameters: dict | None = None, name: str = NAME) -> dict:
    event = json.loads((EVENTS / "invoke_minilm.json").read_text())
    event["path"] = f"/models/{name}/invoke"
    event["pathParameters"] = {"name": name}
    event["body"] = json.dumps({"inputs": inputs, "parameters": parameters or {}})
    return event


def result(response: dict) -> tuple[int, dict]:
    assert "Traceback" not in response["body"] and ENDPOINT not in response["body"] and "123456789012" not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def headers(response: dict) -> dict:
    return {k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items()} | (response.get("headers") or {})


# --- through the local endpoint over HTTP -------------------------------------------------------------


def test_the_gpu_path_answers_what_the_lambda_path_answers(proxy_module, staged, endpoint, lambda_path):
    from maas.builder.evalsets import embedding_texts

    texts = embedding_texts()[:64]
    # GIVEN the proxy pointed at the local endpoint, WHEN both paths embed the same texts
    status, body = result(proxy(proxy_module, staged, runtime_url=endpoint.url).invoke(invoke_event(texts), LambdaContext()))
    _, expected = result(lambda_path.invoke(invoke_event(texts), LambdaContext()))
    # THEN the vectors are the same (the GPU graph pools in ONNX, the Lambda path in numpy)
    assert status == 200, body
    served, local = np.asarray(body["outputs"]), np.asarray(expected["outputs"])
    cosines = (served * local).sum(1)
    print(f"{endpoint.kind}: min cosine {cosines.min():.8f} over {len(texts)} texts")
    assert cosines.min() >= 0.9999 and np.abs(served - local).max() < 1e-4
    assert body["usage"] == expected["usage"] and (body["model"], body["version"]) == (expected["model"], expected["version"])


def test_normalize_false_is_honoured_by_the_proxys_task(proxy_module, staged, endpoint, lambda_path):
    event = invoke_event(SENTENCES, {"normalize": False})
    status, body = result(proxy(proxy_module, staged, runtime_url=endpoint.url).invoke(event, LambdaContext()))
    _, expected = result(lambda_path.invoke(event, LambdaContext()))
    norms = np.linalg.norm(np.asarray(body["outputs"]), axis=1)
    assert status == 200 and not np.allclose(norms, 1.0)
    np.testing.assert_allclose(body["outputs"], expected["outputs"], atol=1e-4)


@pytest.mark.parametrize(
    ("inputs", "parameters", "status", "code"),
    [
        (["x"] * 257, {}, 413, "limit_exceeded"),
        ([1, 2], {}, 422, "invalid_input"),
        (["x"], {"top_k": 3}, 422, "invalid_input"),
        (["word " * 300], {"truncate": False}, 413, "limit_exceeded"),
    ],
)
def test_bad_requests_are_answered_by_the_proxy_without_calling_the_endpoint(proxy_module, staged, endpoint, inputs, parameters, status, code):
    before = endpoint.front.invocations
    got, body = result(proxy(proxy_module, staged, runtime_url=endpoint.url).invoke(invoke_event(inputs, parameters), LambdaContext()))
    assert (got, body["error"]["code"]) == (status, code)
    assert endpoint.front.invocations == before


def test_a_batch_over_the_payload_limit_is_413_naming_it_and_never_sent(proxy_module, staged, endpoint, monkeypatch):
    # The shipped model's largest batch (256 x 256 tokens, 1.5 MB of int64) fits InvokeEndpoint's 6 MiB;
    # a lower limit exercises the same guard.
    monkeypatch.setattr(proxy_module.SageMakerTransport, "max_payload_bytes", 50_000)
    before = endpoint.front.invocations
    response = proxy(proxy_module, staged, runtime_url=endpoint.url).invoke(invoke_event(["word " * 200] * 16), LambdaContext())
    status, body = result(response)
    assert status == 413 and body["error"]["code"] == "limit_exceeded"
    assert "at most 50000 bytes per request" in body["error"]["message"]
    assert endpoint.front.invocations == before


def test_the_inference_component_is_named_on_every_call(proxy_module, staged, endpoint):
    status, _ = result(proxy(proxy_module, staged, runtime_url=endpoint.url).invoke(invoke_event(SENTENCES), LambdaContext()))
    assert status == 200
    status, body = result(proxy(proxy_module, staged, runtime_url=endpoint.url, component="other").invoke(invoke_event(SENTENCES), LambdaContext()))
    assert status == 503 and body["error"]["code"] == "endpoint_unavailable"


def test_at_zero_copies_the_api_answers_503_with_retry_after_and_the_call_still_reaches_sagemaker(proxy_module, staged, endpoint):
    # GIVEN the endpoint's inference component scaled to zero copies
    endpoint.front.cold = True
    before = endpoint.front.invocations
    try:
        response = proxy(proxy_module, staged, runtime_url=endpoint.url).invoke(invoke_event(SENTENCES), LambdaContext())
    finally:
        endpoint.front.cold = False
    # THEN the client is told to retry in a minute, the model is starting
    status, body = result(response)
    assert status == 503 and body["error"]["code"] == "model_starting"
    assert "starting" in body["error"]["message"] and NAME in body["error"]["message"]
    assert headers(response)["Retry-After"] == str(constants.SCALED_TO_ZERO_RETRY_AFTER_S) == "60"
    # and InvokeEndpoint was called (once: not retried), which is what AWS's scale-out alarm counts
    assert endpoint.front.invocations == before + 1


def test_embeddings_and_catalog_routes_through_the_proxy(proxy_module, staged, endpoint):
    function = proxy(proxy_module, staged, runtime_url=endpoint.url)
    event = invoke_event(SENTENCES)
    event["path"] = f"/models/{NAME}/v1/embeddings"
    event["body"] = json.dumps({"model": NAME, "input": SENTENCES})
    status, body = result(function.invoke(event, LambdaContext()))
    _, direct = result(function.invoke(invoke_event(SENTENCES), LambdaContext()))
    assert status == 200 and [d["embedding"] for d in body["data"]] == direct["outputs"]
    status, body = result(function.invoke(json.loads((EVENTS / "list_models.json").read_text()), LambdaContext()))
    assert status == 200 and NAME in [m["name"] for m in body["models"]]


# --- the error mapping ----------------------------------------------------------------------------------


def test_the_clients_worst_case_fits_the_proxys_timeout(proxy_module):
    config = proxy_module.client_config()
    attempts = config.retries["total_max_attempts"]
    assert config.retries["mode"] == "standard" and attempts == constants.SAGEMAKER_MAX_ATTEMPTS == 2
    assert (config.connect_timeout, config.read_timeout) == (constants.SAGEMAKER_CONNECT_TIMEOUT_S, constants.SAGEMAKER_READ_TIMEOUT_S)
    # every attempt uses its whole connect + read timeout; each retry waits at most 2**i s, plus 5 s for x-amz-retry-after
    worst = attempts * (config.connect_timeout + config.read_timeout) + sum(2**i + 5 for i in range(attempts - 1))
    assert worst == constants.SAGEMAKER_WORST_CASE_S
    assert worst < LambdaSettings().timeout_s < 29


def _stubbed(proxy_module):
    import boto3

    return boto3.client("sagemaker-runtime", region_name="us-east-1", config=proxy_module.client_config())


TRITON_REFUSAL = json.dumps({"error": "expected 3 inputs but got 2 inputs for model 'minilm-gpu'"})


@pytest.mark.parametrize(
    ("code", "http_status", "message", "fields", "status", "api_code", "retry_after"),
    [
        ("ThrottlingException", 400, "Rate exceeded", None, 429, "throttled", "1"),
        ("ModelError", 424, "Received client error (400) from primary", {"OriginalStatusCode": 400, "OriginalMessage": TRITON_REFUSAL}, 502, "model_error", None),
        ("ModelError", 424, "Received server error (500) from primary", {"OriginalStatusCode": 500, "OriginalMessage": "Traceback (most recent call last): ..."}, 502, "model_error", None),
        ("ValidationError", 400, NO_CAPACITY_MESSAGE, None, 503, "model_starting", "60"),
        ("ValidationError", 400, "Endpoint maas-minilm-gpu of account 123456789012 not found.", None, 503, "endpoint_unavailable", None),
        ("ValidationException", 400, "Endpoint maas-minilm-gpu of account 123456789012 not found.", None, 503, "endpoint_unavailable", None),
        ("ModelNotReadyException", 429, "Model not ready", None, 503, "endpoint_unavailable", None),
        ("ServiceUnavailable", 503, "Service unavailable", None, 503, "endpoint_unavailable", None),
        ("InternalFailure", 500, "Internal failure", None, 502, "upstream_error", None),
    ],
)
def test_sagemaker_errors_become_api_statuses(proxy_module, staged, code, http_status, message, fields, status, api_code, retry_after):
    from botocore.stub import Stubber

    client = _stubbed(proxy_module)
    with Stubber(client) as stub:
        stub.add_client_error("invoke_endpoint", service_error_code=code, service_message=message,
                              http_status_code=http_status, modeled_fields=fields)
        response = proxy(proxy_module, staged, client=client).invoke(invoke_event(SENTENCES), LambdaContext())
    got, body = result(response)
    assert (got, body["error"]["code"]) == (status, api_code), body
    assert headers(response).get("Retry-After") == retry_after
    assert "expected 3 inputs" not in body["error"]["message"] and "Traceback" not in body["error"]["message"]


class _ScriptedRuntime(Handler):
    """A sagemaker-runtime on 127.0.0.1 that throttles the first N calls, is slow, or answers `answer`."""

    throttle_first = 0
    delay_s = 0.0
    calls = 0
    answer = (b"{}", "application/json")

    def do_POST(self):
        import time

        cls = type(self)
        cls.calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if cls.delay_s:
            time.sleep(cls.delay_s)
        if cls.calls <= cls.throttle_first:
            body, status, extra = b'{"message": "Rate exceeded"}', 400, {"x-amzn-ErrorType": "ThrottlingException", "Content-Type": "application/json"}
        else:
            body, status, extra = cls.answer[0], 200, {"Content-Type": cls.answer[1]}
        try:
            self.send(status, body, extra)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def scripted():
    handler = type("Runtime", (_ScriptedRuntime,), {"calls": 0})
    vectors = np.full((2, 384), 0.5, dtype=np.float32)
    body, size = encode_response(NAME, {POOLED_OUTPUT: vectors}, {POOLED_OUTPUT: True})
    handler.answer = (body, sagemaker_content_type(size))
    server = LocalServer()
    yield handler, server.serve(handler, "scripted-runtime")
    server.stop()


def _client_for(proxy_module, url, **overrides):
    import boto3
    from botocore.config import Config

    config = proxy_module.client_config()
    return boto3.client("sagemaker-runtime", region_name="us-east-1", endpoint_url=url,
                        config=config.merge(Config(**overrides)) if overrides else config)


def test_throttling_is_retried_once_then_answered(proxy_module, staged, scripted):
    runtime, url = scripted
    runtime.throttle_first = 1
    status, body = result(proxy(proxy_module, staged, client=_client_for(proxy_module, url)).invoke(invoke_event(SENTENCES), LambdaContext()))
    assert status == 200 and runtime.calls == 2
    assert np.allclose(np.linalg.norm(body["outputs"], axis=1), 1.0)  # the runtime normalized the pooled vectors


def test_throttling_that_persists_is_429_with_retry_after(proxy_module, staged, scripted):
    runtime, url = scripted
    runtime.throttle_first = 100
    response = proxy(proxy_module, staged, client=_client_for(proxy_module, url)).invoke(invoke_event(SENTENCES), LambdaContext())
    status, body = result(response)
    assert status == 429 and body["error"]["code"] == "throttled" and headers(response)["Retry-After"] == "1"
    assert runtime.calls == constants.SAGEMAKER_MAX_ATTEMPTS


def test_a_slow_endpoint_is_504_after_at_most_one_retry(proxy_module, staged, scripted):
    runtime, url = scripted
    runtime.delay_s = 0.6
    client = _client_for(proxy_module, url, read_timeout=0.2)
    status, body = result(proxy(proxy_module, staged, client=client).invoke(invoke_event(SENTENCES), LambdaContext()))
    assert status == 504 and body["error"]["code"] == "upstream_timeout"
    assert runtime.calls == 2  # an inference that timed out may still be running: sent again once, not more


@pytest.mark.parametrize(
    "answer",
    [
        (b'{"outputs": [{"name": "sentence_embedding", "datatype": "FP32", "shape": [1, 384], "data": [0.5]}]}', "application/json"),
        (encode_response(NAME, {POOLED_OUTPUT: np.ones((1, 384), np.float32)}, {POOLED_OUTPUT: True})[0], "application/json"),
        (b"<html>gateway</html>", "text/html"),
    ],
    ids=["wrong-size", "binary-without-header-length", "not-kserve"],
)
def test_an_answer_that_cannot_be_read_is_502(proxy_module, staged, scripted, answer):
    runtime, url = scripted
    runtime.answer = answer
    status, body = result(proxy(proxy_module, staged, client=_client_for(proxy_module, url)).invoke(invoke_event(SENTENCES), LambdaContext()))
    assert status == 502 and body["error"]["code"] == "upstream_error"


def test_the_proxy_reads_an_answer_queued_in_motos_sagemaker_runtime(proxy_module, staged):
    """moto's InvokeEndpoint returns a queued Body and ContentType (a JSON KServe v2 answer: moto keeps text)."""
    moto = pytest.importorskip("moto")
    import boto3
    import requests

    # GIVEN Triton's answer for two texts, queued as moto's endpoint result
    vectors = np.random.default_rng(3).standard_normal((2, 384)).astype(np.float32)
    body, size = encode_response(NAME, {POOLED_OUTPUT: vectors}, {POOLED_OUTPUT: False})
    assert size is None
    with moto.mock_aws():
        queued = {"results": [{"Body": body.decode(), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic"}]}
        requests.post("http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results", json=queued, timeout=5)
        client = boto3.client("sagemaker-runtime", region_name="us-east-1", config=proxy_module.client_config())
        function = proxy(proxy_module, staged, client=client)
        # moto's in-process mock decodes a request body as UTF-8: the tensors go as KServe v2 JSON here
        function.backend.model().engine.binary = False
        # WHEN the proxy handler is invoked through API Gateway's event
        status, answer = result(function.invoke(invoke_event(SENTENCES), LambdaContext()))
    # THEN it answers with those vectors, normalized by the runtime's task, in the Lambda path's shape
    assert status == 200 and answer["model"] == NAME
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(answer["outputs"], expected, atol=1e-6)
