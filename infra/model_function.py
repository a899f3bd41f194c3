"""ModelFunction: one Lambda function for one model, published behind the alias `live`.

Each model gets its own function (its own memory, concurrency and cold start), a version per
deployment and the alias `live` that API Gateway calls. A new version reaches `live` through a
CodeDeploy canary (10% for 5 minutes, by default) and is rolled back when the alias's error
alarm fires. The role is the function's own: write to its own log group, and whatever the caller
grants (its S3 prefix, its endpoint). X-Ray tracing is active.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import AssetHashType, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from maas.manifest import LambdaSettings
from maas_api.constants import METRICS_NAMESPACE

from .nag import acknowledge
from .runtime_layer import ARCHITECTURES, RUNTIME
from .staging import StagedAsset

HANDLER = "app.lambda_handler"
ALIAS = "live"


@dataclass(frozen=True)
class ModelFunctionProps:
    model_name: str
    version: str
    asset: StagedAsset
    """The handler folder Lambda runs (with the packaged artifact, when there is one)."""
    layers: list
    settings: LambdaSettings = LambdaSettings()
    """Architecture, memory, timeout, concurrency, SnapStart: the manifest's `lambda` table, whose
    defaults live there."""
    environment: dict = field(default_factory=dict)
    """Added to the Powertools service name and metrics namespace set for every function."""
    description: str = ""
    """Default: "maas model <name> <version>"."""
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    deployment_config: codedeploy.ILambdaDeploymentConfig = codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES
    """How CodeDeploy shifts the live alias to a new version (rolled back on the errors alarm)."""


class ModelFunction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ModelFunctionProps) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        self.model_name = props.model_name
        settings = props.settings
        self.log_group = logs.LogGroup(
            self, "Logs", retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"maas function for model {props.model_name}",
        )
        # Its own log group only (instead of AWSLambdaBasicExecutionRole's logs on every group).
        self.log_group.grant_write(self.role)
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURES[settings.architecture],
            handler=HANDLER,
            code=lambda_.Code.from_asset(
                str(props.asset.path), asset_hash=props.asset.hash, asset_hash_type=AssetHashType.CUSTOM
            ),
            layers=props.layers,
            memory_size=settings.memory_mb,
            timeout=Duration.seconds(settings.timeout_s),
            reserved_concurrent_executions=settings.reserved_concurrency,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if settings.snap_start else None,
            environment={
                "POWERTOOLS_SERVICE_NAME": f"maas-{props.model_name}",
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                **props.environment,
            },
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            description=(props.description or f"maas model {props.model_name} {props.version}")[:256],
        )
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=ALIAS,
            version=self.function.current_version,
            provisioned_concurrent_executions=settings.provisioned_concurrency or None,
        )
        self.errors_alarm = cloudwatch.Alarm(
            self,
            "ErrorsAlarm",
            alarm_description=f"{props.model_name}: the live alias reports function errors (rolls back a deployment)",
            metric=self.alias.metric_errors(period=Duration.minutes(1), statistic="Sum"),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "Deployment",
            alias=self.alias,
            deployment_config=props.deployment_config,
            alarms=[self.errors_alarm],
        )
        acknowledge(
            self.role, "AwsSolutions-IAM5",
            "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions (resource '*' "
            "is the only form AWS accepts).",
            findings=("Resource::*",),
        )
        acknowledge(
            self.deployment_group, "AwsSolutions-IAM4",
            "CodeDeploy's service role uses AWS's managed AWSCodeDeployRoleForLambdaLimited, the policy AWS documents "
            "for Lambda deployments (limited to the aliases and hook functions it deploys).",
            findings=("Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSCodeDeployRoleForLambdaLimited",),
        )
        acknowledge(
            self.function, "AwsSolutions-L1",
            "Pinned to Python 3.12: the layers are built and tested for cp312; a newer runtime is a deliberate change "
            "(rebuild the layers, rerun the layer serving test).",
        )

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.alias.grant_invoke(grantee)
