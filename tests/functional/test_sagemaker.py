"""The heavy-model path: the SageMaker serving program on CPU, model.tar.gz, and the proxy handler (moto)."""

from __future__ import annotations

import json
import tarfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from maas.lambda_worker import LambdaContext
from maas.local_api import configure_local_environment, load_function_module, load_serving_module
from maas_api.constants import SAGEMAKER_MAX_ATTEMPTS

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
BUILD = ROOT / "build"
HEAVY = "minilm-gpu/1.0.0"
SENTENCES = ["Heavy models run on a GPU endpoint.", "The proxy forwards the batch unchanged."]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    needed = [n for n in (HEAVY, "digits/1.0.0") if not (BUILD / n / "card.json").is_file()]
    if needed or not (BUILD / "catalog.json").is_file():
        pytest.skip(f"build/ lacks {needed or 'catalog.json'}: run `maas build` first")
    return BUILD


@pytest.fixture(scope="module")
def serving():
    return load_serving_module(ROOT)


@pytest.fixture(scope="module")
def container(serving, artifacts):
    """The serving program for the heavy model on 127.0.0.1 (CPU here), as SageMaker would run it."""
    httpd = serving.make_server(artifacts / HEAVY, host="127.0.0.1", port=0, runtime_api=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def http(method: str, url: str, body: bytes | None = None, content_type: str = "application/json"):
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def invoke_event(name: str, inputs: list, parameters: dict | None = None) -> dict:
    event = json.loads((EVENTS / "invoke_minilm.json").read_text())
    event["path"] = f"/models/{name}/invoke"
    event["pathParameters"] = {"name": name}
    event["body"] = json.dumps({"inputs": inputs, "parameters": parameters or {}})
    return event


# --- the serving program ------------------------------------------------------------------------


def test_ping_reports_the_loaded_model(container):
    status, body = http("GET", f"{container}/ping")
    assert status == 200 and body["model"] == "minilm-gpu"


def test_invocations_give_the_lambda_paths_outputs(container, artifacts):
    # GIVEN the Lambda handler serving the same artifact
    handler = load_function_module(ROOT / "functions" / "model")
    function = handler.create_function(
        handler.Config(model_name="minilm-gpu", model_dir=str(artifacts / HEAVY), catalog_path=str(artifacts / "catalog.json"))
    )
    lambda_answer = json.loads(function.invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext())["body"])
    # WHEN the container is asked the same over HTTP
    status, body = http("POST", f"{container}/invocations", json.dumps({"inputs": SENTENCES}).encode())
    # THEN the answers are the same JSON
    assert status == 200
    assert body == lambda_answer
    assert len(body["outputs"]) == 2 and len(body["outputs"][0]) == 384


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"", "application/json", 400),
        (b'{"inputs": ["x"]}', "text/csv", 415),
        (b'{"inputs": "x"}', "application/json", 422),
        (b'{"inputs": [1, 2]}', "application/json", 422),
        (json.dumps({"inputs": ["x"] * 257}).encode(), "application/json", 413),
    ],
)
def test_invocations_reject_bad_requests_with_the_api_envelope(container, body, content_type, status):
    got, answer = http("POST", f"{container}/invocations", body, content_type)
    assert got == status
    assert set(answer["error"]) == {"code", "message"}


