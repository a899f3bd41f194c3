"""The canary's two halves, in-process: the handler's per-version server_errors metric and the
pre-traffic hook (functions/pre_traffic_hook) that tries a new version before any traffic.

The hook runs with real boto3 clients: CodeDeploy's is a botocore Stubber (which checks every
parameter against the service's model), and Lambda's Invoke is answered by the real model
handler in-process, as the version the hook names (botocore validates the request first).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from urllib.parse import unquote

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from botocore.stub import Stubber

from maas.lambda_worker import LambdaContext
from maas.local_api import _load_module, configure_local_environment, load_function_module
from maas.smoke import version_checks
from maas_api.constants import ENV_HOOK_REQUESTS, ENV_HOOK_TARGET_VERSION, METRIC_SERVER_ERRORS
from maas_runtime import ModelCard

configure_local_environment()

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
CATALOG = BUILD / "catalog.json"
FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:Maas-MinilmFunction"
DEPLOYMENT = {"DeploymentId": "d-EXAMPLE123", "LifecycleEventHookExecutionId": "eyJleGFtcGxlIjoiaG9vayJ9"}


@pytest.fixture(scope="module")
def artifacts() -> Path:
    missing = [n for n in ("minilm/1.0.0", "digits/1.0.0") if not (BUILD / n / "card.json").is_file()]
    if missing or not CATALOG.is_file():
        pytest.skip(f"build/ lacks {missing or 'catalog.json'}: run `maas build` first")
    return BUILD


@pytest.fixture(scope="module")
def handler_module(artifacts):
    return load_function_module(ROOT / "functions" / "model")


@pytest.fixture(scope="module")
def hook():
    return _load_module(ROOT / "functions" / "pre_traffic_hook" / "app.py", "maas_pre_traffic_hook")


def make_function(handler_module, name: str, model_dir: Path):
    """A function as Lambda's init phase leaves it: the model loaded, or its failure recorded."""
    from maas_api.errors import ApiError

    function = handler_module.create_function(
        handler_module.Config(model_name=name, model_dir=str(model_dir), catalog_path=str(CATALOG))
    )
    try:
        function.backend.model()
    except ApiError:
        pass
    return function


class Versions:
    """What Lambda runs for `Invoke` on a qualified ARN: version number -> an in-process function."""

    def __init__(self, functions: dict[str, object]):
        self.functions = functions
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, params, **_):
        name = unquote(params["url_path"].split("/functions/")[1].split("/")[0])
        version = name.rsplit(":", 1)[1]
        event = json.loads(params["body"])
        self.calls.append((version, event))
        context = LambdaContext("Maas-MinilmFunction", 1769, 15)
        context.function_version = version
        result = {"StatusCode": 200, "ExecutedVersion": version}
        try:
            payload = json.dumps(self.functions[version].invoke(event, context)).encode()
        except Exception as exc:  # what Lambda reports for an unhandled exception
            payload = json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}).encode()
            result["FunctionError"] = "Unhandled"
        result["Payload"] = StreamingBody(io.BytesIO(payload), len(payload))
        return AWSResponse(None, 200, {}, None), result


@pytest.fixture
def clients(hook, monkeypatch):
    """Real boto3 clients for the hook: CodeDeploy stubbed, Lambda answered in-process."""
    lambda_client = boto3.client("lambda", region_name="eu-west-1")
    codedeploy = boto3.client("codedeploy", region_name="eu-west-1")
    stubber = Stubber(codedeploy)
    stubber.activate()
    monkeypatch.setattr(hook, "_clients", {"lambda": lambda_client, "codedeploy": codedeploy})
    yield lambda_client, stubber
    stubber.deactivate()


def expect_report(stubber: Stubber, status: str) -> None:
    stubber.add_response(
        "put_lifecycle_event_hook_execution_status",
        {"lifecycleEventHookExecutionId": DEPLOYMENT["LifecycleEventHookExecutionId"]},
        {"deploymentId": DEPLOYMENT["DeploymentId"],
         "lifecycleEventHookExecutionId": DEPLOYMENT["LifecycleEventHookExecutionId"], "status": status},
    )


def configure(monkeypatch, name: str, version: str) -> list[dict]:
    checks = version_checks(name, ModelCard.read(BUILD / name / "1.0.0"))
    monkeypatch.setenv(ENV_HOOK_TARGET_VERSION, f"{FUNCTION_ARN}:{version}")
    monkeypatch.setenv(ENV_HOOK_REQUESTS, json.dumps(checks))
    return checks


