"""The runtime library on the real built artifacts: verification, limits, answers."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from maas_runtime import ArtifactError, InvalidInput, LimitExceeded, Model, load_model


@pytest.fixture(scope="module")
def minilm(built):
    return load_model(built["minilm"].folder)


@pytest.fixture(scope="module")
def digits(built):
    return load_model(built["digits"].folder)


def _copy(built, name, tmp_path):
    target = tmp_path / name
    shutil.copytree(built[name].folder, target)
    return target


def test_tampered_model_file_is_refused(built, tmp_path):
    folder = _copy(built, "digits", tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        Model(folder)


def test_the_session_runs_the_graph_file_as_it_was_checked(built, digits, tmp_path, monkeypatch):
    from maas.recipes import digits as recipe
    from maas_runtime import model as loading

    # GIVEN a digits artifact whose graph file is replaced by another model's (MiniLM) right after
    # the load has read and checked it
    folder = _copy(built, "digits", tmp_path)
    minilm_graph = built["minilm"].folder / "model.onnx"
    read_verified = loading.read_verified

    def read_then_replace(*args):
        data = read_verified(*args)
        shutil.copyfile(minilm_graph, folder / "model.onnx")
        return data

    monkeypatch.setattr(loading, "read_verified", read_then_replace)
    # WHEN the model loads
    model = Model(folder)
    # THEN its session is built from the bytes checked, not read again from the file now on disk
    assert (folder / "model.onnx").read_bytes() == minilm_graph.read_bytes()
    assert model.engine.input_names == digits.engine.input_names
    images = [img.tolist() for img in recipe.load_data().x_test[:20]]
    assert model.predict(images, {"top_k": 3}).outputs == digits.predict(images, {"top_k": 3}).outputs


def test_truncated_and_missing_files_are_refused(built, tmp_path):
    folder = _copy(built, "minilm", tmp_path)
    with open(folder / "model.onnx", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(ArtifactError, match="truncated or replaced"):
        Model(folder)
    shutil.copyfile(built["minilm"].folder / "model.onnx", folder / "model.onnx")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match="'tokenizer.json' is missing"):
        Model(folder)
    (folder / "card.json").unlink()
    with pytest.raises(ArtifactError, match="no model card"):
        Model(folder)


def test_card_with_path_tricks_is_refused(built, tmp_path):
    folder = _copy(built, "digits", tmp_path)
    card = json.loads((folder / "card.json").read_text())
    card["files"]["../../etc/passwd"] = {"sha256": "0" * 64, "bytes": 1}
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="unsafe file path"):
        Model(folder)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(schema_version=1), "schema version 1 is not the one this runtime reads"),
        (lambda c: c.update(schema_version=99), "schema version 99"),
        (lambda c: c.update(model_file="other.onnx"), "model_file 'other.onnx' is not among the verified files"),
        (lambda c: c.update(model_file="/etc/passwd"), "model_file '/etc/passwd' is not among the verified files"),
        (lambda c: c["inputs"].update(tokenizer="../tokenizer.json"), "inputs.tokenizer '../tokenizer.json' is not among"),
        (lambda c: c["serving"].update(max_batch="32"), "card.serving.max_batch must be an integer"),
        (lambda c: c.update(deploy={}), "unknown field(s) deploy"),
        (lambda c: c.pop("task"), "missing task"),
        (lambda c: c["inputs"].update(pad_to_multiple_of=0), "inputs.pad_to_multiple_of must be at least 1, got 0"),
        (lambda c: c["inputs"].update(pad_to_multiple_of=3),
         "inputs.max_sequence_length (256) is not a multiple of inputs.pad_to_multiple_of (3)"),
    ],
)
def test_card_is_typed_and_versioned(built, tmp_path, edit, message):
    # GIVEN a verified artifact whose card is then edited by hand
    folder = _copy(built, "minilm", tmp_path)
    card = json.loads((folder / "card.json").read_text())
    edit(card)
    (folder / "card.json").write_text(json.dumps(card))
    # THEN loading it is refused with a message that says what is wrong
    with pytest.raises(ArtifactError, match=re.escape(message)):
        Model(folder)


def test_one_model_per_process(built, minilm):
    assert load_model(built["minilm"].folder) is minilm


def test_embeddings_are_normalized_and_similar_texts_are_close(minilm):
    out = minilm.predict(["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply."])
    vectors = np.asarray(out.outputs)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert out.usage["batch_size"] == 3 and out.usage["input_tokens"] > 15


def test_serving_limits_and_bad_inputs(minilm, digits):
    with pytest.raises(LimitExceeded, match="at most 32"):
        minilm.predict(["x"] * 33)
    with pytest.raises(InvalidInput, match="must not be empty"):
        minilm.predict([])
    with pytest.raises(InvalidInput, match=r"inputs\[1\] must be a string"):
        minilm.predict(["ok", 5])
    with pytest.raises(InvalidInput, match="unknown parameter"):
        minilm.predict(["ok"], {"temperature": 1})
    with pytest.raises(LimitExceeded, match="longer than 256 tokens"):
        minilm.predict(["word " * 400], {"truncate": False})
    assert minilm.predict(["word " * 400]).usage["truncated_inputs"] == 1
    with pytest.raises(InvalidInput, match="8x8 nested rows or 64 values flat"):
        digits.predict([[1, 2, 3]])
    with pytest.raises(InvalidInput, match="from 0 to 16"):
        digits.predict([[[17] * 8] * 8])
    with pytest.raises(InvalidInput, match="from 0 to 16"):
        digits.predict([[[float("nan")] * 8] * 8])
    with pytest.raises(InvalidInput, match="must be a number, got str"):
        digits.predict([[["a"] * 8] * 8])
    with pytest.raises(InvalidInput, match="top_k"):
        digits.predict([[[0] * 8] * 8], {"top_k": 11})


def test_digits_classifies_held_out_images(digits):
    from maas.recipes import digits as recipe

    data = recipe.load_data()
    out = digits.predict([img.tolist() for img in data.x_test[:200]], {"top_k": 3})
    predicted = np.array([int(r[0]["label"]) for r in out.outputs])
    assert (predicted == data.y_test[:200]).mean() >= 0.95
    assert all(len(r) == 3 and r[0]["score"] >= r[1]["score"] >= r[2]["score"] for r in out.outputs)


def test_serving_imports_neither_torch_nor_transformers(built, repo_root):
    script = f"""
