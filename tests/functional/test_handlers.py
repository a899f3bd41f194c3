"""The per-model Lambda handler called in-process with canned API Gateway events (tests/events/)."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import shutil
import struct
import time
from pathlib import Path

import pytest

from maas.lambda_worker import LambdaContext
from maas.local_api import configure_local_environment, load_function_module

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"
BUILD = ROOT / "build"
NEEDED = ("minilm/1.0.0", "digits/1.0.0")


def event(name: str, **changes) -> dict:
    data = json.loads((EVENTS / f"{name}.json").read_text())
    data.update(changes)
    return data


def answer(response: dict) -> tuple[int, dict]:
    body = json.loads(response["body"])
    text = response["body"]
    assert "Traceback" not in text and "/work/" not in text and "site-packages" not in text
    return response["statusCode"], body


def assert_error(response: dict, status: int, request_id: str | None = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"):
    got, body = answer(response)
    assert got == status, body
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] and body["error"]["message"]
    if request_id:
        assert body["request_id"] == request_id
    return body["error"]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    missing = [n for n in NEEDED if not (BUILD / n / "card.json").is_file()]
    if missing or not (BUILD / "catalog.json").is_file():
        pytest.skip(f"build/ lacks {missing or 'catalog.json'}: run `maas build` first")
    return BUILD


@pytest.fixture(scope="module")
def handler_module():
    return load_function_module(ROOT / "functions" / "model")


@pytest.fixture(scope="module")
def minilm(handler_module, artifacts):
    config = handler_module.Config(
        model_name="minilm", model_dir=str(artifacts / "minilm/1.0.0"), catalog_path=str(artifacts / "catalog.json")
    )
    return handler_module.create_function(config)


@pytest.fixture(scope="module")
def digits(handler_module, artifacts):
    config = handler_module.Config(
        model_name="digits", model_dir=str(artifacts / "digits/1.0.0"), catalog_path=str(artifacts / "catalog.json")
    )
    return handler_module.create_function(config)


# --- the routes -------------------------------------------------------------------------------


def test_invoke_minilm_returns_unit_vectors_of_the_card_dimension(minilm, artifacts):
    # GIVEN the canned API Gateway event for two sentences
    card = json.loads((artifacts / "minilm/1.0.0/card.json").read_text())
    # WHEN the handler resolves it
    response = minilm.invoke(event("invoke_minilm"), LambdaContext())
    # THEN two L2-normalized vectors come back with the model's name, version and usage
    status, body = answer(response)
    assert status == 200
    assert (body["model"], body["version"]) == ("minilm", card["version"])
    assert len(body["outputs"]) == 2
    for vector in body["outputs"]:
        assert len(vector) == card["outputs"]["dimensions"]
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-4)
    assert body["usage"]["batch_size"] == 2 and body["usage"]["input_tokens"] > 4
    assert body["outputs"][0] != body["outputs"][1]
    assert response["multiValueHeaders"]["x-request-id"] == ["c6af9ac6-7b61-11e6-9a41-93e8deadbeef"]


def test_invoke_digits_ranks_the_canned_zero_first(digits):
    status, body = answer(digits.invoke(event("invoke_digits"), LambdaContext()))
    assert status == 200
    ranked = body["outputs"][0]
    assert len(ranked) == 3 and ranked[0]["label"] == "0"
    assert ranked[0]["score"] >= ranked[1]["score"] >= ranked[2]["score"]
    assert body["usage"] == {"batch_size": 1}


def test_openai_embeddings_equal_invoke_and_base64_decodes_to_the_same_floats(minilm):
    _, invoked = answer(minilm.invoke(event("invoke_minilm"), LambdaContext()))
    status, openai = answer(minilm.invoke(event("embeddings"), LambdaContext()))
    assert status == 200 and openai["object"] == "list" and openai["model"] == "minilm"
    assert [d["embedding"] for d in openai["data"]] == invoked["outputs"]
    assert [d["index"] for d in openai["data"]] == [0, 1]
    assert openai["usage"]["prompt_tokens"] == invoked["usage"]["input_tokens"] == openai["usage"]["total_tokens"]

    status, b64 = answer(minilm.invoke(event("model_embeddings"), LambdaContext()))
    assert status == 200
    raw = base64.b64decode(b64["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert floats == pytest.approx(invoked["outputs"][0], abs=1e-7)


def test_catalog_routes_answer_from_the_packaged_catalog(minilm, artifacts):
    catalog = json.loads((artifacts / "catalog.json").read_text())
    status, body = answer(minilm.invoke(event("list_models"), LambdaContext()))
    assert status == 200
    assert sorted(m["name"] for m in body["models"]) == sorted({m["card"]["name"] for m in catalog["models"]})
    status, card = answer(minilm.invoke(event("get_model"), LambdaContext()))
    expected = next(m["card"] for m in catalog["models"] if m["card"]["name"] == "digits" and m.get("live", True))
    assert status == 200 and card["files"] == expected["files"] and card["parity"] == expected["parity"]
    assert card["target"] == "lambda" and "build" not in card


def test_health_and_openapi(minilm):
    status, body = answer(minilm.invoke(event("health"), LambdaContext()))
    assert status == 200 and body["model"] == "minilm" and body["status"] == "ok"
    assert body["version"] == "1.0.0" and body["loaded"] is True and body["checked_at"]
    status, doc = answer(minilm.invoke(event("openapi"), LambdaContext()))
    assert status == 200 and doc["openapi"].startswith("3.")
    for path in ("/models/minilm/invoke", "/models/digits/invoke", "/v1/embeddings", "/models/minilm/v1/embeddings",
                 "/models", "/health"):
        assert path in doc["paths"], path
    assert "422" in doc["paths"]["/models/minilm/invoke"]["post"]["responses"]


# --- every error status the handler itself produces --------------------------------------------


def test_malformed_json_is_400(minilm):
    error = assert_error(minilm.invoke(event("invoke_bad_json"), LambdaContext()), 400)
    assert "not valid JSON" in error["message"]


def test_another_functions_model_is_404(minilm):
    error = assert_error(minilm.invoke(event("invoke_other_model"), LambdaContext()), 404)
    assert "digits" in error["message"]


def test_wrong_method_is_405_with_allow(minilm):
    response = minilm.invoke(event("invoke_wrong_method"), LambdaContext())
    assert_error(response, 405)
    assert response["multiValueHeaders"]["Allow"] == ["POST"]


def test_too_many_inputs_is_413(minilm):
    error = assert_error(minilm.invoke(event("invoke_too_many"), LambdaContext()), 413)
    assert "at most 32" in error["message"]


def test_wrong_content_type_is_415(minilm):
    e = event("invoke_minilm")
    e["headers"]["Content-Type"] = "text/plain"
    assert_error(minilm.invoke(e, LambdaContext()), 415)


def test_schema_violation_is_422(minilm):
    error = assert_error(minilm.invoke(event("invoke_wrong_type"), LambdaContext()), 422)
    assert error["message"].startswith("inputs")


def test_runtime_rejection_is_422_naming_the_input(digits):
    e = event("invoke_digits", body=json.dumps({"inputs": [[[99] * 8] * 8]}))
    e["pathParameters"] = {"name": "digits"}
    error = assert_error(digits.invoke(e, LambdaContext()), 422)
    assert "inputs[0]" in error["message"]


def test_missing_artifact_in_the_package_is_503_and_so_is_health(handler_module, artifacts, tmp_path):
    function = handler_module.create_function(
        handler_module.Config(model_name="minilm", model_dir=str(tmp_path / "absent"), catalog_path=str(artifacts / "catalog.json"))
    )
    error = assert_error(function.invoke(event("invoke_minilm"), LambdaContext()), 503)
    assert error["code"] == "artifact_invalid"
    health = assert_error(function.invoke(event("health"), LambdaContext()), 503)
    assert health["code"] == "artifact_invalid" and health["message"].startswith("health check failed")


# --- the artifact from S3 (moto) --------------------------------------------------------------


@pytest.fixture
def s3():
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():  # with moto's own fake credentials in the environment
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="maas-artifacts")
        yield client


def upload(client, folder: Path, prefix: str, skip: tuple[str, ...] = (), tamper: str | None = None):
    for path in sorted(folder.iterdir()):
        if path.name in skip:
            continue
        data = path.read_bytes()
        if path.name == tamper:
            data = bytes([data[0] ^ 0xFF]) + data[1:]  # same size, different digest
        client.put_object(Bucket="maas-artifacts", Key=f"{prefix}/{path.name}", Body=data)


def s3_function(handler_module, artifacts, client, tmp_path, prefix="digits/1.0.0"):
    config = handler_module.Config(
        model_name="digits",
        model_s3_uri=f"s3://maas-artifacts/{prefix}/",
        catalog_path=str(artifacts / "catalog.json"),
        tmp_dir=str(tmp_path),
    )
    return handler_module.create_function(config, s3=client)


def digits_event():
    return event("invoke_digits")


def test_s3_artifact_is_downloaded_once_verified_and_reused_while_warm(handler_module, artifacts, s3, tmp_path):
    # GIVEN the digits artifact in S3
    upload(s3, artifacts / "digits/1.0.0", "digits/1.0.0")
    function = s3_function(handler_module, artifacts, s3, tmp_path)
    # WHEN the function answers a first request
    status, body = answer(function.invoke(digits_event(), LambdaContext()))
    # THEN it answered from a verified copy under its temp folder
    assert status == 200 and body["outputs"][0][0]["label"] == "0"
    copies = list(tmp_path.glob("maas-model-*"))
    assert len(copies) == 1 and (copies[0] / "model.onnx").is_file()
    # AND a warm instance keeps answering even after the objects are gone (no second download)
    for item in s3.list_objects_v2(Bucket="maas-artifacts")["Contents"]:
        s3.delete_object(Bucket="maas-artifacts", Key=item["Key"])
    status, again = answer(function.invoke(digits_event(), LambdaContext()))
    assert status == 200 and again["outputs"] == body["outputs"]
    assert len(list(tmp_path.glob("maas-model-*"))) == 1


def test_s3_missing_object_is_503(handler_module, artifacts, s3, tmp_path):
    upload(s3, artifacts / "digits/1.0.0", "digits/1.0.0", skip=("model.onnx",))
    error = assert_error(s3_function(handler_module, artifacts, s3, tmp_path).invoke(digits_event(), LambdaContext()), 503)
    assert error["code"] == "artifact_missing" and "maas-artifacts" not in error["message"]
    assert not list(tmp_path.glob("maas-model-*"))  # the partial download was removed


def test_s3_missing_card_is_503_then_recovers_once_uploaded(handler_module, artifacts, s3, tmp_path):
    function = s3_function(handler_module, artifacts, s3, tmp_path)
    assert_error(function.invoke(digits_event(), LambdaContext()), 503)
    upload(s3, artifacts / "digits/1.0.0", "digits/1.0.0")
    status, _ = answer(function.invoke(digits_event(), LambdaContext()))
    assert status == 200


def test_s3_digest_mismatch_is_refused(handler_module, artifacts, s3, tmp_path):
    upload(s3, artifacts / "digits/1.0.0", "digits/1.0.0", tamper="model.onnx")
    error = assert_error(s3_function(handler_module, artifacts, s3, tmp_path).invoke(digits_event(), LambdaContext()), 503)
    assert error["code"] == "artifact_invalid" and "sha256" in error["message"]
    assert not list(tmp_path.glob("maas-model-*"))


def test_s3_denied_read_is_502(handler_module, artifacts, s3, tmp_path):
    from botocore.stub import Stubber

    # moto does not enforce bucket policies, so S3's AccessDenied answer is stubbed
    with Stubber(s3) as stub:
        stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
        response = s3_function(handler_module, artifacts, s3, tmp_path).invoke(digits_event(), LambdaContext())
    error = assert_error(response, 502)
    assert error["code"] == "artifact_access_denied"


def test_s3_timeout_is_504(handler_module, artifacts, tmp_path):
    from botocore.exceptions import ReadTimeoutError

    class SlowS3:
        def get_object(self, **_):
            raise ReadTimeoutError(endpoint_url="https://s3.amazonaws.com")

    error = assert_error(s3_function(handler_module, artifacts, SlowS3(), tmp_path).invoke(digits_event(), LambdaContext()), 504)
    assert error["code"] == "artifact_timeout"


def test_artifact_for_another_model_is_refused(handler_module, artifacts, tmp_path):
    folder = tmp_path / "renamed"
    shutil.copytree(artifacts / "digits/1.0.0", folder)
    function = handler_module.create_function(
        handler_module.Config(model_name="minilm", model_dir=str(folder), catalog_path=str(artifacts / "catalog.json"))
    )
    error = assert_error(function.invoke(event("invoke_minilm"), LambdaContext()), 503)
    assert "digits" in error["message"]


def test_lambda_handler_reads_its_configuration_from_the_environment(handler_module, artifacts, monkeypatch):
    monkeypatch.setenv("MAAS_MODEL_NAME", "digits")
    monkeypatch.setenv("MAAS_MODEL_DIR", str(artifacts / "digits/1.0.0"))
    monkeypatch.setenv("MAAS_CATALOG_PATH", str(artifacts / "catalog.json"))
    monkeypatch.setattr(handler_module.lambda_handler, "function", None)
    status, body = answer(handler_module.lambda_handler(digits_event(), LambdaContext()))
    assert status == 200 and body["model"] == "digits"


def test_metrics_carry_latency_batch_size_tokens_and_the_model_dimension(handler_module, artifacts, monkeypatch, capsys):
    # GIVEN metrics enabled, as in Lambda
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    function = handler_module.create_function(
        handler_module.Config(model_name="minilm", model_dir=str(artifacts / "minilm/1.0.0"), catalog_path=str(artifacts / "catalog.json"))
    )
    capsys.readouterr()
    # WHEN one request is answered
    assert function.invoke(event("invoke_minilm"), LambdaContext())["statusCode"] == 200
    # THEN one EMF document is printed with the request's figures under the model dimension
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    emf = next(d for d in documents if "latency" in d)
    values = {k: v[0] if isinstance(v, list) else v for k, v in emf.items()}
    assert values["model"] == "minilm" and values["batch_size"] == 2.0 and values["input_tokens"] > 4 and values["latency"] > 0
    assert ["model", "service"] in emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    # AND that record is the request's log line: its id and usage ride along as metadata, not metrics
    request_id = event("invoke_minilm")["requestContext"]["requestId"]
    assert emf["message"] == "invoked" and emf["request_id"] == request_id
    assert emf["usage"]["input_tokens"] == values["input_tokens"] and emf["usage"]["batch_size"] == 2
    metric_names = {m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert metric_names == {"latency", "batch_size", "input_tokens"}


def test_without_metrics_each_request_is_logged_with_its_correlation_id(handler_module, artifacts, monkeypatch, caplog):
    # GIVEN metrics off, as in `maas serve` and the tests (with `maas serve --verbose`'s log level)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    function = handler_module.create_function(
        handler_module.Config(model_name="minilm", model_dir=str(artifacts / "minilm/1.0.0"), catalog_path=str(artifacts / "catalog.json"))
    )
    # The process's one logger for this service was set up by an earlier test (its level, its stdout)
    stream = io.StringIO()
    monkeypatch.setattr(function.logger.registered_handler, "stream", stream)
    caplog.set_level(logging.INFO, logger=function.logger.name)
    # WHEN one request is answered and one is refused
    assert function.invoke(event("invoke_minilm"), LambdaContext())["statusCode"] == 200
    assert function.invoke(event("invoke_wrong_type"), LambdaContext())["statusCode"] == 422
    # THEN each has one JSON log line (Powertools' Logger, encoded by orjson) carrying API Gateway's request id
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    invoked = next(line for line in lines if line["message"] == "invoked")
    rejected = next(line for line in lines if line["message"] == "request rejected")
    assert invoked["correlation_id"] == event("invoke_minilm")["requestContext"]["requestId"]
    assert invoked["batch_size"] == 2 and invoked["usage"]["input_tokens"] > 4 and invoked["latency_ms"] > 0
    assert rejected["correlation_id"] == event("invoke_wrong_type")["requestContext"]["requestId"] and rejected["status"] == 422


def test_log_lines_fall_back_to_the_standard_encoder_where_orjson_cannot_encode():
    from maas_api.function import log_json

    # an int beyond 64 bits, and an object that only str() can print
    record = {"big": 1 << 70, "obj": object(), 3: "non-str key"}
    assert json.loads(log_json(record))["big"] == 1 << 70
    assert json.loads(log_json({"obj": Path("/tmp")}))["obj"] == "/tmp"
    assert json.loads(log_json({1: "a"})) == {"1": "a"}


def test_with_tracing_on_the_function_wraps_requests_in_a_tracer(handler_module, artifacts, monkeypatch):
    # GIVEN tracing enabled, as in Lambda (outside Lambda, Powertools' Tracer records nothing)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    config = handler_module.Config(
        model_name="digits", model_dir=str(artifacts / "digits/1.0.0"), catalog_path=str(artifacts / "catalog.json")
    )
    # WHEN a function is created and invoked
    function = handler_module.create_function(config)
    status, body = answer(function.invoke(event("invoke_digits"), LambdaContext()))
    # THEN it has a Tracer and still answers
    assert function.tracer is not None
    assert status == 200 and body["outputs"][0][0]["label"] == "0"


_INIT_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import app  # Lambda's init: starts loading the packaged model
preloaded = app._preload is not None
app._preload.join(60)
sys.path.append(sys.argv[3])  # maas/: the worker's LambdaContext, standard library only
from lambda_worker import LambdaContext
response = app.lambda_handler(json.load(open(sys.argv[2])), LambdaContext("f"))
print(json.dumps({"preloaded": preloaded, "status": response["statusCode"], "body": json.loads(response["body"])}))
"""


