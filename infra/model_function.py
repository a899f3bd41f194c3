"""ModelFunction: one Lambda function for one model, published behind the alias `live`.

Each model gets its own function (its own memory, concurrency and cold start), a version per
deployment and the alias `live` that API Gateway calls. A new version reaches `live` through a
CodeDeploy canary (10% for 5 minutes, by default):

- before any traffic shifts, a pre-traffic hook (functions/pre_traffic_hook) invokes the new
  version with GET /health and the model's smoke input, and fails the deployment unless both
  answer 200 with the expected content: a version is never promoted on no traffic at all;
- during the canary, two alarms watch the new version only (its version number is a dimension,
  so the old version's errors never roll back a good new one): its 5xx answers (the handler's
  `server_errors` metric: a 5xx answer is not a Lambda error) and its function errors (crashes,
  timeouts) on the alias, with Lambda's ExecutedVersion. Either one rolls the deployment back.

The role is the function's own: write to its own log group, and whatever the caller grants (its
S3 prefix, its endpoint). X-Ray tracing is active; the handler adds its own subsegments unless the
manifest says `lambda.tracing = "service"`. No reserved concurrency unless the manifest
asks for it (`lambda.reserved_concurrency`): a reservation is taken from the account's quota, and
an account without room for it fails the deployment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import AssetHashType, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_lambda_powertools.shared.constants import TRACER_DISABLED_ENV
from constructs import Construct

from maas.manifest import LambdaSettings
from maas_api.constants import (
    ENV_HOOK_REQUESTS,
    ENV_HOOK_TARGET_VERSION,
    METRIC_DIMENSION_MODEL,
    METRIC_DIMENSION_SERVICE,
    METRIC_DIMENSION_VERSION,
    METRIC_SERVER_ERRORS,
    METRICS_NAMESPACE,
    SAGEMAKER_WORST_CASE_S,
)

from .nag import acknowledge
from .runtime_layer import ARCHITECTURES, RUNTIME
from .staging import StagedAsset

HANDLER = "app.lambda_handler"
ALIAS = "live"
MAX_TIMEOUT_S = 28
"""Under API Gateway's 29 s integration timeout: a function that runs longer is never answered."""
PROXY_TIMEOUT_MARGIN_S = 2
"""Above the SageMaker client's worst case: the proxy's own work before and after the call."""
HOOK_CHECKS_MAX_BYTES = 3 * 1024
"""Lambda allows 4 KB of environment variables per function; the hook's checks must leave room
for the target version's ARN."""


def service_name(model_name: str) -> str:
    """Powertools' service name for a model's function: its logs, traces and metrics carry it."""
    return f"maas-{model_name}"


def proxy_settings(settings: LambdaSettings) -> LambdaSettings:
    """A SageMaker proxy's settings: its timeout above the SageMaker client's worst case, so a
    slow endpoint is answered with the designed 504 instead of the function being cut off."""
    needed = math.ceil(SAGEMAKER_WORST_CASE_S) + PROXY_TIMEOUT_MARGIN_S
    if needed > MAX_TIMEOUT_S:
        raise ValueError(f"the SageMaker client may take {SAGEMAKER_WORST_CASE_S} s; a proxy cannot wait that long "
                         f"under API Gateway's {MAX_TIMEOUT_S + 1} s")
    return settings.model_copy(update={"timeout_s": max(settings.timeout_s, needed)})


@dataclass(frozen=True)
class ModelFunctionProps:
    model_name: str
    version: str
    asset: StagedAsset
    """The handler folder Lambda runs (with the packaged artifact, when there is one)."""
    layers: list
    hook_code: Path
    """The pre-traffic hook's handler folder (functions/pre_traffic_hook)."""
    hook_layers: list
    """What the hook imports besides boto3: the api layer (maas_api.constants)."""
    version_checks: tuple[dict, ...]
    """The requests the hook sends a new version and what each answer must hold (maas.smoke)."""
    settings: LambdaSettings = LambdaSettings()
    """Architecture, memory, timeout, concurrency, SnapStart: the manifest's `lambda` table, whose
    defaults live there."""
    environment: dict = field(default_factory=dict)
    """Added to the Powertools service name and metrics namespace set for every function."""
    description: str = ""
    """Default: "maas model <name> <version>"."""
    log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH
    deployment_config: codedeploy.ILambdaDeploymentConfig = codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES
    """How CodeDeploy shifts the live alias to a new version (rolled back on the rollback alarms)."""
    rollback_threshold: int = 1
    """5xx answers (or function errors) of the new version in one minute that roll it back."""