@pytest.mark.parametrize("name", ["minilm", "digits"])
def test_a_good_version_passes_the_pre_traffic_hook(name, hook, handler_module, clients, monkeypatch):
    lambda_client, stubber = clients
    # GIVEN version 7 of a model's function, built from the real artifact
    versions = Versions({"7": make_function(handler_module, name, BUILD / name / "1.0.0")})
    lambda_client.meta.events.register("before-call.lambda.Invoke", versions)
    checks = configure(monkeypatch, name, "7")
    expect_report(stubber, "Succeeded")
    # WHEN CodeDeploy runs the hook
    result = hook.lambda_handler(dict(DEPLOYMENT), None)
    # THEN it tried that version with every check, and reported Succeeded
    assert result == {"status": "Succeeded", "problems": []}
    assert [(v, e["httpMethod"], e["path"]) for v, e in versions.calls] == [("7", c["method"], c["path"]) for c in checks]
    stubber.assert_no_pending_responses()


def test_a_version_with_a_broken_artifact_fails_and_counts_its_5xx(hook, handler_module, clients, monkeypatch,
                                                                      tmp_path, capsys):
    lambda_client, stubber = clients
    # GIVEN version 8, whose packaged model file was damaged (its sha256 no longer matches the card),
    # with metrics on as in Lambda
    broken = tmp_path / "minilm"
    shutil.copytree(BUILD / "minilm" / "1.0.0", broken)
    with open(broken / "model.onnx", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0" * 64)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    versions = Versions({"8": make_function(handler_module, "minilm", broken)})
    lambda_client.meta.events.register("before-call.lambda.Invoke", versions)
    configure(monkeypatch, "minilm", "8")
    expect_report(stubber, "Failed")
    capsys.readouterr()
    # WHEN the hook runs
    result = hook.lambda_handler(dict(DEPLOYMENT), None)
    # THEN both checks fail (health and invoke answer 503) and CodeDeploy is told Failed
    assert result["status"] == "Failed"
    assert len(result["problems"]) == 2
    assert all("HTTP 503" in problem and "artifact" in problem for problem in result["problems"])
    stubber.assert_no_pending_responses()
    # AND the 503 was counted as a server error of version 8: what the canary's rollback alarm watches
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if METRIC_SERVER_ERRORS in line]
    assert len(metrics) == 2  # one per 5xx answer
    metric = metrics[-1]
    assert metric[METRIC_SERVER_ERRORS] == [1.0]
    assert {k: metric[k] for k in ("model", "version", "service")} == {"model": "minilm", "version": "8",
                                                                       "service": "maas-minilm"}
    (definition,) = metric["_aws"]["CloudWatchMetrics"]
    assert definition["Namespace"] == "Maas" and sorted(definition["Dimensions"][0]) == ["model", "service", "version"]


def test_a_version_that_crashes_fails(hook, clients, monkeypatch):
    lambda_client, stubber = clients

    class Crashing:
        def invoke(self, event, context):
            raise MemoryError("Runtime exited with error: signal: killed")

    lambda_client.meta.events.register("before-call.lambda.Invoke", Versions({"9": Crashing()}))
    configure(monkeypatch, "minilm", "9")
    expect_report(stubber, "Failed")
    result = hook.lambda_handler(dict(DEPLOYMENT), None)
    assert result["status"] == "Failed" and "the function failed (Unhandled)" in result["problems"][0]
    stubber.assert_no_pending_responses()


def test_a_hook_that_cannot_run_still_reports_failed(hook, clients, monkeypatch):
    _, stubber = clients
    monkeypatch.delenv(ENV_HOOK_TARGET_VERSION, raising=False)
    monkeypatch.delenv(ENV_HOOK_REQUESTS, raising=False)
    expect_report(stubber, "Failed")
    result = hook.lambda_handler(dict(DEPLOYMENT), None)
    assert result["status"] == "Failed" and ENV_HOOK_TARGET_VERSION in result["problems"][0]
    stubber.assert_no_pending_responses()


def test_no_server_errors_metric_for_answers_below_500(handler_module, artifacts, monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    function = make_function(handler_module, "digits", BUILD / "digits" / "1.0.0")
    hook_module = _load_module(ROOT / "functions" / "pre_traffic_hook" / "app.py", "maas_pre_traffic_hook")
    context = LambdaContext("Maas-DigitsFunction", 512, 10)
    context.function_version = "3"
    capsys.readouterr()
    ok = function.invoke(hook_module.api_event(version_checks("digits", ModelCard.read(BUILD / "digits" / "1.0.0"))[1]), context)
    bad = function.invoke(hook_module.api_event({"method": "POST", "path": "/models/digits/invoke",
                                                 "body": {"inputs": ["not an image"]}}), context)
    assert (ok["statusCode"], bad["statusCode"]) == (200, 422)
    assert METRIC_SERVER_ERRORS not in capsys.readouterr().out
