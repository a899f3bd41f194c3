"""Tenants in the template: one API key and one usage plan per tenant (the key's value generated
by API Gateway, never in the template or its outputs), each function told every tenant's key id
and which tenants may call it; `maas usage` from CloudWatch (moto) sums the functions' metrics."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone



def test_one_key_and_usage_plan_per_tenant(variant):
    keys = variant.of_type("AWS::ApiGateway::ApiKey")
    plans = {p["Properties"]["UsagePlanName"].rsplit("-", 1)[-1]: p["Properties"]
             for p in variant.of_type("AWS::ApiGateway::UsagePlan").values()}
    assert len(keys) == 2 and sorted(plans) == ["acme", "globex"]
    # no key value anywhere: API Gateway generates it
    assert all("Value" not in k["Properties"] and k["Properties"]["Enabled"] for k in keys.values())
    assert plans["acme"]["Throttle"] == {"RateLimit": 20, "BurstLimit": 40}
    assert plans["acme"]["Quota"] == {"Limit": 100000, "Period": "DAY"}
    assert plans["globex"]["Throttle"] == {"RateLimit": 5, "BurstLimit": 10}
    assert plans["globex"]["Quota"] == {"Limit": 1000, "Period": "MONTH"}
    # each plan holds its tenant's key, on the prod stage
    plan_keys = variant.of_type("AWS::ApiGateway::UsagePlanKey")
    assert len(plan_keys) == 2 and {k["Properties"]["KeyId"]["Ref"] for k in plan_keys.values()} == set(keys)
    # the outputs give each key's id (a Ref), never a value
    outputs = variant.template["Outputs"]
    tenant_outputs = {k: v for k, v in outputs.items() if k.startswith("TenantKeyId")}
    assert sorted(tenant_outputs) == ["TenantKeyIdAcme", "TenantKeyIdGlobex"]
    assert {v["Value"]["Ref"] for v in tenant_outputs.values()} == set(keys)
    assert "get-api-key --include-value" in tenant_outputs["TenantKeyIdAcme"]["Description"]
    assert "ApiKeyId" not in outputs  # no shared key beside the tenants'


def test_each_function_knows_the_tenants_and_who_may_call_it(variant):
    keys = {k["Properties"]["Name"].rsplit("-", 1)[-1]: lid for lid, k in variant.of_type("AWS::ApiGateway::ApiKey").items()}
    served = [f["Properties"]["Environment"]["Variables"] for f in variant.of_type("AWS::Lambda::Function").values()
              if "MAAS_MODEL_NAME" in f["Properties"].get("Environment", {}).get("Variables", {})]
    assert served
    for env in served:
        allowed = {"digits": "acme,globex"}.get(env["MAAS_MODEL_NAME"], "acme")
        assert env["MAAS_ALLOWED_TENANTS"] == allowed, env["MAAS_MODEL_NAME"]
        pairs = env["MAAS_TENANT_KEY_IDS"]["Fn::Join"]
        assert pairs[0] == ","
        assert [p["Fn::Join"] for p in pairs[1]] == [["=", ["acme", {"Ref": keys["acme"]}]],
                                                    ["=", ["globex", {"Ref": keys["globex"]}]]]


def test_maas_usage_sums_the_functions_tenant_metrics_from_cloudwatch(manifest, tmp_path):
    """GIVEN the metrics two functions recorded (moto's CloudWatch), WHEN `maas usage` asks, THEN
    each tenant's requests, inputs and tokens per model come back, one tenant with --tenant."""
    import boto3
    from moto import mock_aws

    from maas.manifest import parse_manifest
    from maas.usage import cloudwatch_usage

    text = (manifest.root / "models.toml").read_text() + '\n[tenants.acme]\nmodels = ["*"]\n[tenants.globex]\nmodels = ["minilm"]\n'
    tenanted = parse_manifest(text, manifest.root / "models.toml")
    now = datetime.now(timezone.utc)
    with mock_aws():
        client = boto3.client("cloudwatch", region_name="us-east-1")
        recorded = [("acme", "digits", 1, 4, 0), ("acme", "digits", 1, 2, 0), ("acme", "minilm", 1, 3, 41),
                    ("globex", "minilm", 1, 1, 9), ("globex", "minilm", 1, 2, 17)]
        for tenant, model, requests, inputs, tokens in recorded:
            dims = [{"Name": "service", "Value": f"maas-{model}"}, {"Name": "model", "Value": model},
                    {"Name": "tenant", "Value": tenant}]
            client.put_metric_data(Namespace="Maas", MetricData=[
                {"MetricName": name, "Dimensions": dims, "Value": value, "Unit": "Count", "Timestamp": now - timedelta(hours=1)}
                for name, value in (("requests", requests), ("inputs", inputs), ("input_tokens", tokens))])
        rows = cloudwatch_usage(tenanted, None, now - timedelta(days=1), client=client, now=now)
        only = cloudwatch_usage(tenanted, "globex", now - timedelta(days=1), client=client, now=now)
        old = cloudwatch_usage(tenanted, None, now - timedelta(days=30), client=client, now=now - timedelta(days=2))
    table = {(r.tenant, r.model): (r.requests, r.inputs, r.input_tokens) for r in rows}
    assert table == {("acme", "digits"): (2, 6, 0), ("acme", "minilm"): (1, 3, 41), ("globex", "minilm"): (2, 3, 26)}
    assert [(r.tenant, r.model) for r in only] == [("globex", "minilm")]
    assert old == []  # nothing was recorded before the window's end
