"""Versions side by side in the manifest: the forms a user writes, what each version inherits, and
every mistake named by model, version and key."""

from pathlib import Path

import pytest

from maas.manifest import ManifestError, parse_manifest

DIGITS = """
[models.digits]
live = "1.0.0"
task = "image-classification"
source = { type = "recipe", recipe = "digits" }
optimization = { quantization = "auto", pruning_sparsity = 0.5 }
serving = { max_batch = 64 }
parity = { min_accuracy = 0.95 }
lambda = { memory_mb = 512 }

[models.digits.versions."1.0.0"]

[models.digits.versions."1.1.0"]
optimization = { pruning_sparsity = 0.3 }
"""


def parse(text: str):
    return parse_manifest(text, Path("/project/models.toml"))


def test_version_tables_change_only_the_keys_they_name():
    manifest = parse(DIGITS)
    (live,) = manifest.models
    assert (live.version, live.live, live.versions, live.side_by_side) == ("1.0.0", True, ("1.0.0", "1.1.0"), True)
    old, new = manifest.versions_of("digits")
    assert (old.version, old.live, old.optimization.pruning_sparsity) == ("1.0.0", True, 0.5)
    assert (new.version, new.live, new.optimization.pruning_sparsity) == ("1.1.0", False, 0.3)
    # what the version's table does not name comes from the model's table, defaults included
    assert new.optimization.quantization == "auto" and new.serving.max_batch == 64
    assert new.lambda_settings.memory_mb == 512 and new.lambda_settings.timeout_s == 15
    assert [(s.name, s.version) for s in manifest.artifacts()] == [("digits", "1.0.0"), ("digits", "1.1.0")]
    # each version's artifact is its own: the build cache key differs where the settings do
    assert old.artifact_settings() != new.artifact_settings()


def test_a_list_of_versions_shares_every_setting():
    manifest = parse(DIGITS.split("\n[models.digits.versions")[0].replace('live = "1.0.0"', 'versions = ["1.0.0", "2.0.0"]\nlive = "2.0.0"'))
    live, = manifest.models
    assert live.version == "2.0.0" and live.side_by_side
    assert [v.version for v in manifest.versions_of("digits")] == ["2.0.0", "1.0.0"]


def test_the_single_version_form_is_unchanged():
    manifest = parse(DIGITS.split("\n[models.digits.versions")[0].replace('live = "1.0.0"', 'version = "3.1.4"'))
    (model,) = manifest.models
    assert (model.version, model.versions, model.live, model.side_by_side) == ("3.1.4", ("3.1.4",), True, False)
    assert manifest.artifacts() == [model]


def test_the_shipped_manifest_keeps_two_digits_versions(manifest):
    versions = {v.version: v for v in manifest.versions_of("digits")}
    assert set(versions) == {"1.0.0", "1.1.0"} and manifest.get("digits").version == "1.0.0"
    assert versions["1.0.0"].optimization.pruning_sparsity != versions["1.1.0"].optimization.pruning_sparsity


@pytest.mark.parametrize("change, message", [
    (('live = "1.0.0"', 'live = "1.0.0"\nversion = "1.0.0"'), "models.digits.version: give `version` (one) or `versions`"),
    (('live = "1.0.0"', 'live = "9.9.9"'), "models.digits.live: must be one of the versions (1.0.0, 1.1.0), got '9.9.9'"),
    (('live = "1.0.0"', ''), "models.digits.live: missing required key"),
    (('[models.digits.versions."1.1.0"]', '[models.digits.versions."1.1"]'), "models.digits.versions: '1.1' is not a version"),
    (("optimization = { pruning_sparsity = 0.3 }", "optimization = { pruning_sparsity = 3 }"),
     "models.digits.versions.1.1.0.optimization.pruning_sparsity: must be a number in [0.0, 0.95], got 3"),
    (("optimization = { pruning_sparsity = 0.3 }", "colour = 1"), "models.digits.versions.1.1.0: unknown key(s) 'colour'"),
    (("optimization = { pruning_sparsity = 0.3 }", 'task = "embedding"'), "models.digits.versions.1.1.0: task cannot differ"),
    (("serving = { max_batch = 64 }", "serving = { max_batch = 0 }"), "models.digits.serving.max_batch: must be an integer"),
])
def test_mistakes_name_the_model_version_and_key(change, message):
    with pytest.raises(ManifestError) as caught:
        parse(DIGITS.replace(*change))
    assert message in str(caught.value)


def test_live_without_versions_and_heavy_models_with_versions_are_refused():
    single = DIGITS.split("\n[models.digits.versions")[0]
    with pytest.raises(ManifestError, match="models.digits.live: only a model with `versions`"):
        parse(single.replace('live = "1.0.0"', 'version = "1.0.0"\nlive = "1.0.0"'))
    with pytest.raises(ManifestError, match="models.digits.versions: versions side by side are for Lambda models"):
        parse(DIGITS.replace('task = "image-classification"', 'task = "image-classification"\ntarget = "sagemaker"'))
    with pytest.raises(ManifestError, match="listed twice"):
        parse(single.replace('live = "1.0.0"', 'versions = ["1.0.0", "1.0.0"]\nlive = "1.0.0"'))
