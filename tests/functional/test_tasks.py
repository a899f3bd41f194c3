"""Tasks are units: each has a build half and a serving half, and a new one plugs into both registries.

The toy task here ("cls-embedding": the [CLS] token's vector instead of the mean) is defined in this
file alone and goes through the manifest, the build (export, parity, card) and the runtime without
any change to the kit's own source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maas.builder import build_models
from maas.builder.tasks import BUILD_TASKS, register as register_build
from maas.builder.tasks.embedding import Embedding
from maas.manifest import ManifestError, load_manifest, parse_manifest
from maas_runtime import load_model
from maas_runtime.tasks import TASKS, Prediction, embedding_json_values, l2_normalize
from maas_runtime.tasks import register as register_serving
from maas_runtime.tasks.embedding import EmbeddingTask


def test_build_and_serving_halves_cover_the_same_tasks():
    assert set(BUILD_TASKS) == set(TASKS) == {"embedding", "text-classification", "image-classification"}
    for name, task in BUILD_TASKS.items():
        assert task.name == name and TASKS[name].name == name
        assert task.inputs in ("text", "image")


def test_the_manifest_offers_exactly_the_registered_tasks():
    with pytest.raises(ManifestError) as caught:
        parse_manifest('[models.x]\nversion = "1.0.0"\ntask = "translation"\n', Path("/p/models.toml"))
    assert str(caught.value) == (
        "models.x.task: must be one of " + ", ".join(BUILD_TASKS) + ", got 'translation'"
    )


class ClsServing(EmbeddingTask):
    name = "cls-embedding"
    parameters = ("truncate",)

    def prepare(self, inputs, parameters):
        self.check_parameters(parameters)
        return self.encode(inputs, parameters)

    def finish(self, prepared, outputs):
        return Prediction(outputs=embedding_json_values(l2_normalize(outputs[0][:, 0])), usage=prepared.usage)


class ClsBuild(Embedding):
    name = "cls-embedding"

    def card_outputs(self, spec, *, config=None, reference=None, labels=None):
        return super().card_outputs(spec, config=config, reference=reference).__class__(
            type="embedding", dimensions=int(reference.shape[1]) if reference is not None else config.hidden_size,
            pooling="cls", normalize=True,
        )

    def reference(self, raw, feeds):
        return l2_normalize(raw[:, 0])


@pytest.fixture
def toy_task():
    register_serving(ClsServing)
    register_build(ClsBuild)
    yield
    TASKS.pop("cls-embedding")
    BUILD_TASKS.pop("cls-embedding")


def test_a_fourth_task_defined_outside_the_kit_builds_and_serves(toy_task, built, tmp_path):
    # GIVEN a manifest using the toy task on the fp32 MiniLM export
    fp32 = built["minilm-gpu"].folder
    (tmp_path / "models.toml").write_text(
        f"""
[models.cls]
version = "0.1.0"
task = "cls-embedding"
source = {{ type = "onnx", path = "{fp32 / 'model.onnx'}", tokenizer = "{fp32 / 'tokenizer.json'}" }}
optimization = {{ quantization = "none" }}
serving = {{ max_batch = 8, max_sequence_length = 64 }}
parity = {{ min_cosine = 0.999 }}
"""
    )
    # WHEN it is built and served
    (result,) = build_models(load_manifest(tmp_path / "models.toml"))
    model = load_model(result.folder)
    out = np.asarray(model.predict(["a cat on a mat", "stock prices fell"]).outputs)
    # THEN the card carries the task, parity was measured with its metric, and the answer is the CLS vector
    assert result.card.task == "cls-embedding" and result.card.outputs.pooling == "cls"
    assert result.card.parity.figures["min_cosine"] > 0.9999
    feeds = model.task.encode(["a cat on a mat", "stock prices fell"], {}).feeds
    hidden = model.engine.run(feeds)[0]
    np.testing.assert_allclose(out, l2_normalize(hidden[:, 0]), atol=1e-6)
    assert not np.allclose(out, np.asarray(load_model(fp32).predict(["a cat on a mat", "stock prices fell"]).outputs), atol=1e-2)


def test_a_deploy_only_change_reuses_the_built_artifact(built, tmp_path):
    # GIVEN the digits model built in a project of its own
    text = """
[models.digits]
version = "1.0.0"
task = "image-classification"
source = { type = "recipe", recipe = "digits" }
optimization = { quantization = "dynamic-int8" }
serving = { max_batch = 64 }
parity = { min_accuracy = 0.9 }
lambda = { memory_mb = 512 }
"""
    (tmp_path / "models.toml").write_text(text)
    (first,) = build_models(load_manifest(tmp_path / "models.toml"))
    # WHEN only deployment settings change (memory, concurrency, architecture, target, description)
    (tmp_path / "models.toml").write_text(
        text.replace("memory_mb = 512", 'memory_mb = 3008, reserved_concurrency = 5, architecture = "x86_64"')
        + 'description = "changed"\ntarget = "sagemaker"\nsagemaker = { instance_type = "ml.g6.xlarge" }\n'
    )
    (second,) = build_models(load_manifest(tmp_path / "models.toml"))
    # THEN the artifact is reused; a change to what shapes it (serving limits) rebuilds
    assert second.reused and second.card == first.card
    (tmp_path / "models.toml").write_text(text.replace("max_batch = 64", "max_batch = 65"))
    (third,) = build_models(load_manifest(tmp_path / "models.toml"))
    assert not third.reused and third.card.serving.max_batch == 65