import json, sys
sys.path.insert(0, {str(repo_root / 'shared')!r})
from maas_runtime import load_model
e = load_model({str(built['minilm'].folder)!r}).predict(["does this need torch?"])
d = load_model({str(built['digits'].folder)!r}).predict([[[0] * 8] * 8])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnx', 'sklearn'))
print(json.dumps({{"dims": len(e.outputs[0]), "label": d.outputs[0][0]["label"], "heavy": heavy}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["dims"] == 384 and report["label"] in "0123456789"
    assert report["heavy"] == []


def test_length_aware_batching_answers_as_one_batch_would_in_request_order(minilm):
    """GIVEN requests of 32 real texts of mixed lengths (the bench's `mixed` stream)
    WHEN they run length-aware (sorted, cut into sub-batches each padded to its own longest)
    THEN every answer is the one-batch answer and the one-at-a-time answer of the text in its place."""
    from maas.bench.workload import mixed_texts, requests
    from maas_runtime.tasks.processing import BATCHING_POLICIES

    texts = mixed_texts(minilm.folder / minilm.card.inputs.tokenizer, count=96)
    task = minilm.task
    assert task.batching is BATCHING_POLICIES["min-cost"]
    for request in requests(texts, 32):
        prepared = task.prepare(request, {})
        assert len(prepared.parts) > 1  # this request really was cut
        multiple = minilm.card.inputs.pad_to_multiple_of  # as the build chose for its graph
        assert all(p.feeds["input_ids"].shape[1] % multiple == 0 for _, p in prepared.parts)
        assert sorted(np.concatenate([rows for rows, _ in prepared.parts]).tolist()) == list(range(32))
        answer = minilm.predict(request)
        default, task.batching = task.batching, BATCHING_POLICIES["one-batch"]
        try:
            padded = minilm.predict(request)
        finally:
            task.batching = default
        assert answer.usage == padded.usage
        np.testing.assert_allclose(np.array(answer.outputs), np.array(padded.outputs), atol=2e-5)
        alone = np.array([minilm.predict([text]).outputs[0] for text in request[:8]])
        np.testing.assert_allclose(np.array(answer.outputs[:8]), alone, atol=2e-5)

