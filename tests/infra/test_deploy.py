"""What `cdk deploy` does in a real account, read off the synthesized template.

Canary rollback on the new version's 5xx answers and a pre-traffic hook; alarms that can reach
their topic; throttling that answers 429 before Lambda throttles; request limits the gateway and
the function agree on; no account-wide side effects; a unique API name; a proxy that outlasts its
SageMaker client; a model container without network; gateway error bodies that stay JSON whatever
the client sends; a template that names no region.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from types import SimpleNamespace

import jsonschema
import pytest

from maas.smoke import version_checks
from maas.template_api import load_assembly
from maas_api.constants import (
    METRIC_SERVER_ERRORS,
    METRICS_NAMESPACE,
    SAGEMAKER_CONNECT_TIMEOUT_S,
    SAGEMAKER_MAX_ATTEMPTS,
    SAGEMAKER_READ_TIMEOUT_S,
    SAGEMAKER_WORST_CASE_S,
)
from maas_runtime import ModelCard

LAMBDA_EVENT_LIMIT = 6 * 1024 * 1024
"""Lambda's synchronous invocation payload limit (the whole event)."""
REGION = re.compile(r"\b(?:us|eu|ap|sa|ca|me|af|il|mx|cn|us-gov)-[a-z]+-\d\b")


def _env(resource: dict) -> dict:
    return resource["Properties"].get("Environment", {}).get("Variables", {})


def _ref(value) -> str | None:
    return value.get("Ref") if isinstance(value, dict) else None


def _getatt(value) -> list | None:
    return value.get("Fn::GetAtt") if isinstance(value, dict) else None


def _deployments(synth) -> dict[str, SimpleNamespace]:
    """Per model: its function, alias, the version the alias points at, deployment group, hook."""
    functions = synth.of_type("AWS::Lambda::Function")
    found = {}
    for alias_id, alias in synth.of_type("AWS::Lambda::Alias").items():
        function_id = _ref(alias["Properties"]["FunctionName"])
        version_id = _getatt(alias["Properties"]["FunctionVersion"])[0]
        update = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
        group_id = _ref(update["DeploymentGroupName"])
        name = _env(functions[function_id])["MAAS_MODEL_NAME"]
        found[name] = SimpleNamespace(
            function_id=function_id, function=functions[function_id], alias_id=alias_id, version_id=version_id,
            group=synth.resources[group_id], group_id=group_id,
            hook_id=_ref(update.get("BeforeAllowTrafficHook")),
        )
    return found


def _policy_statements(synth, role_id: str) -> list[dict]:
    return [s for p in synth.of_type("AWS::IAM::Policy").values()
            if {"Ref": role_id} in p["Properties"]["Roles"] for s in p["Properties"]["PolicyDocument"]["Statement"]]


# --- 2. the canary rolls back a version that answers 5xx, and never promotes an untried one -----


def test_rollback_alarms_watch_only_the_new_versions_5xx_answers_and_errors(synth, manifest):
    deployments = _deployments(synth)
    assert sorted(deployments) == sorted(s.name for s in manifest.models)
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    for name, d in deployments.items():
        props = d.group["Properties"]
        assert props["AutoRollbackConfiguration"]["Enabled"] is True
        assert set(props["AutoRollbackConfiguration"]["Events"]) >= {"DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"}
        watched = [alarms[_ref(a["Name"])]["Properties"] for a in props["AlarmConfiguration"]["Alarms"]]
        version = {"Fn::GetAtt": [d.version_id, "Version"]}
        by_metric = {(a["Namespace"], a["MetricName"]): a for a in watched}
        assert set(by_metric) == {(METRICS_NAMESPACE, METRIC_SERVER_ERRORS), ("AWS/Lambda", "Errors")}, name
        # The handler's server_errors of this version (the dimensions it emits them with) ...
        five_xx = by_metric[(METRICS_NAMESPACE, METRIC_SERVER_ERRORS)]
        assert {x["Name"]: x["Value"] for x in five_xx["Dimensions"]} == {
            "service": _env(d.function)["POWERTOOLS_SERVICE_NAME"], "model": name, "version": version}
        # ... and Lambda's errors of this version when the alias invokes it (not the alias as a whole).
        errors = {x["Name"]: x["Value"] for x in by_metric[("AWS/Lambda", "Errors")]["Dimensions"]}
        assert errors["ExecutedVersion"] == version and errors["FunctionName"] == {"Ref": d.function_id}
        assert errors["Resource"] == {"Fn::Join": ["", [{"Ref": d.function_id}, ":live"]]}
        for alarm in watched:
            assert alarm["Threshold"] == 1 and alarm["EvaluationPeriods"] == 1 and alarm["Period"] == 60
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
            assert alarm["TreatMissingData"] == "notBreaching"


