"""HeavyModelEndpoint's template: AWS's Triton image per region, model data, rights, and scale to zero."""

from __future__ import annotations

import gzip
import json

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from infra import triton_image
from infra.heavy_model_endpoint import HeavyModelEndpoint, HeavyModelEndpointProps
from infra.staging import StagedAsset
from maas.manifest import SageMakerSettings

ACCOUNT = "111111111111"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A stand-in for model.tar.gz: the construct only uploads the file (its content is tested elsewhere)."""
    path = tmp_path_factory.mktemp("archive") / "model.tar.gz"
    path.write_bytes(gzip.compress(b"minilm-gpu/config.pbtxt", mtime=0))
    return StagedAsset(path, "0123456789abcdef0123")


def synth(archive, region: str | None = None, context: dict | None = None, **settings):
    app = cdk.App(context=context or {})
    env = cdk.Environment(account=ACCOUNT, region=region) if region else None
    stack = cdk.Stack(app, "Heavy", env=env)
    endpoint = HeavyModelEndpoint(stack, "MinilmGpu", HeavyModelEndpointProps(
        model_name="minilm-gpu", version="1.0.0", archive=archive, settings=SageMakerSettings(**settings),
    ))
    proxy_role = iam.Role(stack, "ProxyRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    endpoint.grant_invoke(proxy_role)
    return Template.from_stack(stack), stack, endpoint


def resolve(stack: cdk.Stack, value) -> str:
    return json.dumps(stack.resolve(value))


def only(template: Template, kind: str) -> dict:
    (resource,) = template.find_resources(kind).values()
    return resource["Properties"]


def statements(template: Template) -> list[dict]:
    return [s for p in template.find_resources("AWS::IAM::Policy").values() for s in p["Properties"]["PolicyDocument"]["Statement"]]


@pytest.mark.parametrize(("region", "account"), [
    ("us-east-1", "763104351884"),
    ("eu-west-1", "763104351884"),
    ("af-south-1", "626614931356"),
    ("il-central-1", "780543022126"),
    ("ap-east-1", "871362719292"),
])
def test_the_image_is_awss_triton_of_the_stacks_region(archive, region, account):
    # GIVEN a stack deployed to a concrete region, WHEN synthesized
    template, stack, endpoint = synth(archive, region)
    # THEN the model runs the pinned Triton image from that region's ECR account, nothing to push
    image = json.dumps(only(template, "AWS::SageMaker::Model")["PrimaryContainer"]["Image"])
    assert account in image and f"/sagemaker-tritonserver:{triton_image.TRITON_VERSION}-py3" in image
    assert "dkr.ecr." in image and "AWS::URLSuffix" in image
    # and its role may pull from that one repository
    pulls = [s for s in statements(template) if "ecr:BatchGetImage" in s["Action"]]
    assert len(pulls) == 1
    assert f":{account}:repository/sagemaker-tritonserver" in json.dumps(pulls[0]["Resource"])
    assert not template.find_mappings("*")


def test_an_environment_agnostic_stack_maps_every_published_region(archive):
    template, stack, _ = synth(archive)
    (mapping,) = template.find_mappings("*").values()
    published = triton_image.load()["registries"]
    assert {region: row["account"] for region, row in mapping.items()} == published
    assert len(published) >= 30 and published["af-south-1"] == "626614931356"
    image = json.dumps(only(template, "AWS::SageMaker::Model")["PrimaryContainer"]["Image"])
    assert '"Fn::FindInMap"' in image and '"Ref": "AWS::Region"' in image
    pulls = [s for s in statements(template) if "ecr:BatchGetImage" in s["Action"]]
    assert '"Fn::FindInMap"' in json.dumps(pulls[0]["Resource"])


@pytest.mark.parametrize("region", ["cn-north-1", "us-isof-east-1"])
def test_a_region_without_the_image_stops_synth_with_a_clear_message(archive, region):
    with pytest.raises(triton_image.ImageNotPublished, match=rf"no sagemaker-tritonserver:26\.05-py3 image in {region}.*sagemaker\.image_uri"):
        synth(archive, region)


def test_the_model_runs_tritons_repository_isolated(archive):
    template, stack, endpoint = synth(archive, "us-east-1")
    model = only(template, "AWS::SageMaker::Model")
    assert model["EnableNetworkIsolation"] is True
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": "minilm-gpu", "SAGEMAKER_TRITON_LOG_VERBOSE": "0",
    }
    # The model data is the archive's asset, and the role may read that one object (not the staging bucket).
    key = endpoint.model_data.s3_object_key
    assert model["PrimaryContainer"]["ModelDataUrl"] == stack.resolve(endpoint.model_data.s3_object_url)
    assert key.endswith(".gz")
    reads = [s for s in statements(template) if "s3:GetObject" in s["Action"]]
    assert len(reads) == 1 and reads[0]["Action"] == "s3:GetObject"
    resource = resolve(stack, reads[0]["Resource"])
    assert resource.endswith(f'/{key}"]]}}') and "*" not in resource
    for statement in statements(template):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert not any(a.endswith(":*") or a == "*" for a in actions)
        if statement["Resource"] == "*":
            assert set(actions) <= {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}


def test_instances_endpoint_uses_the_gpu_drivers_ami_and_variant_scaling(archive):
    template, stack, endpoint = synth(archive, "us-east-1", min_instances=1, max_instances=3, target_invocations_per_instance=400)
    (variant,) = only(template, "AWS::SageMaker::EndpointConfig")["ProductionVariants"]
    assert variant["InferenceAmiVersion"] == triton_image.INFERENCE_AMI_VERSION == "al2023-ami-sagemaker-inference-gpu-4-1"
    assert variant["InstanceType"] == "ml.g5.xlarge" and variant["InitialInstanceCount"] == 1 and "ModelName" in variant
    template.resource_count_is("AWS::SageMaker::InferenceComponent", 0)
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "MinCapacity": 1, "MaxCapacity": 3, "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    })
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({
            "TargetValue": 400, "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        }),
    })
    invokes = [s for s in statements(template) if s["Action"] == "sagemaker:InvokeEndpoint"]
    assert len(invokes) == 1 and invokes[0]["Resource"] == {"Ref": stack.get_logical_id(endpoint.endpoint)}


def test_min_instances_zero_is_an_inference_component_that_scales_to_and_from_zero(archive):
    # GIVEN sagemaker.min_instances = 0
    template, stack, endpoint = synth(archive, "us-east-1", min_instances=0, max_instances=3, target_invocations_per_instance=300)
    component_id = stack.get_logical_id(endpoint.component)
    # THEN the variant hosts inference components and its instances may scale to 0
    config = only(template, "AWS::SageMaker::EndpointConfig")
    (variant,) = config["ProductionVariants"]
    assert "ModelName" not in variant and "ExecutionRoleArn" in config
    assert variant["ManagedInstanceScaling"] == {"Status": "ENABLED", "MinInstanceCount": 0, "MaxInstanceCount": 3}
    assert variant["RoutingConfig"] == {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}
    assert variant["InferenceAmiVersion"] == triton_image.INFERENCE_AMI_VERSION
    # the model is one inference component: one GPU per copy, one copy at creation (SageMaker refuses 0)
    component = only(template, "AWS::SageMaker::InferenceComponent")
    assert component["RuntimeConfig"] == {"CopyCount": 1}
    assert component["Specification"]["ComputeResourceRequirements"] == {
        "NumberOfAcceleratorDevicesRequired": 1, "NumberOfCpuCoresRequired": 1, "MinMemoryRequiredInMb": 1024,
    }
    assert "ModelName" in component["Specification"] and component["Specification"]["StartupParameters"]
    # copies scale between 0 and max: target tracking on invocations per copy ...
    target = only(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 3)
    assert target["ScalableDimension"] == "sagemaker:inference-component:DesiredCopyCount"
    assert component_id in json.dumps(target["ResourceId"]) and "inference-component/" in json.dumps(target["ResourceId"])
    policies = {p["Properties"]["PolicyType"]: p for p in template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()}
    tracking = policies["TargetTrackingScaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerInferenceComponentInvocationsPerCopy"
    assert tracking["TargetValue"] == 300
    # ... and out of zero by AWS's step policy, fired by an alarm on the invocations refused at 0 copies
    step_id, step = next((k, v) for k, v in template.find_resources("AWS::ApplicationAutoScaling::ScalingPolicy").items()
                         if v["Properties"]["PolicyType"] == "StepScaling")
    assert step["Properties"]["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ChangeInCapacity", "Cooldown": 60, "MetricAggregationType": "Maximum",
        "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
    }
    alarm = only(template, "AWS::CloudWatch::Alarm")
    assert alarm["AlarmActions"] == [{"Ref": step_id}]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"], alarm["Period"]) == (
        "AWS/SageMaker", "NoCapacityInvocationFailures", "Sum", 60)
    assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["EvaluationPeriods"]) == (1, "GreaterThanOrEqualToThreshold", 1)
    assert alarm["Dimensions"][0]["Name"] == "InferenceComponentName" and component_id in json.dumps(alarm["Dimensions"])
    # The proxy may invoke the endpoint and its component; it is told the component's name.
    (invoke,) = [s for s in statements(template) if s["Action"] == "sagemaker:InvokeEndpoint"]
    assert invoke["Resource"][0] == {"Ref": stack.get_logical_id(endpoint.endpoint)}
    assert component_id in json.dumps(invoke["Resource"][1])
    assert resolve(stack, endpoint.component_name) == json.dumps(
        {"Fn::Select": [1, {"Fn::Split": ["/", {"Fn::GetAtt": [component_id, "InferenceComponentArn"]}]}]})


def test_an_image_override_is_used_as_given(archive):
    image = "222222222222.dkr.ecr.eu-west-1.amazonaws.com/my-triton:24.09-custom"
    template, stack, _ = synth(archive, "eu-west-1", image_uri=image)
    model = only(template, "AWS::SageMaker::Model")
    assert model["PrimaryContainer"]["Image"] == image
    assert model["EnableNetworkIsolation"] is False  # another image's needs are its owner's to decide
    (pull,) = [s for s in statements(template) if "ecr:BatchGetImage" in s["Action"]]
    assert ":ecr:eu-west-1:222222222222:repository/my-triton" in json.dumps(pull["Resource"])
    assert not template.find_mappings("*")
