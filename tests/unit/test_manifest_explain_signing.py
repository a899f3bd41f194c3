"""The manifest's explain tables (their defaults are the task's) and its top-level [signing] table."""

from pathlib import Path

import pytest

from maas.manifest import ManifestError, parse_manifest

IMAGE = """
[models.pics]
version = "1.0.0"
task = "image-classification"
source = { type = "recipe", recipe = "digits" }
parity = { min_accuracy = 0.9 }
"""
TEXT = """
[models.words]
version = "1.0.0"
task = "text-classification"
source = { type = "huggingface", path = "m" }
serving = { max_batch = 8, max_sequence_length = 64 }
parity = { min_accuracy = 0.9 }
"""


def parse(text: str):
    return parse_manifest(text, Path("/project/models.toml"))


def test_explanations_are_on_by_default_with_limits_by_task():
    (image,) = parse(IMAGE).models
    (text,) = parse(TEXT).models
    assert image.explain.enabled and image.explain.coalitions == "auto" and image.explain.max_inputs == 1
    assert (image.explain.max_coalitions, image.explain.max_evaluations, image.explain.background_size) == (8192, 100_000, 10)
    assert (text.explain.max_coalitions, text.explain.max_evaluations) == (512, 1024)
    assert not hasattr(text.explain, "background_size")
    # they shape the artifact (the card's limits, the background): part of the build cache key
    assert image.artifact_settings()["explain"]["background_size"] == 10


@pytest.mark.parametrize("table, message", [
    ("{ coalitions = 9000 }", "models.pics.explain.coalitions: must be at most max_coalitions (8192), got 9000"),
    ("{ coalitions = 8 }", "models.pics.explain.coalitions: must be 'auto' or an integer in [16, 1000000], got 8"),
    ('{ coalitions = "all" }', "models.pics.explain.coalitions: must be 'auto' or an integer"),
    ("{ max_inputs = 0 }", "models.pics.explain.max_inputs: must be an integer in [1, 16], got 0"),
    ("{ enabled = 1 }", "models.pics.explain.enabled: must be true or false, got 1"),
    ("{ background_size = 1000 }", "models.pics.explain.background_size: must be an integer in [1, 100]"),
    ("{ samples = 10 }", "models.pics.explain: unknown key(s) 'samples'"),
    ('"yes"', "models.pics.explain: must be a table"),
])
def test_bad_explain_tables_are_named(table, message):
    with pytest.raises(ManifestError) as err:
        parse(IMAGE + f"explain = {table}\n")
    assert message in str(err.value)


def test_a_text_model_has_no_background():
    with pytest.raises(ManifestError, match=r"models.words.explain: unknown key\(s\) 'background_size'"):
        parse(TEXT + "explain = { background_size = 4 }\n")


def test_signing_is_off_unless_configured():
    manifest = parse(IMAGE)
    assert manifest.signing.key is None and manifest.signing.public_keys == ()
    assert manifest.models[0].artifact_settings().keys() >= {"explain"} and "signing" not in manifest.models[0].artifact_settings()


def test_signing_paths_resolve_against_the_manifest():
    manifest = parse('[signing]\nkey = "keys/a.key"\npublic_keys = ["keys/a.pub.pem", "/etc/b.pub.pem"]\n' + IMAGE)
    assert manifest.signing.key_path(Path("/project")) == Path("/project/keys/a.key")
    assert manifest.signing.public_key_paths(Path("/project")) == [Path("/project/keys/a.pub.pem"), Path("/etc/b.pub.pem")]
    kms = parse('[signing]\nkey = "kms:arn:aws:kms:eu-west-1:1:key/x"\npublic_keys = ["k.pub.pem"]\n' + IMAGE)
    assert kms.signing.key_path(Path("/project")) is None


@pytest.mark.parametrize("table, message", [
    ('key = "keys/a.key"', "signing.public_keys: missing required key when signing.key is set"),
    ('key = "kms:"\npublic_keys = ["a.pub.pem"]', 'signing.key: "kms:" must be followed by the KMS key ARN'),
    ("public_keys = \"a.pub.pem\"", "signing.public_keys"),
    ('keys = ["a"]', "signing: unknown key(s) 'keys'"),
])
def test_bad_signing_tables_are_named(table, message):
    with pytest.raises(ManifestError) as err:
        parse(f"[signing]\n{table}\n" + IMAGE)
    assert message in str(err.value)