def test_a_pre_traffic_hook_tries_the_new_version_before_any_traffic(synth, manifest, artifacts):
    from maas.paths import artifact_dir

    functions = synth.of_type("AWS::Lambda::Function")
    for name, d in _deployments(synth).items():
        spec = manifest.get(name)
        # CodeDeploy runs the hook before shifting traffic to the version the alias moves to ...
        assert d.hook_id in functions, name
        hook = functions[d.hook_id]["Properties"]
        env = hook["Environment"]["Variables"]
        assert env["MAAS_HOOK_TARGET_VERSION"] == {"Ref": d.version_id}
        # ... with the model's own smoke checks (from its card) ...
        card = ModelCard.read(artifact_dir(artifacts.root, name, spec.version))
        checks = json.loads(env["MAAS_HOOK_REQUESTS"])
        assert checks == version_checks(name, card)
        assert {c["path"] for c in checks} == {"/health", f"/models/{name}/invoke"}
        # ... long enough to wait for each of them, and allowed to invoke that version and nothing else.
        assert hook["Timeout"] >= len(checks) * functions[d.function_id]["Properties"]["Timeout"]
        statements = _policy_statements(synth, _ref(hook["Role"]) or _getatt(hook["Role"])[0])
        invokes = [s for s in statements if "lambda:InvokeFunction" in json.dumps(s["Action"])]
        assert [s["Resource"] for s in invokes] == [{"Ref": d.version_id}]
        reports = [s for s in statements if s["Action"] == "codedeploy:PutLifecycleEventHookExecutionStatus"]
        assert len(reports) == 1 and d.group_id in json.dumps(reports[0]["Resource"])


# --- 3. alarms reach people ----------------------------------------------------------------------


def test_cloudwatch_may_publish_to_the_alarm_topic_for_this_accounts_alarms(synth):
    (topic_id,) = synth.of_type("AWS::SNS::Topic")
    (policy,) = synth.of_type("AWS::SNS::TopicPolicy").values()
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    allows = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allows) == 1
    (allow,) = allows
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Action"] == "sns:Publish" and allow["Resource"] == {"Ref": topic_id}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    source = json.dumps(allow["Condition"]["ArnLike"]["aws:SourceArn"])
    assert ":cloudwatch:" in source and ":alarm:*" in source
    assert '{"Ref": "AWS::Region"}' in source and '{"Ref": "AWS::AccountId"}' in source


# --- 4. throttles are 429s, limits agree --------------------------------------------------------


def _method_settings(synth) -> dict[tuple[str, str], dict]:
    """(method, path) -> the stage's settings for it; ("*", "/*") is the stage's default."""
    (stage,) = synth.of_type("AWS::ApiGateway::Stage").values()

    def path(resource_path: str) -> str:  # "/~1models~1minilm": the path with "/" escaped as "~1"
        return resource_path if resource_path == "/*" else resource_path[1:].replace("~1", "/")

    return {(m["HttpMethod"], path(m["ResourcePath"])): m for m in stage["Properties"]["MethodSettings"]}


