"""Fixtures for the infrastructure tests: the demo models' artifacts and one synth per session."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def missing_artifacts(manifest) -> list[str]:
    from maas.paths import artifact_dir

    missing = [f"{s.name} {s.version}" for s in manifest.models
               if not (artifact_dir(manifest.root, s.name, s.version) / "card.json").is_file()]
    if not (manifest.root / "build" / "catalog.json").is_file():
        missing.append("build/catalog.json")
    return missing


@pytest.fixture(scope="session")
def model_functions(manifest) -> int:
    """How many model functions the stack makes of the shipped manifest: one per model, one more per
    kept version of a model keeping several (each with its pre-traffic hook and its live alias)."""
    return sum(1 + (len(s.versions) if s.side_by_side else 0) for s in manifest.models)


@pytest.fixture(scope="session")
def artifacts(manifest):
    """The shipped models' build output; skips (with the command to run) when build/ lacks it."""
    missing = missing_artifacts(manifest)
    if missing:
        pytest.skip(f"models not built ({', '.join(missing)}): run `.venv/bin/maas build` first")
    return manifest


@dataclass
class Synth:
    app: object
    stack: object
    outdir: Path
    template: dict
    seconds: float

    @property
    def resources(self) -> dict:
        return self.template["Resources"]

    def of_type(self, kind: str) -> dict:
        return {k: v for k, v in self.resources.items() if v["Type"] == kind}


def synthesize(outdir: Path, context: dict | None = None) -> Synth:
    from infra.app import create_app

    started = time.perf_counter()
    app, stack = create_app(context=context, outdir=str(outdir))
    assembly = app.synth()
    seconds = time.perf_counter() - started
    template = assembly.get_stack_by_name(stack.stack_name).template
    return Synth(app, stack, outdir, json.loads(json.dumps(template)), seconds)


@pytest.fixture(scope="session")
def synthesizer():
    """synthesize(outdir, context) for tests that need a synth of their own manifest."""
    return synthesize


@pytest.fixture(scope="session")
def synth(artifacts, tmp_path_factory) -> Synth:
    """The shipped manifest synthesized once, in-process (cdk-nag runs: violations fail the synth)."""
    result = synthesize(tmp_path_factory.mktemp("cdk-out"))
    print(f"\nin-process synth: {result.seconds:.1f} s")
    return result


def project_copy(root: Path, repo: Path, manifest_text: str, copy_shared: bool = False) -> Path:
    """A project folder beside the repository's: its own models.toml, the repository's build/ and
    functions/, and shared/ linked (or copied, to be changed)."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    for name in ("build", "functions"):
        (root / name).symlink_to(repo / name)
    if copy_shared:
        shutil.copytree(repo / "shared", root / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        (root / "shared").symlink_to(repo / "shared")
    (root / "models.toml").write_text(manifest_text)
    return root


@pytest.fixture(scope="session")
def copy_project():
    """project_copy(root, repo, manifest_text, copy_shared=False) for tests that change the project."""
    return project_copy


VARIANT_CHANGES = (
    # minilm moves to SageMaker
    ('task = "embedding"\ntarget = "lambda"', 'task = "embedding"\ntarget = "sagemaker"'),
    # digits: an x86_64 function with its artifact in S3, reserved concurrency (the opt-in) and
    # Lambda's own traces only
    ('lambda = { architecture = "arm64", memory_mb = 512',
     'lambda = { architecture = "x86_64", artifact = "s3", reserved_concurrency = 5, tracing = "service", memory_mb = 512'),
    # minilm-gpu scales to zero (an inference component)
    ("min_instances = 1, max_instances = 4", "min_instances = 0, max_instances = 4"),
)
VARIANT_TENANTS = """
[tenants.acme]
models = ["*"]
rate = 20
burst = 40
quota = 100000

[tenants.globex]
models = ["digits"]
rate = 5
burst = 10
quota = 1000
quota_period = "month"
"""
"""Two customers of the variant's API, each with its own key, usage plan and models."""


@pytest.fixture(scope="session")
def variant(artifacts, tmp_path_factory) -> Synth:
    """The shipped manifest changed without touching code: minilm on SageMaker; digits on x86_64,
    its artifact in S3, 5 reserved concurrent executions and Lambda's traces only; minilm-gpu scaled
    to zero; two tenants."""
    text = (artifacts.root / "models.toml").read_text()
    for old, new in VARIANT_CHANGES:
        assert old in text, old
        text = text.replace(old, new, 1)
    text += VARIANT_TENANTS
    root = project_copy(tmp_path_factory.mktemp("variant"), artifacts.root, text)
    layer_cache = artifacts.root / ".cache" / "layers"
    return synthesize(root / "cdk.out", {"maas:manifest": str(root / "models.toml"), "maas:layerCache": str(layer_cache)})
