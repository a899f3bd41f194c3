"""HeavyModelEndpoint: a model served by NVIDIA Triton on a GPU SageMaker endpoint.

The image is AWS's prebuilt Triton for SageMaker (infra/triton_image.py: pinned tag, the ECR
account of the stack's region from the SageMaker SDK's published table; a CfnMapping when the
stack is environment-agnostic), unless the manifest's `sagemaker.image_uri` names another. The
model data is model.tar.gz holding a Triton model repository (maas.triton: config.pbtxt with
dynamic batching + the served ONNX graph). The execution role may read that one object and pull
from that one ECR repository.

Two shapes, by `sagemaker.min_instances`:
- >= 1: Model -> EndpointConfig (one variant on the instance type, the GPU driver's AMI) ->
  Endpoint, with Application Auto Scaling tracking invocations per instance between min and max.
- 0 (scale to zero): the endpoint's variant hosts an inference component (one model copy per
  GPU) and its managed instance scaling may reach 0 instances. Copies scale between 1 and max by
  target tracking on invocations per copy, down to 0 when idle (Application Auto Scaling's own
  low alarm), and from 0 by the step policy AWS documents for this, fired by an alarm on
  NoCapacityInvocationFailures: the invocations refused while no copy runs.

`grant_invoke` allows sagemaker:InvokeEndpoint on this endpoint (and its inference component).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, Aws, CfnMapping, Duration, Fn, Stack, Token
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from maas.manifest import SageMakerSettings

from . import triton_image
from .nag import acknowledge
from .staging import StagedAsset

VARIANT = "AllTraffic"
TRITON_ENVIRONMENT = {"SAGEMAKER_TRITON_LOG_VERBOSE": "0"}
"""The image's serve script runs tritonserver --log-verbose=true unless told otherwise: log lines per request."""
DEFAULT_MODEL_ENV = "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME"
"""The model folder in model.tar.gz that /invocations answers for."""
COPY_MIN_MEMORY_MB = 1024
"""An inference component's memory reservation: what a g5.xlarge can schedule beside its agents
(4096 MB is refused there); Triton with one MiniLM-sized model needs far less."""
COPY_STARTUP_TIMEOUT_S = 600
"""Per new copy: downloading the model data, and the container's first healthy /ping."""
WAKE_ALARM_PERIOD = Duration.seconds(60)
SCALE_OUT_COOLDOWN = Duration.seconds(60)
SCALE_IN_COOLDOWN = Duration.minutes(5)


@dataclass(frozen=True)
class HeavyModelEndpointProps:
    model_name: str
    version: str
    archive: StagedAsset
    """model.tar.gz: the model's Triton model repository (infra.staging.stage_served_model)."""
    settings: SageMakerSettings = SageMakerSettings()
    """Instance type, scaling, batching and image: the manifest's `sagemaker` table, whose defaults live there."""