def test_model_tar_gz_is_verifiable_and_reproducible(serving, artifacts, tmp_path):
    from maas_runtime import ArtifactError, verify_artifact

    first = serving.package_model(artifacts / "digits/1.0.0", tmp_path / "a/model.tar.gz")
    second = serving.package_model(artifacts / "digits/1.0.0", tmp_path / "b/model.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    card = verify_artifact(tmp_path / "opt-ml-model")
    assert sorted(names) == sorted(["card.json", *card.files])

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for path in (artifacts / "digits/1.0.0").iterdir():
        (tampered / path.name).write_bytes(path.read_bytes())
    data = bytearray((tampered / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError):
        serving.package_model(tampered, tmp_path / "c/model.tar.gz")


# --- the proxy handler --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy_module():
    return load_function_module(ROOT / "functions" / "sagemaker_proxy")


@pytest.fixture
def aws(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)


def proxy(proxy_module, artifacts, client=None, runtime_url=None):
    config = proxy_module.Config(
        model_name="minilm-gpu",
        endpoint_name="maas-minilm-gpu",
        catalog_path=str(artifacts / "catalog.json"),
        runtime_url=runtime_url,
    )
    return proxy_module.create_function(config, client=client)


def result(response: dict) -> tuple[int, dict]:
    assert "Traceback" not in response["body"] and "maas-minilm-gpu" not in response["body"]
    return response["statusCode"], json.loads(response["body"])


def test_client_gives_up_inside_api_gateways_29_seconds(proxy_module):
    config = proxy_module.client_config()
    attempts = config.retries["total_max_attempts"]
    assert config.retries["mode"] == "standard" and attempts >= 2
    # every attempt may use its whole connect + read timeout; standard backoff adds < 1 s, < 2 s, ...
    worst = attempts * (config.connect_timeout + config.read_timeout) + sum(2**i for i in range(attempts - 1))
    assert worst < 29


def test_proxy_returns_the_endpoints_answer_queued_in_moto(proxy_module, artifacts, container, aws):
    moto = pytest.importorskip("moto")
    import boto3
    import requests

    # GIVEN the real container answer for two sentences, queued as moto's endpoint result
    status, real = http("POST", f"{container}/invocations", json.dumps({"inputs": SENTENCES}).encode())
    assert status == 200
    with moto.mock_aws():
        queued = {"results": [{"Body": json.dumps(real), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic"}]}
        requests.post("http://motoapi.amazonaws.com/moto-api/static/sagemaker/endpoint-results", json=queued, timeout=5)
        client = boto3.client("sagemaker-runtime", region_name="us-east-1", config=proxy_module.client_config())
        # WHEN the proxy handler is invoked through API Gateway's event
        status, body = result(proxy(proxy_module, artifacts, client).invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext()))
    # THEN it answers with the endpoint's outputs, in the Lambda path's shape
    assert status == 200
    assert body == {"model": "minilm-gpu", "version": real["version"], "outputs": real["outputs"], "usage": real["usage"]}


def test_proxy_through_the_local_container_matches_the_container(proxy_module, artifacts, container, aws):
    status, direct = http("POST", f"{container}/invocations", json.dumps({"inputs": SENTENCES}).encode())
    status, body = result(proxy(proxy_module, artifacts, runtime_url=container).invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext()))
    assert status == 200 and body["outputs"] == direct["outputs"]
    # a container 4xx (too many inputs) comes back as the same status and code
    status, body = result(proxy(proxy_module, artifacts, runtime_url=container).invoke(invoke_event("minilm-gpu", ["x"] * 257), LambdaContext()))
    assert status == 413 and body["error"]["code"] == "limit_exceeded"


def _stubbed(proxy_module, aws_region="us-east-1"):
    import boto3

    return boto3.client("sagemaker-runtime", region_name=aws_region, config=proxy_module.client_config())


@pytest.mark.parametrize(
    ("code", "http_status", "fields", "status", "api_code"),
    [
        ("ThrottlingException", 400, None, 429, "throttled"),
        ("ModelError", 424, {"OriginalStatusCode": 422, "OriginalMessage": json.dumps({"error": {"code": "invalid_input", "message": "inputs[0] must be a string"}})}, 422, "invalid_input"),
        ("ModelError", 424, {"OriginalStatusCode": 500, "OriginalMessage": "Traceback (most recent call last): ..."}, 502, "model_error"),
        ("ModelNotReadyException", 429, None, 503, "endpoint_unavailable"),
        ("ValidationException", 400, None, 503, "endpoint_unavailable"),
        ("ServiceUnavailable", 503, None, 503, "endpoint_unavailable"),
        ("InternalFailure", 500, None, 502, "upstream_error"),
    ],
)
def test_proxy_maps_sagemaker_errors(proxy_module, artifacts, aws, code, http_status, fields, status, api_code):
    from botocore.stub import Stubber

    client = _stubbed(proxy_module)
    with Stubber(client) as stub:
        stub.add_client_error(
            "invoke_endpoint", service_error_code=code, service_message="Endpoint maas-minilm-gpu of account 123456789012 failed",
            http_status_code=http_status, modeled_fields=fields,
        )
        got, body = result(proxy(proxy_module, artifacts, client).invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext()))
    assert got == status, body
    assert body["error"]["code"] == api_code
    assert "123456789012" not in body["error"]["message"] and "Traceback" not in body["error"]["message"]


class _FakeRuntime(BaseHTTPRequestHandler):
    """A sagemaker-runtime front end on 127.0.0.1 that throttles the first N calls, then answers."""

    protocol_version = "HTTP/1.1"
    throttle_first = 0
    delay_s = 0.0
    calls = 0
    answer = b"{}"

    def log_message(self, *args):
        pass

    def do_POST(self):
        import time

        cls = type(self)
        cls.calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if cls.delay_s:
            time.sleep(cls.delay_s)
        if cls.calls <= cls.throttle_first:
            body, status, headers = b'{"message": "Rate exceeded"}', 400, {"x-amzn-ErrorType": "ThrottlingException"}
        else:
            body, status, headers = cls.answer, 200, {"Content-Type": "application/json"}
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def fake_runtime():
    handler = type("Runtime", (_FakeRuntime,), {"calls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _client_for(proxy_module, url, **overrides):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime", region_name="us-east-1", endpoint_url=url,
        config=proxy_module.client_config().merge(Config(**overrides)) if overrides else proxy_module.client_config(),
    )


def test_throttling_is_retried_with_backoff_then_answered(proxy_module, artifacts, aws, fake_runtime):
    runtime, url = fake_runtime
    runtime.throttle_first = SAGEMAKER_MAX_ATTEMPTS - 1
    runtime.answer = json.dumps({"model": "minilm-gpu", "version": "1.0.0", "outputs": [[0.5], [0.25]], "usage": {"batch_size": 2}}).encode()
    status, body = result(proxy(proxy_module, artifacts, _client_for(proxy_module, url)).invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext()))
    assert status == 200 and body["outputs"] == [[0.5], [0.25]]
    assert runtime.calls == SAGEMAKER_MAX_ATTEMPTS


def test_throttling_that_persists_is_429_after_max_attempts(proxy_module, artifacts, aws, fake_runtime):
    runtime, url = fake_runtime
    runtime.throttle_first = 100
    response = proxy(proxy_module, artifacts, _client_for(proxy_module, url)).invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext())
    status, body = result(response)
    assert status == 429 and body["error"]["code"] == "throttled"
    assert runtime.calls == proxy_module.client_config().retries["total_max_attempts"] == SAGEMAKER_MAX_ATTEMPTS
    assert response["multiValueHeaders"]["Retry-After"] == ["1"]


def test_a_slow_endpoint_is_504(proxy_module, artifacts, aws, fake_runtime):
    runtime, url = fake_runtime
    runtime.delay_s = 0.5
    client = _client_for(proxy_module, url, read_timeout=0.1, retries={"mode": "standard", "total_max_attempts": 1})
    status, body = result(proxy(proxy_module, artifacts, client).invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext()))
    assert status == 504 and body["error"]["code"] == "upstream_timeout"


