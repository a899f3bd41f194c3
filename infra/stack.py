"""MaasStack: every model of the manifest, as the build left it, behind one API.

Light models (target "lambda") get a ModelFunction each; heavy ones (target "sagemaker") a
HeavyModelEndpoint and a proxy ModelFunction allowed to invoke that endpoint only. Nothing here
names a model: adding one to the manifest (and building it) adds its function, alias, canary with
its pre-traffic hook, routes, alarms and dashboard.

Each model's routes are throttled to what its function can take (`route_limits`): its reserved
concurrency, or its share of the account's Lambda concurrency (context maas:lambdaConcurrency),
and, behind a heavy model, no faster than its endpoint at full scale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from constructs import Construct

from maas.builder.signing import trusted_keys
from maas.layers import folder_bytes
from maas.paths import artifact_dir
from maas.smoke import version_checks
from maas_runtime import ModelCard
from maas_api.constants import (
    ENV_CATALOG_PATH,
    ENV_MODEL_DIR,
    ENV_MODEL_NAME,
    ENV_MODEL_S3_URI,
    ENV_SAGEMAKER_ENDPOINT,
    ENV_SAGEMAKER_INFERENCE_COMPONENT,
    MODEL_FUNCTION_ENV,
)
from maas_api.routes import EMBEDDING_TASK, INVOKE, INVOKE_VERSION, route, shared_routes
from maas_runtime.signing import ENV_SIGNING_PUBLIC_KEYS

from .alarm_topic import AlarmTopic, AlarmTopicProps
from .artifact_bucket import ArtifactBucket
from .heavy_model_endpoint import HeavyModelEndpoint, HeavyModelEndpointProps
from .model_api import ApiModel, ModelApi, ModelApiProps, RouteLimits
from .model_function import ModelFunction, ModelFunctionProps, proxy_settings
from .monitoring import ModelMonitoring, ModelMonitoringProps
from .runtime_layer import RuntimeLayers, RuntimeLayersProps
from .staging import (
    CATALOG_FILE,
    FUNCTIONS_DIR,
    MODEL_HANDLER,
    PACKAGED_MODEL_DIR,
    PROXY_HANDLER,
    StagedAsset,
    stage_function,
    stage_served_model,
)

MODEL_LAYERS = ("runtime", "api")
"""What a model function imports: onnxruntime/tokenizers/numpy/maas_runtime, Powertools/maas_api."""
PROXY_LAYERS = ("runtime", "api")
"""The SageMaker proxy runs the model's task too (tokenization, pooling) around the remote graph, and answers through maas_api."""
HOOK_HANDLER = "pre_traffic_hook"
HOOK_LAYERS = ("api",)
"""The pre-traffic hook imports boto3 and maas_api.constants only."""
SAGEMAKER_METRIC_PERIOD_S = 60
"""SageMakerVariantInvocationsPerInstance (target_invocations_per_instance) counts per minute."""


def logical_name(model: str) -> str:
    """minilm-gpu -> MinilmGpu (construct ids and output names)."""
    return "".join(part.capitalize() for part in re.split(r"[^a-zA-Z0-9]+", model) if part)


def default_model(specs) -> str:
    """The model whose function answers the shared routes: the first light embedding model; else
    the first light model; else the first model."""
    light = [s for s in specs if s.target == "lambda"]
    embedding = [s for s in light if s.task == EMBEDDING_TASK]
    return (embedding or light or list(specs))[0].name


def served_functions(manifest) -> list[tuple[str, object]]:
    """(key, spec) of every model function the stack makes: each model's live function (key: its
    name), and each kept version's own function of a model keeping several (key: name@version)."""
    found = []
    for spec in manifest.models:
        found.append((spec.name, spec))
        if spec.side_by_side:
            found += [(f"{spec.name}@{v.version}", v) for v in manifest.versions_of(spec.name)]
    return found


