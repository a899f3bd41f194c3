"""The manifest parser: the shipped file parses, and every kind of mistake is named precisely."""

from pathlib import Path

import pytest

from maas.manifest import ManifestError, parse_manifest

GOOD = """
[models.tiny]
version = "1.2.3"
task = "embedding"
source = { type = "huggingface", path = "models/tiny" }
serving = { max_batch = 8, max_sequence_length = 64 }
parity = { min_cosine = 0.98 }
"""


def parse(text: str):
    return parse_manifest(text, Path("/project/models.toml"))


def test_shipped_manifest_has_the_demo_models(manifest):
    names = {m.name: m for m in manifest.models}
    assert {"minilm", "digits", "minilm-gpu"} <= set(names)
    assert names["minilm"].task == "embedding" and names["minilm"].target == "lambda"
    assert names["digits"].task == "image-classification"
    assert names["minilm-gpu"].target == "sagemaker"
    assert names["minilm-gpu"].sagemaker.instance_type == "ml.g5.xlarge"
    assert names["minilm"].serving.max_sequence_length == 256


def test_defaults_fill_optional_tables():
    (model,) = parse(GOOD).models
    assert model.target == "lambda"
    assert model.optimization.quantization == "auto"
    assert model.lambda_settings.architecture == "arm64"
    assert model.sagemaker is None


@pytest.mark.parametrize(
    "change, message",
    [
        (('version = "1.2.3"', ""), "models.tiny.version: missing required key"),
        (('version = "1.2.3"', 'version = "one"'), "models.tiny.version"),
        (('task = "embedding"', 'task = "translation"'), "models.tiny.task: must be one of"),
        (('task = "embedding"', 'task = "embedding"\ncolour = "blue"'), "models.tiny: unknown key(s) 'colour'"),
        (("max_batch = 8", "max_batch = 0"), "models.tiny.serving.max_batch: must be an integer in [1, 1024], got 0"),
        (("max_batch = 8", 'max_batch = "8"'), "models.tiny.serving.max_batch"),
        (("max_batch = 8, max_sequence_length = 64", "max_batch = 8"), "models.tiny.serving.max_sequence_length: missing"),
        (("min_cosine = 0.98", "min_cosine = 1.5"), "models.tiny.parity.min_cosine: must be a number in [0.0, 1.0]"),
        (("min_cosine = 0.98", "min_accuracy = 0.9"), "models.tiny.parity: unknown key(s) 'min_accuracy'"),
        (('type = "huggingface"', 'type = "s3"'), "models.tiny.source.type: must be one of"),
        (('type = "huggingface", path = "models/tiny"', 'type = "huggingface"'), "models.tiny.source.path: missing"),
        (("[models.tiny]", "[models.Tiny_Model]"), "models.Tiny_Model: model names must match"),
        (("parity = { min_cosine = 0.98 }", 'parity = { min_cosine = 0.98 }\noptimization = { pruning_sparsity = 2 }'),
         "models.tiny.optimization.pruning_sparsity: must be a number in [0.0, 0.95], got 2"),
        (("parity = { min_cosine = 0.98 }", 'parity = { min_cosine = 0.98 }\noptimization = { quantization = "int3" }'),
         "models.tiny.optimization.quantization: must be one of"),
        (("parity = { min_cosine = 0.98 }", 'parity = { min_cosine = 0.98 }\ntarget = "ec2"'), "models.tiny.target: must be one of"),
        (("parity = { min_cosine = 0.98 }", "parity = { min_cosine = 0.98 }\nlambda = { snap_start = true, provisioned_concurrency = 2 }"),
         "models.tiny.lambda.snap_start: AWS does not allow SnapStart together with provisioned_concurrency"),
        (("parity = { min_cosine = 0.98 }", 'parity = { min_cosine = 0.98 }\nlambda = { architecture = "sparc" }'),
         "models.tiny.lambda.architecture: must be one of arm64, x86_64"),
        (("parity = { min_cosine = 0.98 }", 'parity = { min_cosine = 0.98 }\nlambda = { tracing = "off" }'),
         "models.tiny.lambda.tracing: must be one of handler, service"),
        (("parity = { min_cosine = 0.98 }", "parity = { min_cosine = 0.98 }\nsagemaker = { min_instances = 3, max_instances = 1 }"),
         "models.tiny.sagemaker.max_instances: must be >= min_instances"),
        (("parity = { min_cosine = 0.98 }", "parity = { min_cosine = 0.98 }\nsagemaker = { min_instances = -1 }"),
         "models.tiny.sagemaker.min_instances: must be an integer in [0, 100], got -1"),
        (("parity = { min_cosine = 0.98 }", 'parity = { min_cosine = 0.98 }\nsagemaker = { accelerator = "tensorrt-int8" }'),
         "models.tiny.sagemaker.accelerator: must be one of none, tensorrt-fp16"),
        (("parity = { min_cosine = 0.98 }", "parity = { min_cosine = 0.98 }\nsagemaker = { preferred_batch_sizes = [4, 16] }"),
         "models.tiny.sagemaker.preferred_batch_sizes: 16 is larger than serving.max_batch (8)"),
        (("parity = { min_cosine = 0.98 }", "parity = { min_cosine = 0.98 }\nsagemaker = { preferred_batch_sizes = [] }"),
         "models.tiny.sagemaker.preferred_batch_sizes: must be a non-empty list of integers in [1, 1024]"),
        (("parity = { min_cosine = 0.98 }", "parity = { min_cosine = 0.98 }\nsagemaker = { max_queue_delay_us = 2000000 }"),
         "models.tiny.sagemaker.max_queue_delay_us: must be an integer in [0, 1000000]"),
        (("parity = { min_cosine = 0.98 }", "parity = {}"), "models.tiny.parity.min_cosine: an embedding model needs"),
        (("parity = { min_cosine = 0.98 }", ""), "models.tiny.parity: missing required key"),
    ],
)
def test_bad_manifest_names_model_and_key(change, message):
    old, new = change
    assert old in GOOD
    with pytest.raises(ManifestError) as caught:
        parse(GOOD.replace(old, new, 1))
    assert message in str(caught.value)