def _budgets(result, api_props) -> dict[str, tuple[int, float]]:
    """(concurrency, rate) each model function can take (by logical id), from the template and the
    manifest alone: its reserved concurrency or an equal share of the unreserved rest, over the mean
    invocation time, and no faster than its endpoint (if any) answers at full scale."""
    functions = {lid: f["Properties"] for lid, f in result.of_type("AWS::Lambda::Function").items()
                 if "MAAS_MODEL_NAME" in _env(f)}
    reserved = {n: p["ReservedConcurrentExecutions"] for n, p in functions.items() if "ReservedConcurrentExecutions" in p}
    unreserved = api_props.lambda_concurrency - sum(reserved.values())
    budgets = {}
    for lid, props in functions.items():
        name = props["Environment"]["Variables"]["MAAS_MODEL_NAME"]
        concurrency = reserved.get(lid) or unreserved // (len(functions) - len(reserved))
        rate = concurrency / api_props.mean_invocation_s
        sagemaker = result.stack.manifest.get(name).sagemaker
        if result.stack.models[name].endpoint is not None:
            rate = min(rate, sagemaker.max_instances * sagemaker.target_invocations_per_instance / 60)
        budgets[lid] = (concurrency, rate)
    return budgets


@pytest.mark.parametrize("which", ["synth", "variant"])
def test_every_route_is_throttled_below_what_its_function_can_take(which, request):
    from infra.model_api import ModelApiProps

    result = request.getfixturevalue(which)
    settings = _method_settings(result)
    stage_default = settings[("*", "/*")]
    assembly = load_assembly(result.outdir)
    bursts, rates, routes = defaultdict(int), defaultdict(float), defaultdict(int)
    for method in assembly.methods:
        # Every method has its own throttle, never above the stage's ...
        own = settings[(method.http_method, method.path)]
        assert 1 <= own["ThrottlingBurstLimit"] <= stage_default["ThrottlingBurstLimit"]
        assert 0 < own["ThrottlingRateLimit"] <= stage_default["ThrottlingRateLimit"]
        bursts[method.function_id] += own["ThrottlingBurstLimit"]
        rates[method.function_id] += own["ThrottlingRateLimit"]
        routes[method.function_id] += 1
    # ... and all the methods one function answers together stay within what that function can take
    # (each method lets at least one request through: a burst of 0 would close it).
    budgets = _budgets(result, ModelApiProps())
    assert sorted(budgets) == sorted(bursts)
    assert sum(c for c, _ in budgets.values()) <= ModelApiProps().lambda_concurrency
    for name, (concurrency, rate) in budgets.items():
        assert bursts[name] <= max(concurrency, routes[name]), name
        assert rates[name] <= rate + 1e-6, name


def test_no_reserved_concurrency_by_default_and_the_opt_in_is_honoured(synth, variant):
    for function in synth.of_type("AWS::Lambda::Function").values():
        assert "ReservedConcurrentExecutions" not in function["Properties"]
    reserved = {lid: f["Properties"]["ReservedConcurrentExecutions"]
                for lid, f in variant.of_type("AWS::Lambda::Function").items()
                if "ReservedConcurrentExecutions" in f["Properties"]}
    # digits' live function and each of its two versions' own functions reserve 5 each
    assert sorted(reserved.values()) == [5, 5, 5] and all(lid.startswith("Digits") for lid in reserved)
    assembly = load_assembly(variant.outdir)
    settings = _method_settings(variant)
    for fid in reserved:
        answered = [settings[(m.http_method, m.path)] for m in assembly.methods
                    if m.function_id == fid and m.path.startswith("/models/digits")]
        assert answered and sum(m["ThrottlingBurstLimit"] for m in answered) <= 5


