"""The CDK app: `npx cdk synth` (cdk.json runs `.venv/bin/python -m infra.app`).

Reads the manifest (context `maas:manifest`, default models.toml at the repository root) and the
build output, stops with a clear message when a model has not been built, composes MaasStack and
runs cdk-nag's AwsSolutions checks on everything.

Context keys: maas:manifest, maas:stackName (default "Maas"), maas:sagemakerImage (the serving
image for heavy models without `sagemaker.image_uri`), maas:layerCache (default .cache/layers),
maas:staging (default .cache/infra), maas:rateLimit / maas:burstLimit / maas:quotaPerDay (default:
ModelApiProps), maas:alarmEmail (subscribed to the alarm topic).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from maas.manifest import ManifestError, load_manifest

from .alarm_topic import AlarmTopicProps
from .model_api import ModelApiProps
from .stack import MaasStack, StackInputs
from .staging import NotBuiltError, check_built

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STACK = "Maas"


def _path(app: cdk.App, key: str, default: Path, root: Path) -> Path:
    value = app.node.try_get_context(key)
    path = Path(value) if value else default
    return path if path.is_absolute() else root / path


def create_app(context: dict | None = None, outdir: str | None = None) -> tuple[cdk.App, MaasStack]:
    """The app and its one stack; raises NotBuiltError / ManifestError with a message for humans."""
    app = cdk.App(context=context or {}, outdir=outdir)
    manifest_path = _path(app, "maas:manifest", REPO / "models.toml", Path.cwd())
    manifest = load_manifest(manifest_path)
    root = manifest.root
    check_built(manifest)
    api = ModelApiProps(
        rate_limit=float(app.node.try_get_context("maas:rateLimit") or ModelApiProps.rate_limit),
        burst_limit=int(app.node.try_get_context("maas:burstLimit") or ModelApiProps.burst_limit),
        quota_per_day=int(app.node.try_get_context("maas:quotaPerDay") or ModelApiProps.quota_per_day),
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
        env=cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION")),
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, verbose=True))
    return app, stack


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
