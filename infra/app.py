"""The CDK app: `npx cdk synth` (cdk.json runs `.venv/bin/python -m infra.app`).

Reads the manifest (context `maas:manifest`, default models.toml at the repository root) and the
build output, stops with a clear message when a model has not been built, composes MaasStack,
runs cdk-nag's AwsSolutions checks on everything and marks the linters' listed exceptions
(infra/lint.py).

The context starts from cdk.json's `context` (the feature flags `cdk init` writes for this CDK
version), so an in-process `create_app()` synthesizes with the very flags `cdk synth` uses; a
context passed in (or given with `cdk -c`) wins over them.

Context keys: maas:manifest, maas:stackName (default "Maas"), maas:sagemakerImage (the serving
image for heavy models without `sagemaker.image_uri`), maas:layerCache (default .cache/layers),
maas:staging (default .cache/infra), maas:rateLimit / maas:burstLimit / maas:quotaPerDay (default:
ModelApiProps), maas:lambdaConcurrency (the account's Lambda concurrency the functions share,
default ModelApiProps), maas:alarmEmail (subscribed to the alarm topic),
maas:apiGatewayCloudWatchRole (create the region's API Gateway logging role, see ModelApi),
maas:account / maas:region (pin the stack to an environment; by default it is environment-agnostic:
the template names no account or region and deploys wherever the credentials point).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from maas.manifest import ManifestError, load_manifest

from .alarm_topic import AlarmTopicProps
from .lint import LintExceptions, load_exceptions
from .model_api import ModelApiProps
from .stack import MaasStack, StackInputs
from .staging import NotBuiltError, check_built

REPO = Path(__file__).resolve().parents[1]
CDK_JSON = REPO / "cdk.json"
DEFAULT_STACK = "Maas"


def cdk_json_context(path: Path = CDK_JSON) -> dict:
    """cdk.json's `context`: the feature flags (and any maas:* keys) the CLI would pass."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")).get("context") or {})
    except FileNotFoundError:
        return {}


def environment(app: cdk.App) -> cdk.Environment | None:
    """The account/region from maas:account / maas:region, else None (environment-agnostic).

    Not CDK_DEFAULT_ACCOUNT/REGION: the CLI always sets the region (us-east-1 when no AWS
    configuration names one), which would bake a region into every ARN and asset bucket of an
    assembly built in CI and deployed elsewhere with `cdk deploy --app cdk.out`.
    """
    account = app.node.try_get_context("maas:account")
    region = app.node.try_get_context("maas:region")
    if not (account or region):
        return None
    return cdk.Environment(account=str(account) if account else None, region=str(region) if region else None)


def _path(app: cdk.App, key: str, default: Path, root: Path) -> Path:
    value = app.node.try_get_context(key)
    path = Path(value) if value else default
    return path if path.is_absolute() else root / path


def create_app(context: dict | None = None, outdir: str | None = None) -> tuple[cdk.App, MaasStack]:
    """The app and its one stack; raises NotBuiltError / ManifestError with a message for humans."""
    app = cdk.App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    manifest_path = _path(app, "maas:manifest", REPO / "models.toml", Path.cwd())
    manifest = load_manifest(manifest_path)
    root = manifest.root
    check_built(manifest)
    api = ModelApiProps(
        rate_limit=float(app.node.try_get_context("maas:rateLimit") or ModelApiProps.rate_limit),
        burst_limit=int(app.node.try_get_context("maas:burstLimit") or ModelApiProps.burst_limit),
        quota_per_day=int(app.node.try_get_context("maas:quotaPerDay") or ModelApiProps.quota_per_day),
        lambda_concurrency=int(app.node.try_get_context("maas:lambdaConcurrency") or ModelApiProps.lambda_concurrency),
        cloud_watch_role=_flag(app.node.try_get_context("maas:apiGatewayCloudWatchRole")),
    )
    stack = MaasStack(
        app,
        app.node.try_get_context("maas:stackName") or DEFAULT_STACK,
        inputs=StackInputs(
            manifest=manifest,
            staging_dir=_path(app, "maas:staging", Path(".cache") / "infra", root),
            layer_cache_dir=_path(app, "maas:layerCache", Path(".cache") / "layers", root),
            api=api,
            alarms=AlarmTopicProps(email=app.node.try_get_context("maas:alarmEmail")),
        ),
        description="maas: per-model Lambda functions, GPU SageMaker endpoints and one API Gateway",
        env=environment(app),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    cdk.Aspects.of(app).add(LintExceptions(load_exceptions()))
    return app, stack


def _flag(value) -> bool:
    """A context flag: `-c key=true` arrives as the string "true"."""
    return value is True or str(value).strip().lower() in ("1", "true", "yes")


def main() -> int:
    try:
        app, _ = create_app()
    except (NotBuiltError, ManifestError) as exc:
        print(f"\nmaas: {exc}\n", file=sys.stderr)
        return 1
    app.synth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
