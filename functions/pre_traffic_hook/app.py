"""The canary's BeforeAllowTraffic hook: CodeDeploy runs it before a new version gets any traffic.

It invokes the version being deployed directly (its qualified ARN, so the `live` alias and its
traffic are bypassed) with the requests the CDK app gives it: GET /health and the model's smoke
invoke (maas.smoke.version_checks), as API Gateway's proxy events. The version passes when every
answer is a 200 JSON object holding the expected values (and one output per input); a version
that answers 4xx/5xx, crashes or times out fails. The verdict goes to CodeDeploy in every case
(a hook that never reports leaves the deployment waiting for an hour): Failed stops the
deployment before any traffic shifts, and CloudFormation rolls the stack update back.

The new version's ARN comes from the environment, as in AWS's CodeDeploy tutorial: the version
is a CloudFormation resource this function's configuration refers to, so CloudFormation updates
this function before it updates the alias and starts the deployment.

Standard library and boto3 (the Lambda runtime's) only; the variable names come from
maas_api.constants, in the api layer.

Handler: ``app.lambda_handler``. Invoked without a CodeDeploy event (e.g. by hand), it runs the
checks and returns the verdict without reporting it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

from maas_api.constants import ENV_HOOK_REQUESTS, ENV_HOOK_TARGET_VERSION, JSON

SUCCEEDED, FAILED = "Succeeded", "Failed"
STAGE = "prod"

logger = logging.getLogger("maas.pre_traffic_hook")
logger.setLevel(logging.INFO)

_clients: dict = {}


def client(service: str):
    """One boto3 client per service and process (tests put stubbed ones here)."""
    if service not in _clients:
        import boto3
        from botocore.config import Config

        # Lambda's read timeout must outlast the function's own (at most 28 s under API Gateway).
        _clients[service] = boto3.client(service, config=Config(connect_timeout=5, read_timeout=60))
    return _clients[service]


def api_event(check: dict) -> dict:
    """The API Gateway REST proxy event (payload format 1.0) for one check's request."""
    request_id = f"pre-traffic-{uuid.uuid4()}"
    body = check.get("body")
    headers = {"Content-Type": JSON, "User-Agent": "maas-pre-traffic-hook"} if body is not None else {
        "User-Agent": "maas-pre-traffic-hook"}
    return {
        "resource": check["path"],
        "path": check["path"],
        "httpMethod": check["method"],
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": check["path"],
            "httpMethod": check["method"],
            "path": f"/{STAGE}{check['path']}",
            "stage": STAGE,
            "requestId": request_id,
            "identity": {"sourceIp": "127.0.0.1", "userAgent": "maas-pre-traffic-hook"},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def run_check(target: str, check: dict) -> str | None:
    """None when the version answered as expected, else what went wrong."""
    what = f"{check['method']} {check['path']}"
    response = client("lambda").invoke(
        FunctionName=target, InvocationType="RequestResponse", Payload=json.dumps(api_event(check)).encode()
    )
    payload = response["Payload"].read()
    if response.get("FunctionError"):
        return f"{what}: the function failed ({response['FunctionError']}): {payload[:500]!r}"
    try:
        result = json.loads(payload)
        status = result["statusCode"]
        body = json.loads(result.get("body") or "null")
    except (ValueError, KeyError, TypeError):
        return f"{what}: not an API Gateway proxy answer: {payload[:500]!r}"
    if status != 200 or not isinstance(body, dict):
        return f"{what}: HTTP {status}: {str(body)[:500]}"
    wrong = {k: body.get(k) for k, v in (check.get("expect") or {}).items() if body.get(k) != v}
    if wrong:
        return f"{what}: expected {check['expect']}, got {wrong}"
    inputs = (check.get("body") or {}).get("inputs")
    if inputs is not None and len(body.get("outputs") or []) != len(inputs):
        return f"{what}: {len(inputs)} input(s) but {len(body.get('outputs') or [])} output(s)"
    return None


def run_checks(target: str, checks: list[dict]) -> list[str]:
    """Every check in order; the problems found (empty: the version may take traffic)."""
    problems = []
    for check in checks:
        started = time.perf_counter()
        problem = run_check(target, check)
        logger.info(json.dumps({"check": f"{check['method']} {check['path']}", "target": target, "passed": problem is None,
                                "seconds": round(time.perf_counter() - started, 3), "problem": problem}))
        if problem:
            problems.append(problem)
    return problems


def lambda_handler(event, context):
    status, problems = FAILED, []
    try:
        target = os.environ[ENV_HOOK_TARGET_VERSION]
        checks = json.loads(os.environ[ENV_HOOK_REQUESTS])
        if not checks:
            raise ValueError(f"{ENV_HOOK_REQUESTS} lists no checks: a version nothing was sent to is not promoted")
        problems = run_checks(target, checks)
        status = SUCCEEDED if not problems else FAILED
    except Exception as exc:  # any failure of the hook itself fails the deployment too
        logger.exception("pre-traffic checks could not run")
        problems.append(f"the checks could not run: {exc.__class__.__name__}: {exc}")
    finally:
        if isinstance(event, dict) and "DeploymentId" in event:
            client("codedeploy").put_lifecycle_event_hook_execution_status(
                deploymentId=event["DeploymentId"],
                lifecycleEventHookExecutionId=event["LifecycleEventHookExecutionId"],
                status=status,
            )
    logger.info(json.dumps({"status": status, "problems": problems}))
    return {"status": status, "problems": problems}
