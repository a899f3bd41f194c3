"""MaasStack: every model of the manifest, as the build left it, behind one API.

Light models (target "lambda") get a ModelFunction each; heavy ones (target "sagemaker") a
HeavyModelEndpoint and a proxy ModelFunction allowed to invoke that endpoint only. Nothing here
names a model: adding one to the manifest (and building it) adds its function, alias, routes,
alarms and dashboard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from maas.paths import artifact_dir
from maas_api.constants import (
    ENV_CATALOG_PATH,
    ENV_MODEL_DIR,
    ENV_MODEL_NAME,
    ENV_MODEL_S3_URI,
    ENV_SAGEMAKER_ENDPOINT,
)

from .alarm_topic import AlarmTopic
from .artifact_bucket import ArtifactBucket
from .heavy_model_endpoint import HeavyModelEndpoint, HeavyModelEndpointProps
from .nag import acknowledge
from .model_api import ApiSettings, ModelApi
from .model_function import ModelFunction, ModelFunctionProps
from .monitoring import ModelMonitoring
from .runtime_layer import RuntimeLayers
from .staging import (
    CATALOG_FILE,
    MODEL_HANDLER,
    PACKAGED_MODEL_DIR,
    PROXY_HANDLER,
    StagedAsset,
    stage_function,
    stage_model_archive,
)

MODEL_LAYERS = ("runtime", "api")
"""What a model function imports: onnxruntime/tokenizers/numpy/maas_runtime, Powertools/maas_api."""
PROXY_LAYERS = ("api",)
"""The SageMaker proxy imports maas_api and boto3 (the Lambda runtime's) only."""


def logical_name(model: str) -> str:
    """minilm-gpu -> MinilmGpu (construct ids and output names)."""
    return "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", model) if part)


@dataclass
class DeployedModel:
    name: str
    target: str
    task: str
    function: ModelFunction
    route: str
    endpoint: HeavyModelEndpoint | None = None
    asset: StagedAsset | None = None
    unzipped_bytes: int = 0
    """Function asset + its layers, unzipped (Lambda's 250 MB limit)."""


@dataclass(frozen=True)
class StackInputs:
    manifest: object
    cards: dict
    staging_dir: Path
    layer_cache_dir: Path
    api: ApiSettings = field(default_factory=ApiSettings)
    alarm_email: str | None = None


class MaasStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, inputs: StackInputs, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        manifest = inputs.manifest
        root = manifest.root
        self.layers = RuntimeLayers(self, "Layers", shared_root=root / "shared", cache_dir=inputs.layer_cache_dir)
        self.model_api = ModelApi(self, "ModelApi", settings=inputs.api)
        self.alarm_topic = AlarmTopic(self, "Alarms", email=inputs.alarm_email)
        self.models: dict[str, DeployedModel] = {}
        self.artifacts: ArtifactBucket | None = None

        for spec in manifest.models:
            folder = artifact_dir(root, spec.name, spec.version)
            lam = spec.lambda_settings
            cid = logical_name(spec.name)
            env = {ENV_MODEL_NAME: spec.name, ENV_CATALOG_PATH: CATALOG_FILE}
            endpoint = None
            if spec.target == "sagemaker":
                sm = spec.sagemaker
                endpoint = HeavyModelEndpoint(self, f"{cid}Endpoint", HeavyModelEndpointProps(
                    model_name=spec.name, version=spec.version,
                    archive=stage_model_archive(root, spec.name, folder, inputs.staging_dir),
                    instance_type=sm.instance_type, min_instances=sm.min_instances, max_instances=sm.max_instances,
                    target_invocations_per_instance=sm.target_invocations_per_instance, image_uri=sm.image_uri,
                ))
                asset = stage_function(root, PROXY_HANDLER, spec.name, None, inputs.staging_dir)
                env[ENV_SAGEMAKER_ENDPOINT] = endpoint.endpoint_name
                layer_names = PROXY_LAYERS
            elif lam.artifact == "s3":
                asset = stage_function(root, MODEL_HANDLER, spec.name, None, inputs.staging_dir)
                bucket = self._artifact_bucket()
                prefix = bucket.prefix_for(spec.name, spec.version)
                env[ENV_MODEL_S3_URI] = f"s3://{bucket.bucket.bucket_name}/{prefix}"
                layer_names = MODEL_LAYERS
            else:
                asset = stage_function(root, MODEL_HANDLER, spec.name, folder, inputs.staging_dir)
                env[ENV_MODEL_DIR] = PACKAGED_MODEL_DIR
                layer_names = MODEL_LAYERS

            function = ModelFunction(self, f"{cid}Function", ModelFunctionProps(
                model_name=spec.name, version=spec.version, asset=asset,
                layers=self.layers.layers_for(lam.architecture, layer_names),
                environment=env, architecture=lam.architecture, memory_mb=lam.memory_mb, timeout_s=lam.timeout_s,
                reserved_concurrency=lam.reserved_concurrency, provisioned_concurrency=lam.provisioned_concurrency,
                snap_start=lam.snap_start,
                description=f"maas {spec.name} {spec.version} ({spec.target}): {spec.description}",
            ))
            if endpoint is not None:
                endpoint.grant_invoke(function.role)
            elif lam.artifact == "s3":
                self._upload_artifact(spec, folder, function)
            function.errors_alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic.topic))
            self.model_api.add_model_routes(spec.name, function.alias, embeddings=spec.task == "embedding")
            route = self.model_api.routes[spec.name]
            ModelMonitoring(
                self, f"{cid}Monitoring", model_name=spec.name, api=self.model_api.api, route=route,
                alias=function.alias, alarm_topic=self.alarm_topic.topic,
                endpoint_name=endpoint.endpoint_name if endpoint else None,
            )
            self.models[spec.name] = DeployedModel(
                spec.name, spec.target, spec.task, function, route, endpoint, asset,
                unzipped_bytes=_folder_bytes(asset.path) + self.layers.unzipped_bytes(lam.architecture, layer_names),
            )
            CfnOutput(self, f"{cid}Route", value=f"{self.model_api.url.rstrip('/')}{route}",
                      description=f"POST here to invoke {spec.name} ({spec.target})")

        default = self.default_model()
        self.model_api.add_shared_routes(self.models[default].function.alias)
        CfnOutput(self, "ApiUrl", value=self.model_api.url, description="The API's base URL (stage prod)")
        CfnOutput(self, "ApiKeyId", value=self.model_api.api_key.key_id,
                  description="aws apigateway get-api-key --include-value --api-key <id> gives the x-api-key value")
        CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic.topic_arn,
                  description="Every model's alarms notify this SNS topic: subscribe your on-call to it")
        CfnOutput(self, "DefaultModel", value=default, description="The function answering /models, /health, /v1/embeddings")

    def default_model(self) -> str:
        """The first light embedding model; else the first light model; else the first model."""
        light = [m for m in self.models.values() if m.target == "lambda"]
        embedding = [m for m in light if m.task == "embedding"]
        return (embedding or light or list(self.models.values()))[0].name

    def _artifact_bucket(self) -> ArtifactBucket:
        if self.artifacts is None:
            self.artifacts = ArtifactBucket(self, "Artifacts")
        return self.artifacts

    def _upload_artifact(self, spec, folder: Path, function: ModelFunction) -> None:
        bucket = self._artifact_bucket()
        prefix = bucket.prefix_for(spec.name, spec.version)
        deployment = s3deploy.BucketDeployment(
            self, f"{logical_name(spec.name)}Artifact",
            sources=[s3deploy.Source.asset(str(folder))],
            destination_bucket=bucket.bucket,
            destination_key_prefix=prefix,
            prune=False,  # earlier versions' prefixes stay for rollbacks
            retain_on_delete=True,
        )
        function.function.node.add_dependency(deployment)
        # GetObject under its own prefix only: the handler fetches card.json and the files it lists, no listing.
        function.role.add_to_policy(iam.PolicyStatement(
            actions=["s3:GetObject"], resources=[bucket.bucket.arn_for_objects(f"{prefix}*")],
        ))
        bucket_id = self.get_logical_id(bucket.bucket.node.default_child)
        acknowledge(
            function.role, "AwsSolutions-IAM5",
            "Read-only access to the objects under this model's own prefix; the file names come from its card.json.",
            findings=(f"Resource::<{bucket_id}.Arn>/{prefix}*",),
        )
        handler = self.node.try_find_child("Custom::CDKBucketDeployment8693BB64968944B69AAFB0CC9EB8756C") or deployment
        acknowledge(
            handler, "AwsSolutions-IAM5",
            "CDK's BucketDeployment handler copies the artifact once per deploy: it reads the CDK asset from the "
            "bootstrap staging bucket and writes (and replaces) objects in the artifact bucket; aws-cdk-lib writes "
            "this policy.",
            findings=(
                "Action::s3:GetObject*", "Action::s3:GetBucket*", "Action::s3:List*", "Action::s3:DeleteObject*",
                "Action::s3:Abort*", f"Resource::<{bucket_id}.Arn>/*",
                "Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-<AWS::Region>/*",
            ),
        )
        acknowledge(
            handler, "AwsSolutions-IAM4",
            "CDK's BucketDeployment handler uses AWSLambdaBasicExecutionRole (aws-cdk-lib's choice).",
            findings=("Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",),
        )
        acknowledge(handler, "AwsSolutions-L1", "CDK's BucketDeployment handler runtime is chosen by aws-cdk-lib.")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