def test_a_wrong_shaped_endpoint_answer_is_502(proxy_module, artifacts, aws, fake_runtime):
    runtime, url = fake_runtime
    runtime.answer = b'{"outputs": [[1.0]]}'  # one output for two inputs
    status, body = result(proxy(proxy_module, artifacts, _client_for(proxy_module, url)).invoke(invoke_event("minilm-gpu", SENTENCES), LambdaContext()))
    assert status == 502


def test_proxy_embeddings_and_catalog_routes(proxy_module, artifacts, container, aws):
    function = proxy(proxy_module, artifacts, runtime_url=container)
    event = invoke_event("minilm-gpu", SENTENCES)
    event["path"] = "/models/minilm-gpu/v1/embeddings"
    event["body"] = json.dumps({"model": "minilm-gpu", "input": SENTENCES})
    status, body = result(function.invoke(event, LambdaContext()))
    status_direct, direct = http("POST", f"{container}/invocations", json.dumps({"inputs": SENTENCES}).encode())
    assert status == 200 and [d["embedding"] for d in body["data"]] == direct["outputs"]
    event = json.loads((EVENTS / "list_models.json").read_text())
    status, body = result(function.invoke(event, LambdaContext()))
    assert status == 200 and "minilm-gpu" in [m["name"] for m in body["models"]]