def _cold_start(artifact_dir: Path, tmp_path: Path) -> dict:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "MAAS_MODEL_NAME": "digits",
        "MAAS_MODEL_DIR": str(artifact_dir),
        "MAAS_CATALOG_PATH": str(BUILD / "catalog.json"),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    script = tmp_path / "init.py"
    script.write_text(_INIT_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(ROOT / "functions" / "model"), str(EVENTS / "invoke_digits.json"),
         str(ROOT / "maas")],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cold_start_preloads_the_packaged_model_and_answers(artifacts, tmp_path):
    # GIVEN a function whose environment names a packaged artifact (as Lambda sets it)
    # WHEN a fresh process imports the handler (Lambda's init) and gets its first request
    result = _cold_start(artifacts / "digits/1.0.0", tmp_path)
    # THEN the model was loaded during init and the first request is answered
    assert result["preloaded"] is True
    assert result["status"] == 200 and result["body"]["outputs"][0][0]["label"] == "0"


def test_a_cold_start_with_a_tampered_artifact_answers_503_instead_of_crashing(artifacts, tmp_path):
    folder = tmp_path / "digits"
    shutil.copytree(artifacts / "digits/1.0.0", folder)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[100] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    result = _cold_start(folder, tmp_path)
    assert result["status"] == 503
    assert result["body"]["error"]["code"] == "artifact_invalid"
    assert "sha256" in result["body"]["error"]["message"]


