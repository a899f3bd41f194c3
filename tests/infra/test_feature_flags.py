"""cdk.json carries the feature flags a fresh `cdk init` writes for this CDK version, the in-process
app uses them too, and with them a change in shared/ reaches every function's `live` alias.

Without @aws-cdk/aws-lambda:recognizeLayerVersion a new layer changes $LATEST but publishes no
version: the alias keeps the old code and the canary never runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from maas import layers as layer_builder

FLAG = "@aws-cdk/aws-lambda:recognizeLayerVersion"


def test_cdk_json_has_the_flags_cdk_init_writes(repo_root, tmp_path):
    cdk = repo_root / "node_modules" / ".bin" / "cdk"
    if not cdk.exists():
        pytest.skip("the CDK CLI is not installed: run `npm ci` (package.json pins aws-cdk)")
    env = os.environ | {"JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "NODE_NO_WARNINGS": "1",
                        "CDK_DISABLE_VERSION_CHECK": "1", "CDK_CLI_NOTICES": "false"}
    # A fresh project from the pinned CLI (--generate-only: no git, no virtualenv, no network).
    result = subprocess.run([str(cdk), "init", "app", "--language", "python", "--generate-only"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    fresh = json.loads((tmp_path / "cdk.json").read_text())["context"]
    ours = json.loads((repo_root / "cdk.json").read_text())["context"]
    assert ours == fresh
    assert ours[FLAG] is True and len(ours) >= 80


def test_the_in_process_app_synthesizes_with_cdk_jsons_flags(synth, repo_root):
    flags = json.loads((repo_root / "cdk.json").read_text())["context"]
    for key, value in flags.items():
        assert synth.app.node.try_get_context(key) == value, key


def test_one_changed_line_in_shared_publishes_a_new_version_of_every_function(synth, artifacts, copy_project,
                                                                             synthesizer, tmp_path, monkeypatch, model_functions):
    # GIVEN the project with one line of shared/maas_api changed (every function has the api layer)
    root = copy_project(tmp_path / "project", artifacts.root, (artifacts.root / "models.toml").read_text(),
                        copy_shared=True)
    constants = root / "shared" / "maas_api" / "constants.py"
    text = constants.read_text()
    assert 'JSON = "application/json"\n' in text
    constants.write_text(text.replace('JSON = "application/json"\n', 'JSON = "application/json"  # changed\n'))
    # The layer is rebuilt for real from the changed code, except that pip's install (the network
    # part) is replaced by a copy of what it installed for the current layer.
    built = {name: b for (name, _arch), b in synth.stack.layers.built.items()}

    def installed_before(requirements, target, dest):
        spec = next(s for s in layer_builder.LAYERS.values() if tuple(s.requirements) == tuple(requirements))
        shutil.copytree(built[spec.name].content, dest,
                        ignore=shutil.ignore_patterns(*spec.local_packages))

    monkeypatch.setattr(layer_builder, "_pip_install", installed_before)
    cache = tmp_path / "layers"
    cache.mkdir()
    for entry in (artifacts.root / ".cache" / "layers").iterdir():  # unchanged layers come from the cache
        (cache / entry.name).symlink_to(entry.resolve())
    # WHEN synthesized again
    changed = synthesizer(root / "cdk.out", {"maas:manifest": str(root / "models.toml"), "maas:layerCache": str(cache)})

    # THEN only the api layer's content changed, and no function's own code ...
    def contents(result, kind, key):
        return {lid: json.dumps(r["Properties"][key]) for lid, r in result.of_type(kind).items()}

    before, after = contents(synth, "AWS::Lambda::LayerVersion", "Content"), contents(changed, "AWS::Lambda::LayerVersion", "Content")
    assert {lid for lid in before if before[lid] != after[lid]} == {lid for lid in before if "LayersApi" in lid}
    assert contents(synth, "AWS::Lambda::Function", "Code") == contents(changed, "AWS::Lambda::Function", "Code")
    # ... yet every function publishes a new version, and its live alias moves to it.
    old, new = set(synth.of_type("AWS::Lambda::Version")), set(changed.of_type("AWS::Lambda::Version"))
    assert len(old) == len(new) == model_functions
    assert old.isdisjoint(new), f"unchanged version ids: {sorted(old & new)}"
    for alias in changed.of_type("AWS::Lambda::Alias").values():
        assert alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0] in new