def test_tracing_service_keeps_lambdas_traces_and_drops_the_handlers_sdk(synth, variant):
    def functions(result):
        return {lid: f["Properties"] for lid, f in result.of_type("AWS::Lambda::Function").items()
                if f["Properties"].get("Environment", {}).get("Variables", {}).get("MAAS_MODEL_NAME")}

    # GIVEN the shipped manifest (the default, tracing = "handler") and the variant (digits: "service")
    for which, result in (("shipped", synth), ("variant", variant)):
        for lid, props in functions(result).items():
            env = props["Environment"]["Variables"]
            service_only = which == "variant" and env["MAAS_MODEL_NAME"] == "digits"
            # THEN every model function is traced by Lambda, and only digits' in the variant (its
            # live function and each kept version's) runs its handler without the X-Ray SDK
            assert props["TracingConfig"] == {"Mode": "Active"}, lid
            assert (env.get("POWERTOOLS_TRACE_DISABLED") == "true") is service_only, (which, lid)
    assert sum(f["Environment"]["Variables"].get("POWERTOOLS_TRACE_DISABLED") == "true"
               for f in functions(variant).values()) == 3


def test_the_gateway_caps_inputs_at_each_models_batch_limit(synth, manifest):
    models = {m["Properties"]["Name"]: m["Properties"]["Schema"] for m in synth.of_type("AWS::ApiGateway::Model").values()}
    by_id = {k: v["Properties"]["Name"] for k, v in synth.of_type("AWS::ApiGateway::Model").items()}
    assembly = load_assembly(synth.outdir)
    methods = {(m["Properties"]["HttpMethod"], mid): m["Properties"] for mid, m in synth.of_type("AWS::ApiGateway::Method").items()}
    checked = 0
    for spec in manifest.models:
        limit = spec.serving.max_batch
        for method in assembly.methods:
            if method.path != f"/models/{spec.name}/invoke":
                continue
            props = next(p for (verb, _), p in methods.items() if verb == "POST" and p.get("RequestModels")
                         and _ref(p["ResourceId"]) == _resource_id(synth, method.path))
            schema = models[by_id[_ref(props["RequestModels"]["application/json"])]]
            # API Gateway validates with JSON Schema draft 4: so does this.
            validator = jsonschema.Draft4Validator(schema)
            sample = version_checks(spec.name, _card(spec))[1]["body"]["inputs"][0]
            assert validator.is_valid({"inputs": [sample] * limit})
            assert not validator.is_valid({"inputs": [sample] * (limit + 1)})
            assert not validator.is_valid({"inputs": []}) and not validator.is_valid({"parameters": {}})
            checked += 1
    assert checked == len(manifest.models)


def _card(spec):
    from infra.app import REPO
    from maas.paths import artifact_dir

    return ModelCard.read(artifact_dir(REPO, spec.name, spec.version))


def _resource_id(synth, path: str) -> str:
    """The logical id of the API resource at `path`."""
    resources = synth.of_type("AWS::ApiGateway::Resource")
    (api_id,) = synth.of_type("AWS::ApiGateway::RestApi")

    def path_of(rid):
        props = resources[rid]["Properties"]
        parent = props["ParentId"]
        prefix = "" if _getatt(parent) and _getatt(parent)[0] == api_id else path_of(_ref(parent))
        return f"{prefix}/{props['PathPart']}"

    return next(rid for rid in resources if path_of(rid) == path)


def test_the_body_limit_is_one_both_the_function_and_lambda_accept(synth):
    from maas.local_api import LocalApi, Route
    from maas_api.constants import MAX_BODY_BYTES

    # The largest body the API takes, in the event API Gateway would send: under Lambda's limit.
    body = b'{"inputs": ["' + b"a" * (MAX_BODY_BYTES - 16) + b'"]}'
    assert len(body) <= MAX_BODY_BYTES
    api = LocalApi([])
    headers = [("Host", "abc123.execute-api.eu-west-1.amazonaws.com"), ("Content-Type", "application/json"),
               ("User-Agent", "x" * 512), ("x-api-key", "k" * 40), ("X-Forwarded-For", "203.0.113.7")]
    route = Route("POST", "/models/{name}/invoke", target=None)
    event = api.event("POST", route, "/models/minilm/invoke", "", headers, body, {"name": "minilm"}, "rid", "203.0.113.7")
    assert len(json.dumps(event).encode()) < LAMBDA_EVENT_LIMIT
    # A larger one is answered by API Gateway with the API's JSON envelope (413).
    responses = {r["Properties"]["ResponseType"]: r["Properties"] for r in synth.of_type("AWS::ApiGateway::GatewayResponse").values()}
    too_large = responses["REQUEST_TOO_LARGE"]
    assert too_large["StatusCode"] == "413"
    assert '"payload_too_large"' in too_large["ResponseTemplates"]["application/json"]
    assert responses["THROTTLED"]["ResponseParameters"] == {"gatewayresponse.header.Retry-After": "'1'"}