def route_limits(functions, api: ModelApiProps) -> dict[str, RouteLimits]:
    """What each model function (`served_functions`) can take.

    Concurrency: the function's reserved concurrency, else an equal share of what the account's
    quota leaves unreserved. Rate: that concurrency over the mean invocation time (Little's law)
    and, for a heavy model, no more than its endpoint answers at full scale.
    """
    reserved = {k: s.lambda_settings.reserved_concurrency for k, s in functions if s.lambda_settings.reserved_concurrency}
    sharing = [k for k, _ in functions if k not in reserved]
    share = max(1, (api.lambda_concurrency - sum(reserved.values())) // max(1, len(sharing)))
    limits = {}
    for key, spec in functions:
        concurrency = reserved.get(key, share)
        rate = concurrency / api.mean_invocation_s
        if spec.target == "sagemaker" and spec.sagemaker is not None:
            endpoint = spec.sagemaker.max_instances * spec.sagemaker.target_invocations_per_instance
            rate = min(rate, endpoint / SAGEMAKER_METRIC_PERIOD_S)
        limits[key] = RouteLimits(max_batch=spec.serving.max_batch, concurrency=concurrency, rate=rate)
    return limits


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
    """The parsed models.toml (maas.manifest.Manifest); every model in it must be built."""
    staging_dir: Path
    """Where function assets and SageMaker archives are prepared (.cache/infra)."""
    layer_cache_dir: Path
    """Where built layers are kept between synths (.cache/layers)."""
    api: ModelApiProps = field(default_factory=ModelApiProps)
    alarms: AlarmTopicProps = field(default_factory=AlarmTopicProps)


class MaasStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, inputs: StackInputs, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.manifest = manifest = inputs.manifest
        root = manifest.root
        self.layers = RuntimeLayers(self, "Layers", RuntimeLayersProps(
            shared_root=root / "shared", cache_dir=inputs.layer_cache_dir,
        ))
        limits = route_limits(served_functions(manifest), inputs.api)
        self.model_api = ModelApi(
            self, "ModelApi", inputs.api,
            models=[ApiModel(s.name, s.task, limits[s.name], s.versions, s.side_by_side,
                             {v: limits[f"{s.name}@{v}"] for v in s.versions if s.side_by_side})
                    for s in manifest.models],
            default=default_model(manifest.models),
            tenants=manifest.tenants,
        )
        self.alarm_topic = AlarmTopic(self, "Alarms", inputs.alarms)
        self.models: dict[str, DeployedModel] = {}
        """Each model's live function (and endpoint)."""
        self.versions: dict[tuple[str, str], DeployedModel] = {}
        """(model, version) -> the function of each kept version of a model that keeps several."""
        self.artifacts: ArtifactBucket | None = None
        invoke, pinned_route = route(INVOKE), route(INVOKE_VERSION)
        trusted = trusted_keys(manifest)
        # Each model function refuses artifacts not signed by these keys (read from local files: no AWS call at synth).
        model_env = {**MODEL_FUNCTION_ENV, **({ENV_SIGNING_PUBLIC_KEYS: trusted.value()} if trusted else {})}

        for spec in manifest.models:
            cid = logical_name(spec.name)
            function, endpoint, asset, layer_names = self._model_function(spec, cid, inputs, model_env)
            self.model_api.add_model_routes(spec.name, function.alias)
            if not spec.side_by_side:
                self.model_api.add_version_routes(spec.name, spec.version, function.alias)
            path = invoke.render(name=spec.name)
            ModelMonitoring(self, f"{cid}Monitoring", ModelMonitoringProps(
                model_name=spec.name, api=self.model_api.api, route=invoke, alias=function.alias,
                alarm_topic=self.alarm_topic.topic, endpoint_name=endpoint.endpoint_name if endpoint else None,
            ))
            lam = spec.lambda_settings
            self.models[spec.name] = DeployedModel(
                spec.name, spec.target, spec.task, function, path, endpoint, asset,
                unzipped_bytes=folder_bytes(asset.path) + self.layers.unzipped_bytes(lam.architecture, layer_names),
            )
            CfnOutput(self, f"{cid}Route", value=f"{self.model_api.url.rstrip('/')}{path}",
                      description=f"{invoke.method} here to invoke {spec.name} ({spec.target})")
            # Side by side, every kept version (the live one too) has its own function: a pinned call
            # answers from its version even while the live function's canary moves `live`.
            for version in manifest.versions_of(spec.name) if spec.side_by_side else ():
                vid = f"{cid}V{version.version.replace('.', 'x')}"
                pinned, _, pinned_asset, _ = self._model_function(version, vid, inputs, model_env)
                self.model_api.add_version_routes(spec.name, version.version, pinned.alias)
                self.versions[(spec.name, version.version)] = DeployedModel(
                    spec.name, spec.target, spec.task, pinned, pinned_route.render(name=spec.name, version=version.version),
                    None, pinned_asset,
                    unzipped_bytes=folder_bytes(pinned_asset.path) + self.layers.unzipped_bytes(lam.architecture, layer_names),
                )

        default = self.default_model()
        self.model_api.add_shared_routes(self.models[default].function.alias)
        CfnOutput(self, "ApiUrl", value=self.model_api.url, description="The API's base URL (stage prod)")
        if self.model_api.api_key is not None:
            CfnOutput(self, "ApiKeyId", value=self.model_api.api_key.key_id,
                      description="aws apigateway get-api-key --include-value --api-key <id> gives the x-api-key value")
        for tenant, key in self.model_api.tenant_keys.items():
            # The key's id only: its value never enters the template, the outputs or a log.
            CfnOutput(self, f"TenantKeyId{logical_name(tenant)}", value=key.key_id,
                      description=f"tenant {tenant}: aws apigateway get-api-key --include-value --api-key <id> "
                                  "gives its x-api-key value")
        CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic.topic_arn,
                  description="Every model's alarms notify this SNS topic: subscribe your on-call to it")
        CfnOutput(self, "DefaultModel", value=default, description="The function answering the shared routes "
                  "(" + ", ".join(f"{s.method} {s.path}" for s in shared_routes()) + ")")

    def _model_function(self, spec, cid: str, inputs: StackInputs, model_env: dict):
        """The function serving one built version of a model (a heavy model: its endpoint and proxy):
        (function, endpoint or None, its asset, its layers' names)."""
        root = self.manifest.root
        folder = artifact_dir(root, spec.name, spec.version)
        lam = spec.lambda_settings
        env = {ENV_MODEL_NAME: spec.name, ENV_CATALOG_PATH: CATALOG_FILE,
               **self.model_api.tenant_environment(self.manifest.tenants, spec.name)}
        endpoint = None
        if spec.target == "sagemaker":
            served = stage_served_model(spec, folder, inputs.staging_dir)
            endpoint = HeavyModelEndpoint(self, f"{cid}Endpoint", HeavyModelEndpointProps(
                model_name=spec.name, version=spec.version, settings=spec.sagemaker, archive=served.archive,
            ))
            asset = stage_function(root, PROXY_HANDLER, spec.name, served.proxy_artifact, inputs.staging_dir)
            env[ENV_SAGEMAKER_ENDPOINT] = endpoint.endpoint_name
            env[ENV_MODEL_DIR] = PACKAGED_MODEL_DIR
            if endpoint.component is not None:
                env[ENV_SAGEMAKER_INFERENCE_COMPONENT] = endpoint.component_name
            layer_names = PROXY_LAYERS
        elif lam.artifact == "s3":
            asset = stage_function(root, MODEL_HANDLER, spec.name, None, inputs.staging_dir)
            env[ENV_MODEL_S3_URI] = self._artifact_bucket().uri_for(spec.name, spec.version)
            env.update(model_env)
            layer_names = MODEL_LAYERS
        else:
            asset = stage_function(root, MODEL_HANDLER, spec.name, folder, inputs.staging_dir)
            env[ENV_MODEL_DIR] = PACKAGED_MODEL_DIR
            env.update(model_env)
            layer_names = MODEL_LAYERS

        function = ModelFunction(self, f"{cid}Function", ModelFunctionProps(
            model_name=spec.name, version=spec.version, asset=asset,
            settings=proxy_settings(lam) if endpoint is not None else lam,
            layers=self.layers.layers_for(lam.architecture, layer_names), environment=env,
            description=f"maas {spec.name} {spec.version} ({spec.target}): {spec.description}",
            hook_code=root / FUNCTIONS_DIR / HOOK_HANDLER,
            hook_layers=self.layers.layers_for(lam.architecture, HOOK_LAYERS),
            version_checks=tuple(version_checks(spec.name, ModelCard.read(folder))),
        ))
        if endpoint is not None:
            endpoint.grant_invoke(function.role)
        elif lam.artifact == "s3":
            bucket = self._artifact_bucket()
            function.function.node.add_dependency(bucket.upload(spec.name, spec.version, folder))
            bucket.grant_read(function.role, spec.name, spec.version)
        for alarm in function.rollback_alarms:
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic.topic))
        return function, endpoint, asset, layer_names

    def default_model(self) -> str:
        """The model whose function answers the shared routes (see `default_model`)."""
        return self.model_api.default.name

    def _artifact_bucket(self) -> ArtifactBucket:
        if self.artifacts is None:
            self.artifacts = ArtifactBucket(self, "Artifacts")
        return self.artifacts