def test_invalid_toml_and_empty_manifest():
    with pytest.raises(ManifestError, match="not valid TOML"):
        parse("[models.x\n")
    with pytest.raises(ManifestError, match="models: missing required key"):
        parse("")
    with pytest.raises(ManifestError, match=r"unknown key\(s\) 'extra'"):
        parse(GOOD + "\n[extra]\nx = 1\n")


def test_unknown_model_lookup_lists_known_names():
    with pytest.raises(ManifestError, match="unknown model 'nope'.*tiny"):
        parse(GOOD).get("nope")


def test_cli_reports_bad_manifest_with_exit_code(tmp_path, capsys):
    from maas.cli import main

    bad = tmp_path / "models.toml"
    bad.write_text(GOOD.replace("max_batch = 8", "max_batch = -1"))
    assert main(["--manifest", str(bad), "build"]) == 2
    assert "models.tiny.serving.max_batch" in capsys.readouterr().err


def test_sagemaker_settings_scale_to_zero_and_batching():
    spec = parse(GOOD.replace(
        "parity = { min_cosine = 0.98 }",
        'parity = { min_cosine = 0.98 }\ntarget = "sagemaker"\n'
        'sagemaker = { min_instances = 0, max_instances = 2, accelerator = "tensorrt-fp16", preferred_batch_sizes = [4, 8] }', 1,
    )).get("tiny")
    settings = spec.sagemaker
    assert (settings.min_instances, settings.max_instances, settings.accelerator) == (0, 2, "tensorrt-fp16")
    assert settings.preferred_batch_sizes == (4, 8) and settings.max_queue_delay_us == 2000
    # deployment-only settings: the artifact (and its cache key) does not depend on them
    assert "sagemaker" not in spec.artifact_settings()


def test_optimization_preference_and_the_new_schemes():
    spec = parse(GOOD).get("tiny")
    assert spec.optimization.prefer == "speed"
    spec = parse(GOOD.replace("parity =", 'optimization = { quantization = "smoothquant-int8", prefer = "size" }\nparity =')).get("tiny")
    assert (spec.optimization.quantization, spec.optimization.prefer) == ("smoothquant-int8", "size")
    with pytest.raises(ManifestError, match=r"models\.tiny\.optimization\.prefer: must be one of speed, size, got 'fast'"):
        parse(GOOD.replace("parity =", 'optimization = { prefer = "fast" }\nparity ='))


@pytest.mark.parametrize(
    ("edit", "reused"),
    [
        ('lambda = { memory_mb = 3008, architecture = "x86_64", reserved_concurrency = 5 }', True),
        ('description = "another description"\ntarget = "sagemaker"\nsagemaker = { instance_type = "ml.g5.2xlarge" }', True),
        ('optimization = { prefer = "size" }', False),
        ('optimization = { quantization = "smoothquant-int8" }', False),
    ],
)
def test_cache_key_follows_artifact_settings_only(tmp_path, edit, reused):
    from maas.builder.pipeline import cache_key

    # GIVEN the same model with a deploy-only or an artifact-shaping edit
    base = parse(GOOD).get("tiny")
    edited = parse(GOOD.replace("parity =", f"{edit}\nparity =")).get("tiny")
    # THEN only artifact-shaping edits change the build cache key
    assert (cache_key(base, tmp_path) == cache_key(edited, tmp_path)) is reused