# --- 5/6. no account-wide side effects; a name of its own ----------------------------------------


def test_no_account_level_logging_role_unless_asked_and_then_kept(synth, synthesizer, artifacts, tmp_path):
    assert not synth.of_type("AWS::ApiGateway::Account")
    assert "AmazonAPIGatewayPushToCloudWatchLogs" not in json.dumps(synth.of_type("AWS::IAM::Role"))
    # Asked for (a region where nothing set it yet), in a second stack of the same region:
    other = synthesizer(tmp_path / "out", {"maas:apiGatewayCloudWatchRole": "true", "maas:stackName": "MaasStaging"})
    (account,) = other.of_type("AWS::ApiGateway::Account").values()
    role_id = _getatt(account["Properties"]["CloudWatchRoleArn"])[0]
    role = other.resources[role_id]
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in json.dumps(role["Properties"]["ManagedPolicyArns"])
    # Deleting the stack must not take logging away from every other API of the region.
    assert role["DeletionPolicy"] == "Retain" and role["UpdateReplacePolicy"] == "Retain"
    assert account["DeletionPolicy"] == "Retain"
    # Two stacks, two API names, and each stack's alarms watch its own.
    for result, stack_name in ((synth, "Maas"), (other, "MaasStaging")):
        (api,) = result.of_type("AWS::ApiGateway::RestApi").values()
        assert api["Properties"]["Name"] == f"{stack_name}-api"
        api_alarms = [a["Properties"] for a in result.of_type("AWS::CloudWatch::Alarm").values()
                      if a["Properties"].get("Namespace") == "AWS/ApiGateway"]
        assert api_alarms
        for alarm in api_alarms:
            dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
            assert dims["ApiName"] == f"{stack_name}-api"


# --- 7. data stays where it should ------------------------------------------------------------


def test_the_sagemaker_proxy_outlasts_its_client(synth, manifest):
    from botocore.retries.standard import ExponentialBackoff

    from infra.model_function import MAX_TIMEOUT_S, PROXY_TIMEOUT_MARGIN_S

    # The worst case botocore can take: each attempt's timeouts, and before each retry the longest
    # wait its standard mode makes (a throttle, with the service's x-amz-retry-after at its maximum).
    backoff = ExponentialBackoff(random=lambda: 1.0)
    waits = []
    for attempt in range(1, SAGEMAKER_MAX_ATTEMPTS):
        context = SimpleNamespace(attempt_number=attempt, http_response=SimpleNamespace(headers={"x-amz-retry-after": "600000"}))
        backoff._throttling_detector = SimpleNamespace(is_throttling_error_from_context=lambda ctx: True)
        waits.append(backoff.delay_amount(context))
    worst = SAGEMAKER_MAX_ATTEMPTS * (SAGEMAKER_CONNECT_TIMEOUT_S + SAGEMAKER_READ_TIMEOUT_S) + sum(waits)
    assert SAGEMAKER_WORST_CASE_S >= worst
    # A read timeout is sent again once at most.
    assert SAGEMAKER_MAX_ATTEMPTS <= 2
    heavy = [s.name for s in manifest.models if s.target == "sagemaker"]
    for function in synth.of_type("AWS::Lambda::Function").values():
        if _env(function).get("MAAS_MODEL_NAME") in heavy:
            timeout = function["Properties"]["Timeout"]
            assert SAGEMAKER_WORST_CASE_S + PROXY_TIMEOUT_MARGIN_S <= timeout <= MAX_TIMEOUT_S