def test_two_functions_in_one_process_never_answer_each_others_requests(minilm, digits):
    # GIVEN two functions in one process, as `maas serve` runs them (each keeps the request it is
    # answering; Powertools' resolver, used until the handler routed by the table, kept it in class
    # attributes that every resolver of a process shared), and requests whose bodies take a while
    # to parse and validate
    from concurrent.futures import ThreadPoolExecutor

    images = {"inputs": [[[(r + c + k) % 17 for c in range(8)] for r in range(8)] for k in range(256)]}
    texts = {"inputs": [f"sentence {k}" for k in range(3)]}

    def run(function, name, body, n):
        wrong = []
        for _ in range(n):
            e = event(f"invoke_{name}", body=json.dumps(body))
            status, answered = answer(function.invoke(e, LambdaContext()))
            if status != 200 or answered.get("model") != name or len(answered["outputs"]) != len(body["inputs"]):
                wrong.append((name, status, str(answered)[:120]))
        return wrong

    # WHEN both answer requests at the same time
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda args: run(*args), [(minilm, "minilm", texts, 150), (digits, "digits", images, 60)]))
    # THEN each answered its own requests, every time
    assert results == [[], []], [r[:3] for r in results]


def test_request_metrics_print_powertools_record_and_nothing_where_metrics_are_off(monkeypatch, capsys):
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
    from maas_api.function import RequestMetrics

    now_ms = int(time.time() * 1000)  # one timestamp for both records

    def record(metrics):
        metrics.set_default_dimensions(model="minilm")
        metrics.add_metric(name="latency", unit=MetricUnit.Milliseconds, value=3.25)
        metrics.add_metadata("request_id", "r-1")
        metrics.set_timestamp(now_ms)
        metrics.flush_metrics()
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    # GIVEN metrics on: the same EMF document as Powertools' own flush prints
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    ours = record(RequestMetrics(namespace="Maas", service="maas-minilm"))
    theirs = record(EphemeralMetrics(namespace="Maas", service="maas-minilm"))
    assert ours == theirs and len(ours) == 1 and ours[0]["latency"] == [3.25] and ours[0]["request_id"] == "r-1"
    # GIVEN metrics off when the function's metrics are made: nothing is printed
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    assert record(RequestMetrics(namespace="Maas", service="maas-minilm")) == []