class ModelFunction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ModelFunctionProps) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        self.model_name = props.model_name
        settings = props.settings
        service = service_name(props.model_name)
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
                "POWERTOOLS_SERVICE_NAME": service,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                # tracing = "service": Lambda's own segments only, no X-Ray SDK in the handler
                **({TRACER_DISABLED_ENV: "true"} if settings.tracing == "service" else {}),
                **props.environment,
            },
            role=self.role,
            log_group=self.log_group,
            tracing=lambda_.Tracing.ACTIVE,
            description=(props.description or f"maas model {props.model_name} {props.version}")[:256],
        )
        version = self.function.current_version
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name=ALIAS,
            version=version,
            provisioned_concurrent_executions=settings.provisioned_concurrency or None,
        )

        minute = Duration.minutes(1)
        new_5xx = cloudwatch.Metric(
            namespace=METRICS_NAMESPACE, metric_name=METRIC_SERVER_ERRORS, statistic="Sum", period=minute,
            dimensions_map={METRIC_DIMENSION_SERVICE: service, METRIC_DIMENSION_MODEL: props.model_name,
                            METRIC_DIMENSION_VERSION: version.version},
        )
        new_errors = cloudwatch.Metric(
            namespace="AWS/Lambda", metric_name="Errors", statistic="Sum", period=minute,
            dimensions_map={"FunctionName": self.function.function_name,
                            "Resource": f"{self.function.function_name}:{ALIAS}",
                            "ExecutedVersion": version.version},
        )
        self.rollback_alarms = [
            self._rollback_alarm("NewVersion5xxAlarm", new_5xx, "5xx answers"),
            self._rollback_alarm("NewVersionErrorsAlarm", new_errors, "function errors (crashes, timeouts)"),
        ]

        self.pre_traffic_hook = self._pre_traffic_hook(props, version)
        self.deployment_group = codedeploy.LambdaDeploymentGroup(
            self,
            "Deployment",
            alias=self.alias,
            deployment_config=props.deployment_config,
            alarms=self.rollback_alarms,
            pre_hook=self.pre_traffic_hook,
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
        stack = Stack.of(self)
        hook_id = stack.resolve(stack.get_logical_id(self.pre_traffic_hook.node.default_child))
        acknowledge(
            self.deployment_group, "AwsSolutions-IAM5",
            "CodeDeploy may invoke the pre-traffic hook function and its versions (CDK's grant on <hook ARN>:*); the "
            "hook is this deployment group's own function.",
            findings=(f"Resource::<{hook_id}.Arn>:*",),
        )
        for function in (self.function, self.pre_traffic_hook):
            acknowledge(
                function, "AwsSolutions-L1",
                "Pinned to Python 3.12: the layers are built and tested for cp312; a newer runtime is a deliberate "
                "change (rebuild the layers, rerun the layer serving test).",
            )

    def _rollback_alarm(self, construct_id: str, metric: cloudwatch.Metric, what: str) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=f"{self.model_name}: {what} of the version being deployed (rolls it back; "
                              "afterwards, of the live version)",
            metric=metric,
            threshold=self.props.rollback_threshold,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _pre_traffic_hook(self, props: ModelFunctionProps, version: lambda_.Version) -> lambda_.Function:
        """The hook CodeDeploy runs before shifting traffic; it may invoke the new version only."""
        logs_group = logs.LogGroup(self, "HookLogs", retention=props.log_retention, removal_policy=RemovalPolicy.DESTROY)
        role = iam.Role(
            self, "HookRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"maas pre-traffic hook for model {props.model_name}",
        )
        logs_group.grant_write(role)
        checks = json.dumps(list(props.version_checks), separators=(",", ":"))
        if len(checks.encode()) > HOOK_CHECKS_MAX_BYTES:
            raise ValueError(
                f"{props.model_name}: the pre-traffic checks take {len(checks.encode())} bytes; Lambda's "
                f"environment holds 4 KB in all (at most {HOOK_CHECKS_MAX_BYTES} for the checks), too little "
                "for a smoke input this large"
            )
        hook = lambda_.Function(
            self,
            "PreTrafficHook",
            runtime=RUNTIME,
            architecture=ARCHITECTURES[props.settings.architecture],
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(props.hook_code), exclude=["__pycache__", "*.pyc"]),
            layers=props.hook_layers,
            memory_size=256,
            # Each check may take the function's whole timeout, plus a cold start (at most 10 s of init).
            timeout=Duration.seconds(len(props.version_checks) * (props.settings.timeout_s + 10) + 30),
            environment={ENV_HOOK_TARGET_VERSION: version.function_arn, ENV_HOOK_REQUESTS: checks},
            role=role,
            log_group=logs_group,
            tracing=lambda_.Tracing.ACTIVE,
            description=f"maas {props.model_name}: checks a new version before CodeDeploy shifts traffic to it",
        )
        version.grant_invoke(hook)
        acknowledge(
            role, "AwsSolutions-IAM5",
            "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions (resource '*' "
            "is the only form AWS accepts).",
            findings=("Resource::*",),
        )
        return hook

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.alias.grant_invoke(grantee)
