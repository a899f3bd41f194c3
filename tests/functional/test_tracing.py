"""X-Ray records the handler's work, never its answers (embeddings, user data).

The model handler runs with tracing on, as in Lambda (LAMBDA_TASK_ROOT, a sampled trace header),
in a fresh interpreter so the X-Ray SDK's process-wide state never reaches other tests; the
X-Ray daemon is a UDP socket on 127.0.0.1 that keeps every segment the SDK emits. As a control,
the same run with the handler's response capture forced back on must show the answer in the
trace, so the check can fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
MARKER = "tracing-marker-sentence-4711"

SCRIPT = r'''
import json, os, sys
sys.path[:0] = [{root!r}, {shared!r}]
if os.environ.get("FORCE_CAPTURE") == "1":  # the control: what the handler would do without capture_response=False
    from aws_lambda_powertools import Tracer
    original = Tracer.capture_lambda_handler
    Tracer.capture_lambda_handler = lambda self, handler=None, capture_response=None, capture_error=None: original(
        self, handler, capture_response=True, capture_error=capture_error)
from maas.lambda_worker import LambdaContext
from maas.local_api import load_function_module
module = load_function_module(__import__("pathlib").Path({root!r}) / "functions" / "model")
function = module.create_function(module.Config(model_name="minilm", model_dir={model!r}, catalog_path={catalog!r}))
event = {{"httpMethod": "POST", "path": "/models/minilm/invoke", "resource": "/models/{{name}}/invoke",
         "headers": {{"Content-Type": "application/json"}}, "requestContext": {{"requestId": "trace-test", "stage": "prod"}},
         "pathParameters": {{"name": "minilm"}}, "body": json.dumps({{"inputs": [{marker!r}]}}), "isBase64Encoded": False}}
result = function.invoke(event, LambdaContext("maas-minilm", 1769, 15))
print(json.dumps({{"status": result["statusCode"], "tracing": function.tracer is not None,
                  "first_value": json.loads(result["body"])["outputs"][0][0]}}))
'''


@pytest.fixture(scope="module")
def built():
    if not (BUILD / "minilm" / "1.0.0" / "card.json").is_file():
        pytest.skip("build/ lacks minilm: run `maas build` first")
    return BUILD


def traced_run(force_capture: bool) -> tuple[dict, list[dict]]:
    """The handler's answer and every segment document the X-Ray SDK sent to the daemon."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as daemon:
        daemon.bind(("127.0.0.1", 0))
        daemon.settimeout(0.5)
        port = daemon.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_XRAY"))}
        env.update({
            "LAMBDA_TASK_ROOT": str(ROOT / "functions" / "model"),
            "AWS_LAMBDA_FUNCTION_NAME": "maas-minilm",
            "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "POWERTOOLS_TRACE_DISABLED": "false",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "maas-minilm",
            "FORCE_CAPTURE": "1" if force_capture else "0",
        })
        script = SCRIPT.format(root=str(ROOT), shared=str(ROOT / "shared"), model=str(BUILD / "minilm" / "1.0.0"),
                               catalog=str(BUILD / "catalog.json"), marker=MARKER)
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        answer = json.loads(run.stdout.strip().splitlines()[-1])
        documents, deadline = [], time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                datagram = daemon.recv(65536).decode()
            except socket.timeout:
                break
            header, _, body = datagram.partition("\n")
            documents.append(json.loads(body))
    return answer, documents


def _walk(document: dict):
    yield document
    for child in document.get("subsegments", []):
        yield from _walk(child)


def test_traces_keep_the_work_and_leave_out_the_answer(built):
    answer, documents = traced_run(force_capture=False)
    assert answer["status"] == 200 and answer["tracing"] is True
    names = {s.get("name") for d in documents for s in _walk(d)}
    assert any(n and n.startswith("## ") for n in names), names  # the handler's subsegment reached the daemon
    assert "## predict" in names
    text = json.dumps(documents)
    assert "response" not in json.dumps([s.get("metadata", {}) for d in documents for s in _walk(d)])
    assert repr(answer["first_value"])[:8] not in text and MARKER not in text


def test_the_control_run_shows_the_answer_when_capture_is_on(built):
    answer, documents = traced_run(force_capture=True)
    metadata = json.dumps([s.get("metadata", {}) for d in documents for s in _walk(d)])
    assert "response" in metadata and repr(answer["first_value"])[:8] in metadata
