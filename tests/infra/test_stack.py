"""The synthesized template of the shipped manifest: functions, endpoints, API, IAM, deployments."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match, Template

from maas.template_api import load_assembly
from maas_api.routes import EXPLAIN_TASKS

ALLOWED_STAR_ACTIONS = {
    # AWS accepts no resource ARN for these (see the reasons in infra/).
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
}


def _model_name(function: dict) -> str | None:
    return function["Properties"].get("Environment", {}).get("Variables", {}).get("MAAS_MODEL_NAME")


def _as_list(value):
    return value if isinstance(value, list) else [value]


def test_one_function_per_light_model_and_a_proxy_per_heavy_model(synth, manifest):
    from infra.stack import logical_name

    # GIVEN the shipped manifest, WHEN synthesized
    served = [(lid, f) for lid, f in synth.of_type("AWS::Lambda::Function").items() if _model_name(f)]
    functions = {_model_name(f): f for lid, f in served
                 if lid.startswith(logical_name(_model_name(f)) + "Function")}
    # THEN every model has its live function: its own (light) or the SageMaker proxy (heavy), one
    # more per kept version of a model keeping several, and beside each only its canary's pre-traffic hook
    assert sorted(functions) == sorted(s.name for s in manifest.models)
    expected = sum(1 + (len(s.versions) if s.side_by_side else 0) for s in manifest.models)
    assert len(served) == expected
    hooks = [f for f in synth.of_type("AWS::Lambda::Function").values() if "MAAS_HOOK_TARGET_VERSION" in json.dumps(f)]
    assert len(hooks) == expected
    assert len(synth.of_type("AWS::Lambda::Function")) == 2 * expected
    for spec in manifest.models:
        props = functions[spec.name]["Properties"]
        env = props["Environment"]["Variables"]
        assert props["Runtime"] == "python3.12"
        assert props["Handler"] == "app.lambda_handler"
        assert env["MAAS_CATALOG_PATH"] == "catalog.json"
        assert env["POWERTOOLS_SERVICE_NAME"] == f"maas-{spec.name}"
        assert props["TracingConfig"] == {"Mode": "Active"}
        if spec.target == "lambda":
            lam = spec.lambda_settings
            assert props["Architectures"] == [lam.architecture]
            assert props["MemorySize"] == lam.memory_mb and props["Timeout"] == lam.timeout_s
            assert props.get("ReservedConcurrentExecutions") == lam.reserved_concurrency
            assert env["MAAS_MODEL_DIR"] == "model" and "MAAS_SAGEMAKER_ENDPOINT" not in env
            assert len(props["Layers"]) == 2
        else:
            # the proxy: the artifact without its graph (card, tokenizer, served metadata) packaged, the task run here
            assert env["MAAS_MODEL_DIR"] == "model" and "MAAS_MODEL_S3_URI" not in env
            assert set(env["MAAS_SAGEMAKER_ENDPOINT"]["Fn::GetAtt"][1:]) == {"EndpointName"}
            assert len(props["Layers"]) == 2  # the task runs here (maas_runtime) and answers through maas_api


def test_heavy_models_get_a_gpu_endpoint_with_autoscaling(synth, manifest):
    heavy = [s for s in manifest.models if s.target == "sagemaker"]
    assert heavy, "the shipped manifest must keep a heavy model so this path is always tested"
    template = Template.from_json(synth.template)
    template.resource_count_is("AWS::SageMaker::Endpoint", len(heavy))
    template.resource_count_is("AWS::SageMaker::Model", len(heavy))
    for spec in heavy:
        sm = spec.sagemaker
        template.has_resource_properties("AWS::SageMaker::EndpointConfig", {
            "ProductionVariants": [Match.object_like({"InstanceType": sm.instance_type, "InitialInstanceCount": sm.min_instances})],
        })
        template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
            "MinCapacity": sm.min_instances, "MaxCapacity": sm.max_instances,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "ServiceNamespace": "sagemaker",
        })
        template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": Match.object_like({
                "TargetValue": sm.target_invocations_per_instance,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            }),
        })
        template.has_resource_properties("AWS::SageMaker::EndpointConfig", {
            "ProductionVariants": [Match.object_like({"InferenceAmiVersion": "al2023-ami-sagemaker-inference-gpu-4-1"})],
        })
    model = next(iter(synth.of_type("AWS::SageMaker::Model").values()))["Properties"]
    assert ".gz" in json.dumps(model["PrimaryContainer"]["ModelDataUrl"])
    assert "/sagemaker-tritonserver:" in json.dumps(model["PrimaryContainer"]["Image"])  # AWS's image: nothing to push


def test_the_proxy_packages_the_artifact_without_its_graph(synth, manifest):
    from maas.paths import artifact_dir
    from maas_runtime import ModelCard, verify_artifact
    from maas_runtime.kserve import METADATA_FILE

    assembly = load_assembly(synth.outdir)
    for spec in (s for s in manifest.models if s.target == "sagemaker"):
        (function,) = [f for f in assembly.functions.values() if f.environment.get("MAAS_MODEL_NAME") == spec.name]
        packaged = function.asset / "model"
        card = ModelCard.read(packaged)
        assert card == ModelCard.read(artifact_dir(manifest.root, spec.name, spec.version))
        assert not (packaged / card.model_file).exists() and (packaged / METADATA_FILE).is_file()
        verify_artifact(packaged, card, [n for n in card.files if n != card.model_file])


def test_iam_is_least_privilege(synth):
    statements = []
    for lid, policy in synth.of_type("AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            statements.append((lid, statement))
    assert statements
    for lid, statement in statements:
        actions = _as_list(statement["Action"])
        resources = _as_list(statement.get("Resource", []))
        assert statement["Effect"] == "Allow"
        assert not any(a == "*" or a.endswith(":*") for a in actions), (lid, actions)
        if "*" in resources:
            assert set(actions) <= ALLOWED_STAR_ACTIONS, (lid, actions)
    # The proxy may invoke its own endpoint and nothing else.
    endpoint_ids = list(synth.of_type("AWS::SageMaker::Endpoint"))
    invokes = [s for _, s in statements if "sagemaker:InvokeEndpoint" in _as_list(s["Action"])]
    assert len(invokes) == len(endpoint_ids)
    assert sorted(s["Resource"]["Ref"] for s in invokes) == sorted(endpoint_ids)
    # Function roles do not carry the AWS-managed basic execution policy (logs on every group).
    for role in synth.of_type("AWS::IAM::Role").values():
        principal = json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
        if "lambda.amazonaws.com" in principal:
            assert "ManagedPolicyArns" not in role["Properties"]


def test_every_route_reaches_the_right_function(synth, manifest):
    assembly = load_assembly(synth.outdir)
    names = {fid: f.environment.get("MAAS_MODEL_NAME") for fid, f in assembly.functions.items()}
    routes = {(m.http_method, m.path): names[m.function_id] for m in assembly.methods}
    default = next(s.name for s in manifest.models if s.target == "lambda" and s.task == "embedding")
    expected = {
        ("GET", "/models"): default, ("GET", "/health"): default,
        ("GET", "/openapi.json"): default, ("POST", "/v1/embeddings"): default,
    }
    for spec in manifest.models:
        for prefix in (f"/models/{spec.name}", *(f"/models/{spec.name}/versions/{v}" for v in spec.versions)):
            expected[("GET", prefix)] = spec.name
            expected[("POST", f"{prefix}/invoke")] = spec.name
            if spec.task == "embedding":
                expected[("POST", f"{prefix}/v1/embeddings")] = spec.name
            if spec.task in EXPLAIN_TASKS:
                expected[("POST", f"{prefix}/explain")] = spec.name
    assert routes == expected
    # A model keeping several versions: each version's routes reach a function of their own, which
    # packages that version's artifact (its card says so), never the live function.
    answering = {(m.http_method, m.path): m.function_id for m in assembly.methods}
    side_by_side = [s for s in manifest.models if s.side_by_side]
    assert side_by_side, "the shipped manifest keeps two versions of digits"
    for spec in side_by_side:
        live = answering[("POST", f"/models/{spec.name}/invoke")]
        pinned = {v: answering[("POST", f"/models/{spec.name}/versions/{v}/invoke")] for v in spec.versions}
        assert live not in pinned.values() and len(set(pinned.values())) == len(spec.versions)
        for version, fid in pinned.items():
            card = json.loads((assembly.functions[fid].asset / "model" / "card.json").read_text())
            assert (card["name"], card["version"]) == (spec.name, version)
    # Integrations call the `live` alias (so CodeDeploy's traffic shifting applies), never $LATEST.
    aliases = set(synth.of_type("AWS::Lambda::Alias"))
    for method in synth.of_type("AWS::ApiGateway::Method").values():
        refs = [r["Ref"] for r in json.loads(json.dumps(method["Properties"]["Integration"]["Uri"]))["Fn::Join"][1] if isinstance(r, dict) and "Ref" in r]
        assert set(refs) & aliases, method["Properties"]["Integration"]["Uri"]


def test_api_has_keys_usage_plan_validation_logs_and_tracing(synth):
    template = Template.from_json(synth.template)
    template.has_resource_properties("AWS::ApiGateway::UsagePlan", {
        "Throttle": {"RateLimit": Match.any_value(), "BurstLimit": Match.any_value()},
        "Quota": {"Limit": Match.any_value(), "Period": "DAY"},
        "ApiStages": Match.any_value(),
    })
    template.resource_count_is("AWS::ApiGateway::ApiKey", 1)
    template.resource_count_is("AWS::ApiGateway::UsagePlanKey", 1)
    template.has_resource_properties("AWS::ApiGateway::Stage", {
        "StageName": "prod", "TracingEnabled": True,
        "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
        "MethodSettings": Match.array_with([Match.object_like({"ThrottlingRateLimit": Match.any_value(), "DataTraceEnabled": False})]),
    })
    methods = synth.of_type("AWS::ApiGateway::Method").values()
    assert all(m["Properties"]["ApiKeyRequired"] for m in methods)
    posts = [m["Properties"] for m in methods if m["Properties"]["HttpMethod"] == "POST"]
    assert posts and all("RequestValidatorId" in p and "application/json" in p["RequestModels"] for p in posts)
    schemas = {m["Properties"]["Name"]: m["Properties"]["Schema"] for m in synth.of_type("AWS::ApiGateway::Model").values()}
    invoke_schemas = {k: v for k, v in schemas.items() if k.startswith("InvokeRequest")}
    assert invoke_schemas and all(v["required"] == ["inputs"] for v in invoke_schemas.values())
    assert all("input" in v["required"] for k, v in schemas.items() if k.startswith("EmbeddingsRequest"))
    for group in synth.of_type("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] > 0


def test_alias_live_and_canary_deployment_with_rollback_alarm(synth, manifest):
    functions = sum(1 + (len(s.versions) if s.side_by_side else 0) for s in manifest.models)
    aliases = synth.of_type("AWS::Lambda::Alias")
    assert len(aliases) == functions
    assert all(a["Properties"]["Name"] == "live" for a in aliases.values())
    groups = synth.of_type("AWS::CodeDeploy::DeploymentGroup")
    assert len(groups) == functions
    for group in groups.values():
        props = group["Properties"]
        assert "Canary10Percent5Minutes" in json.dumps(props["DeploymentConfigName"])
        assert props["AlarmConfiguration"]["Enabled"] is True and props["AlarmConfiguration"]["Alarms"]
        assert "DEPLOYMENT_STOP_ON_ALARM" in props["AutoRollbackConfiguration"]["Events"]


def test_alarms_dashboards_and_outputs_per_model(synth, manifest):
    template = Template.from_json(synth.template)
    template.resource_count_is("AWS::CloudWatch::Dashboard", len(manifest.models))
    alarms = [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()]
    for spec in manifest.models:
        mine = {a.get("MetricName") for a in alarms if a["AlarmDescription"].startswith(f"{spec.name}:")}
        assert {"5XXError", "Latency", "Throttles", "Errors"} <= mine
    outputs = synth.template["Outputs"]
    assert {"ApiUrl", "ApiKeyId"} <= set(outputs)
    routes = [json.dumps(o["Value"]) for k, o in outputs.items() if k.endswith("Route")]
    for spec in manifest.models:
        assert any(f"/models/{spec.name}/invoke" in r for r in routes)


def test_every_alarm_notifies_an_encrypted_topic_that_cloudwatch_can_use(synth):
    # GIVEN the synthesized stack
    (topic_id, topic), = synth.of_type("AWS::SNS::Topic").items()
    (key_id, key), = synth.of_type("AWS::KMS::Key").items()
    # THEN the topic is encrypted with the customer-managed key, which rotates
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    # AND CloudWatch (and only it, besides the account) may use that key
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s["Principal"].get("Service") == "cloudwatch.amazonaws.com"]
    assert len(cloudwatch) == 1 and set(cloudwatch[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    # AND the topic refuses plain HTTP publishers
    (policy,) = synth.of_type("AWS::SNS::TopicPolicy").values()
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in policy["Properties"]["PolicyDocument"]["Statement"])
    # AND every alarm notifies it
    alarms = synth.of_type("AWS::CloudWatch::Alarm")
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["Properties"].get("AlarmActions") == [{"Ref": topic_id}], name
    assert "AlarmTopicArn" in synth.template["Outputs"]


def test_cdk_nag_passes_with_reasons(synth):
    # A violation would have failed the synth; acknowledgements all carry a reason (infra/nag.py refuses empty ones).
    report = synth.outdir / "validation-report.json"
    if report.exists():
        data = json.loads(report.read_text())
        # (The report also lists construct annotations, e.g. warnings; only cdk-nag's rules count here.)
        violations = [v for p in data["pluginReports"] if p["pluginName"] == "AwsSolutions" for v in p["violations"]]
        assert violations == []


def test_synth_refuses_unbuilt_models(tmp_path, artifacts):
    from infra.app import create_app
    from infra.staging import NotBuiltError

    manifest_text = (artifacts.root / "models.toml").read_text()
    (tmp_path / "models.toml").write_text(manifest_text)
    with pytest.raises(NotBuiltError, match=r"models not built: minilm 1\.0\.0.*maas build"):
        create_app(context={"maas:manifest": str(tmp_path / "models.toml")}, outdir=str(tmp_path / "out"))


def test_manifest_changes_need_no_code_change(variant):
    """Moving minilm to SageMaker and digits to an x86_64 function with its artifact in S3."""
    from infra.stack import logical_name

    result = variant
    functions = {_model_name(f): f["Properties"] for lid, f in result.of_type("AWS::Lambda::Function").items()
                 if _model_name(f) and lid.startswith(logical_name(_model_name(f)) + "Function")}
    assert len(result.of_type("AWS::SageMaker::Endpoint")) == 2
    assert "MAAS_SAGEMAKER_ENDPOINT" in functions["minilm"]["Environment"]["Variables"]
    # minilm-gpu scales to zero: an inference component, whose name its proxy is given (cdk-nag passed on it too)
    (component_id,) = result.of_type("AWS::SageMaker::InferenceComponent")
    assert component_id in json.dumps(functions["minilm-gpu"]["Environment"]["Variables"]["MAAS_SAGEMAKER_INFERENCE_COMPONENT"])
    assert "MAAS_SAGEMAKER_INFERENCE_COMPONENT" not in functions["minilm"]["Environment"]["Variables"]
    digits = functions["digits"]
    assert digits["Architectures"] == ["x86_64"]
    assert "MAAS_MODEL_S3_URI" in digits["Environment"]["Variables"]
    # The artifact bucket: encrypted (SSE-KMS: test_artifact_encryption.py), versioned, private, TLS only, access-logged.
    template = Template.from_json(result.template)
    template.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [Match.object_like({"ServerSideEncryptionByDefault": Match.object_like({"SSEAlgorithm": "aws:kms"})})]},
        "VersioningConfiguration": {"Status": "Enabled"},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "LoggingConfiguration": Match.any_value(),
    })
    policies = [p["Properties"]["PolicyDocument"] for p in result.of_type("AWS::S3::BucketPolicy").values()]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for p in policies for s in p["Statement"])
    # digits' roles read their own prefix only: the live function's and version 1.0.0's own function's.
    reads = [s for p in result.of_type("AWS::IAM::Policy").values() for s in p["Properties"]["PolicyDocument"]["Statement"]
             if "s3:GetObject" in _as_list(s["Action"]) and "models/digits/1.0.0/*" in json.dumps(s["Resource"])]
    assert len(reads) == 2 and all(_as_list(r["Action"]) == ["s3:GetObject"] for r in reads)