class HeavyModelEndpoint(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: HeavyModelEndpointProps) -> None:
        super().__init__(scope, construct_id)
        self.model_name = props.model_name
        settings = props.settings
        stack = Stack.of(self)
        self.scales_to_zero = settings.min_instances == 0
        image = settings.image_uri or self.node.try_get_context("maas:sagemakerImage")
        if image:
            self.image_uri, repository = image, _repository_arn(image)
            Annotations.of(self).add_info(
                f"{props.model_name}: serving image {image} instead of AWS's Triton; it must read the Triton model "
                "repository in model.tar.gz and answer KServe v2 requests on /invocations"
            )
        else:
            self.image_uri, repository = self._triton_image(stack)
        self.model_data = s3_assets.Asset(self, "ModelData", path=str(props.archive.path))

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"maas SageMaker endpoint for model {props.model_name}",
        )
        # The one object, not CDK's grant_read (GetObject*/List* on the whole staging bucket's keys).
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"],
            resources=[f"{self.model_data.bucket.bucket_arn}/{self.model_data.s3_object_key}"],
        ))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[stack.format_arn(service="logs", resource="log-group",
                                        resource_name="/aws/sagemaker/*", arn_format=_colon())],
        ))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
        ))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            resources=[repository],
        ))
        self.role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))

        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            # Triton calls nothing outside its container; SageMaker itself fetches the model data.
            enable_network_isolation=not image,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=self.image_uri,
                model_data_url=self.model_data.s3_object_url,
                environment={DEFAULT_MODEL_ENV: props.model_name, **TRITON_ENVIRONMENT},
            ),
        )
        self.model.node.add_dependency(self.role)
        self.component = None
        if self.scales_to_zero:
            self._scale_to_zero_endpoint(settings)
        else:
            self._instance_endpoint(settings)

        acknowledge(
            self.role, "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData accept no resource ARN (the latter is limited by a "
            "namespace condition).",
            findings=("Resource::*",),
        )
        acknowledge(
            self.role, "AwsSolutions-IAM5",
            "SageMaker creates and names the endpoint's log groups (/aws/sagemaker/Endpoints/<endpoint name>, "
            "/aws/sagemaker/InferenceComponents/<component name>) at run time.",
            findings=(_logs_finding(stack),),
        )

    # --- the image ------------------------------------------------------------------------------

    def _triton_image(self, stack: Stack) -> tuple[str, str]:
        """(image URI, ECR repository ARN) of AWS's Triton image in the stack's region."""
        data = triton_image.load()
        if Token.is_unresolved(stack.region):
            mapping = CfnMapping(self, "TritonImageAccount",
                                 mapping={region: {"account": account} for region, account in data["registries"].items()})
            account = mapping.find_in_map(Aws.REGION, "account")
        else:
            account = triton_image.account_for(stack.region, data)
        uri = triton_image.image_uri(account, Aws.REGION, Aws.URL_SUFFIX, data)
        repository = f"arn:{Aws.PARTITION}:ecr:{Aws.REGION}:{account}:repository/{data['repository']}"
        return uri, repository

    # --- min_instances >= 1: a variant running the model ------------------------------------------

    def _instance_endpoint(self, settings: SageMakerSettings) -> None:
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    model_name=self.model.attr_model_name,
                    initial_instance_count=settings.min_instances,
                    instance_type=settings.instance_type,
                    initial_variant_weight=1.0,
                    inference_ami_version=triton_image.INFERENCE_AMI_VERSION,
                )
            ],
        )
        self._endpoint()
        self._scaling(f"endpoint/{self.endpoint_name}/variant/{VARIANT}", "variant:DesiredInstanceCount",
                      settings.min_instances, settings.max_instances, self.endpoint)
        self.scaling.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=settings.target_invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
        )

    def _scaling(self, resource_id: str, dimension: str, low: int, high: int, scaled) -> None:
        self.scaling = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=resource_id,
            scalable_dimension=f"sagemaker:{dimension}",
            min_capacity=low,
            max_capacity=high,
        )
        self.scaling.node.add_dependency(scaled)

    def _endpoint(self) -> None:
        self.endpoint = sagemaker.CfnEndpoint(self, "Endpoint", endpoint_config_name=self.endpoint_config.attr_endpoint_config_name)
        self.endpoint_name = self.endpoint.attr_endpoint_name
        # Ref of AWS::SageMaker::Endpoint is the endpoint's ARN.
        self.endpoint_arn = self.endpoint.ref

    # --- min_instances == 0: an inference component on an endpoint that may have no instance -----

    def _scale_to_zero_endpoint(self, settings: SageMakerSettings) -> None:
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            # An endpoint hosting inference components runs them with this role.
            execution_role_arn=self.role.role_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    # No model_name: the variant hosts inference components, the component names the model.
                    variant_name=VARIANT,
                    instance_type=settings.instance_type,
                    initial_instance_count=1,
                    inference_ami_version=triton_image.INFERENCE_AMI_VERSION,
                    managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                        status="ENABLED", min_instance_count=0, max_instance_count=settings.max_instances,
                    ),
                    routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                        routing_strategy="LEAST_OUTSTANDING_REQUESTS",
                    ),
                )
            ],
        )
        self.endpoint_config.node.add_dependency(self.role)
        self._endpoint()
        component = sagemaker.CfnInferenceComponent(
            self,
            "Component",
            endpoint_name=self.endpoint_name,
            variant_name=VARIANT,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=self.model.attr_model_name,
                compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_accelerator_devices_required=1,
                    number_of_cpu_cores_required=1,
                    min_memory_required_in_mb=COPY_MIN_MEMORY_MB,
                ),
                startup_parameters=sagemaker.CfnInferenceComponent.InferenceComponentStartupParametersProperty(
                    model_data_download_timeout_in_seconds=COPY_STARTUP_TIMEOUT_S,
                    container_startup_health_check_timeout_in_seconds=COPY_STARTUP_TIMEOUT_S,
                ),
            ),
            # SageMaker refuses 0 at creation: a deploy starts one copy, scaled in when idle.
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(copy_count=1),
        )
        self.component = component
        self.component_arn = component.attr_inference_component_arn
        # No name attribute: the ARN is arn:...:inference-component/<name>.
        self.component_name = Fn.select(1, Fn.split("/", self.component_arn))

        self._scaling(f"inference-component/{self.component_name}", "inference-component:DesiredCopyCount",
                      0, settings.max_instances, component)
        # 1..max copies (and down to 0 when idle); target tracking cannot leave 0: no copy, no per-copy metric.
        self.scaling.scale_to_track_metric(
            "InvocationsPerCopy",
            target_value=settings.target_invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_INVOCATIONS_PER_COPY,
            scale_in_cooldown=SCALE_IN_COOLDOWN,
            scale_out_cooldown=SCALE_OUT_COOLDOWN,
        )
        # 0 -> 1: AWS's documented step policy, fired by an alarm on the invocations refused at 0 copies.
        self.wake = appscaling.StepScalingAction(
            self, "WakeFromZero",
            scaling_target=self.scaling,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
            cooldown=SCALE_OUT_COOLDOWN,
        )
        self.wake.add_adjustment(adjustment=1, lower_bound=0)
        self.wake_alarm = cloudwatch.Alarm(
            self, "NoCapacityAlarm",
            alarm_description=f"{self.model_name}: a request found no model copy running; scale out from zero",
            metric=cloudwatch.Metric(
                namespace="AWS/SageMaker", metric_name="NoCapacityInvocationFailures",
                dimensions_map={"InferenceComponentName": self.component_name},
                statistic="Sum", period=WAKE_ALARM_PERIOD,
            ),
            threshold=1, evaluation_periods=1, datapoints_to_alarm=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.wake_alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(self.wake))

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        arns = [self.endpoint_arn] + ([self.component_arn] if self.component is not None else [])
        return iam.Grant.add_to_principal(grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=arns)


def _logs_finding(stack: Stack) -> str:
    """cdk-nag's finding id for the log-group ARN (region and account as tokens or, with an env, literal)."""
    region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    return f"Resource::arn:<AWS::Partition>:logs:{region}:{account}:log-group:/aws/sagemaker/*"


def _colon():
    from aws_cdk import ArnFormat

    return ArnFormat.COLON_RESOURCE_NAME


def _repository_arn(image: str) -> str:
    """arn:...:ecr:<region>:<account>:repository/<name> for an ECR image URI; any ECR repository otherwise."""
    host, _, rest = image.partition("/")
    parts = host.split(".")
    repository = rest.split("@")[0].split(":")[0]
    if len(parts) >= 6 and parts[1] == "dkr" and parts[2] == "ecr":
        return f"arn:{Aws.PARTITION}:ecr:{parts[3]}:{parts[0]}:repository/{repository}"
    return Fn.sub("arn:${AWS::Partition}:ecr:*:*:repository/*")
