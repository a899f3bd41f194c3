"""HeavyModelEndpoint: a model served by a SageMaker real-time endpoint on a GPU instance.

Model (the serving container image + model.tar.gz as an S3 asset) -> EndpointConfig (one
variant, the manifest's instance type, default ml.g5.xlarge) -> Endpoint, with Application Auto
Scaling tracking SageMakerVariantInvocationsPerInstance between the manifest's min and max.
`grant_invoke` allows sagemaker:InvokeEndpoint on this endpoint's ARN and nothing else.

The image runs functions/sagemaker_serving/serve.py (SageMaker's /ping + /invocations contract)
with maas_runtime and onnxruntime-gpu. Its URI comes from the manifest (`sagemaker.image_uri`),
else the context key `maas:sagemakerImage`, else DEFAULT_IMAGE: a repository named
`maas-sagemaker-serving` in the deploying account's ECR, which you push once (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, Aws, Fn, Stack, Token
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from maas.manifest import SageMakerSettings
from maas_api.constants import ENV_MODEL_NAME

from .nag import acknowledge
from .staging import StagedAsset

VARIANT = "AllTraffic"
IMAGE_REPOSITORY = "maas-sagemaker-serving"
IMAGE_TAG = "onnxruntime-gpu-1.32.0"
DEFAULT_IMAGE = f"{Aws.ACCOUNT_ID}.dkr.ecr.{Aws.REGION}.{Aws.URL_SUFFIX}/{IMAGE_REPOSITORY}:{IMAGE_TAG}"


@dataclass(frozen=True)
class HeavyModelEndpointProps:
    model_name: str
    version: str
    archive: StagedAsset
    """model.tar.gz, as the serving program packages it."""
    settings: SageMakerSettings = SageMakerSettings()
    """Instance type, scaling and image: the manifest's `sagemaker` table, whose defaults live there."""


class HeavyModelEndpoint(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: HeavyModelEndpointProps) -> None:
        super().__init__(scope, construct_id)
        self.model_name = props.model_name
        settings = props.settings
        image = settings.image_uri or self.node.try_get_context("maas:sagemakerImage")
        if not image:
            image = DEFAULT_IMAGE
            Annotations.of(self).add_warning_v2(
                "maas:defaultImage",
                f"{props.model_name}: no sagemaker.image_uri in the manifest and no maas:sagemakerImage context; "
                f"using {IMAGE_REPOSITORY}:{IMAGE_TAG} in this account's ECR (push the serving image there first).",
            )
        self.image_uri = image
        self.model_data = s3_assets.Asset(self, "ModelData", path=str(props.archive.path))

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"maas SageMaker endpoint for model {props.model_name}",
        )
        stack = Stack.of(self)
        # The one object, not CDK's grant_read (GetObject*/List* on the whole staging bucket's keys).
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"],
            resources=[f"{self.model_data.bucket.bucket_arn}/{self.model_data.s3_object_key}"],
        ))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=[stack.format_arn(service="logs", resource="log-group",
                                        resource_name="/aws/sagemaker/Endpoints/*",
                                        arn_format=_colon())],
        ))
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/Endpoints", "Maas"]}},
        ))
        repository = (
            stack.format_arn(service="ecr", resource="repository", resource_name=IMAGE_REPOSITORY)
            if image == DEFAULT_IMAGE else _repository_arn(stack, image)
        )
        self.role.add_to_policy(iam.PolicyStatement(
            actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
            resources=[repository],
        ))
        self.role.add_to_policy(iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]))

        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image,
                model_data_url=self.model_data.s3_object_url,
                environment={ENV_MODEL_NAME: props.model_name},
            ),
        )
        self.model.node.add_dependency(self.role)
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
                )
            ],
        )
        self.endpoint = sagemaker.CfnEndpoint(self, "Endpoint", endpoint_config_name=self.endpoint_config.attr_endpoint_config_name)
        self.endpoint_name = self.endpoint.attr_endpoint_name
        # Ref of AWS::SageMaker::Endpoint is the endpoint's ARN.
        self.endpoint_arn = self.endpoint.ref

        self.scaling = appscaling.ScalableTarget(
            self,
            "Scaling",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=settings.min_instances,
            max_capacity=settings.max_instances,
        )
        self.scaling.node.add_dependency(self.endpoint)
        self.scaling.scale_to_track_metric(
            "InvocationsPerInstance",
            target_value=settings.target_invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
        )

        acknowledge(
            self.role, "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData accept no resource ARN (the latter is limited by a "
            "namespace condition).",
            findings=("Resource::*",),
        )
        acknowledge(
            self.role, "AwsSolutions-IAM5",
            "SageMaker creates and names the endpoint's log group /aws/sagemaker/Endpoints/<endpoint name> at run time.",
            findings=(_logs_finding(stack),),
        )

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=[self.endpoint_arn]
        )


def _logs_finding(stack: Stack) -> str:
    """cdk-nag's finding id for the log-group ARN (region and account as tokens or, with an env, literal)."""
    region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    return f"Resource::arn:<AWS::Partition>:logs:{region}:{account}:log-group:/aws/sagemaker/Endpoints/*"


def _colon():
    from aws_cdk import ArnFormat

    return ArnFormat.COLON_RESOURCE_NAME


def _repository_arn(stack: Stack, image: str) -> str:
    """arn:...:ecr:<region>:<account>:repository/<name> for an ECR image URI; any ECR repository otherwise."""
    host, _, rest = image.partition("/")
    parts = host.split(".")
    repository = rest.split("@")[0].split(":")[0]
    if len(parts) >= 6 and parts[1] == "dkr" and parts[2] == "ecr":
        return f"arn:{Aws.PARTITION}:ecr:{parts[3]}:{parts[0]}:repository/{repository}"
    return Fn.sub("arn:${AWS::Partition}:ecr:*:*:repository/*")
