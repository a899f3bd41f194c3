"""The real CLI, offline: `npx cdk synth` with the pinned aws-cdk from package.json."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest


def test_cdk_cli_synth_offline(artifacts, repo_root, tmp_path, model_functions):
    cdk = repo_root / "node_modules" / ".bin" / "cdk"
    if not cdk.exists():
        pytest.skip("the CDK CLI is not installed: run `npm ci` (package.json pins aws-cdk)")
    env = os.environ | {"JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "NODE_NO_WARNINGS": "1",
                        "CDK_DISABLE_VERSION_CHECK": "1", "CDK_CLI_NOTICES": "false"}
    started = time.perf_counter()
    result = subprocess.run(
        [str(cdk), "synth", "--quiet", "--no-notices", "--no-version-reporting", "-o", str(tmp_path / "cdk.out")],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=300,
    )
    print(f"\nnpx cdk synth: {time.perf_counter() - started:.1f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads((tmp_path / "cdk.out" / "Maas.template.json").read_text())
    kinds = [r["Type"] for r in template["Resources"].values()]
    # each model function (a model's, a kept version's), and its pre-traffic hook
    assert kinds.count("AWS::Lambda::Function") == 2 * model_functions
    assert kinds.count("AWS::SageMaker::Endpoint") == sum(s.target == "sagemaker" for s in artifacts.models)
    # The CLI hands the app a default region (us-east-1 without AWS configuration): none is baked in
    # (the Triton image's region -> account table lists every region, and is looked up at deploy time).
    template.pop("Mappings", None)
    assert "us-east-1" not in json.dumps(template) and "unknown-region" in (tmp_path / "cdk.out" / "manifest.json").read_text()