def test_the_sagemaker_model_runs_without_network(synth):
    models = synth.of_type("AWS::SageMaker::Model")
    assert models
    for model_id, model in models.items():
        assert model["Properties"].get("EnableNetworkIsolation") is True, model_id


# The variables a gateway response may use unescaped: values API Gateway generates itself.
_GENERATED = {"context.requestId": "c0ffee00-1234-4abc-9def-0123456789ab", "context.error.responseType": "BAD_REQUEST_BODY"}
# Documented as already-quoted JSON strings: substituted as such.
_QUOTED = ("context.error.messageString",)
_HOSTILE = 'a "quoted" \\ back\\slash,\nnew line, } brace, $dollar, \u00e9\u4e2d \U0001f600 \' apostrophe'


def _render(template: str, value: str) -> str:
    """API Gateway's substitution in a gateway response template: plain `$context.x.y` variables, no VTL."""
    def sub(match):
        name = match.group(1)
        if name in _QUOTED:
            return json.dumps(value)
        if name in _GENERATED:
            return _GENERATED[name]
        return value  # anything else may carry what the client sent: the hostile value, raw

    return re.sub(r"\$(context(?:\.[A-Za-z0-9_]+)+)", sub, template)


def test_every_gateway_response_is_json_whatever_the_client_sends(synth):
    responses = synth.of_type("AWS::ApiGateway::GatewayResponse")
    assert {r["Properties"]["ResponseType"] for r in responses.values()} >= {
        "BAD_REQUEST_BODY", "MISSING_AUTHENTICATION_TOKEN", "INVALID_API_KEY", "THROTTLED", "REQUEST_TOO_LARGE",
        "QUOTA_EXCEEDED", "DEFAULT_4XX", "DEFAULT_5XX"}
    for rid, response in responses.items():
        template = response["Properties"]["ResponseTemplates"]["application/json"]
        assert "$util" not in template and "#" not in template, rid  # not VTL: nothing would process it
        body = json.loads(_render(template, _HOSTILE))
        assert set(body["error"]) == {"code", "message"} and body["request_id"] == _GENERATED["context.requestId"]
        status = response["Properties"].get("StatusCode")
        assert body["message"] == _HOSTILE  # API Gateway's own message, as it quoted it
        if response["Properties"]["ResponseType"] == "BAD_REQUEST_BODY":
            assert status == "422" and body["error"]["code"] == "validation_error"
            assert "max_batch" in body["error"]["message"] and "/openapi.json" in body["error"]["message"]
    # A message with quotes and brackets, like the validator's for a body that misses `inputs`.
    (bad_body,) = [r for r in responses.values() if r["Properties"]["ResponseType"] == "BAD_REQUEST_BODY"]
    message = '[object has missing required properties (["inputs"])]'
    rendered = json.loads(_render(bad_body["Properties"]["ResponseTemplates"]["application/json"], message))
    assert rendered["message"] == message


# --- 8. no region baked in --------------------------------------------------------------------


def test_synth_names_no_region_or_account(synth):
    # Regions and accounts appear in one place only: the Triton image's region -> ECR account table,
    # which CloudFormation reads with the deploying region (Fn::FindInMap).
    template = dict(synth.template)
    mappings = template.pop("Mappings", {})
    assert all("TritonImageAccount" in name for name in mappings)
    text = json.dumps(template)
    assert not REGION.findall(text)
    assert not re.findall(r"\b\d{12}\b", text)


def test_the_cli_default_region_is_ignored_and_context_pins_one(artifacts, monkeypatch, tmp_path):
    from aws_cdk import Token

    from infra.app import create_app

    # What the CDK CLI sets for the app when no AWS configuration names a region.
    monkeypatch.setenv("CDK_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "123456789012")
    _, stack = create_app(outdir=str(tmp_path / "a"))
    assert Token.is_unresolved(stack.region) and Token.is_unresolved(stack.account)
    _, pinned = create_app(context={"maas:region": "eu-west-1", "maas:account": "210987654321"}, outdir=str(tmp_path / "b"))
    assert (pinned.region, pinned.account) == ("eu-west-1", "210987654321")
