"""Our Kernel SHAP (maas_runtime.explain) against shap.KernelExplainer on the served digits model.

Both explain the same function (the served ONNX session through the task's own scaling, the
target class's logit) against the same background (the artifact's background.npz, checked equal
to shap.kmeans of the training images). With the same coalitions they must agree to rounding
(EXACT); with independent coalitions, to Monte Carlo noise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

with warnings.catch_warnings():  # shap's plotting colours use matplotlib calls it deprecates
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    import shap

from maas.recipes.digits import load_data
from maas_runtime import load_model
from maas_runtime.explain import coalitions, kernel_shap

EXACT = 1e-9
"""Logit units (logits here are of order 10). Measured: at most about 3e-14, float64 rounding."""
IMAGES = range(5)


@pytest.fixture(scope="module")
def setup(built):
    warnings.filterwarnings("ignore", module="shap")
    data = load_data()
    x_train = data.x_train.reshape(len(data.x_train), -1)
    x_test = data.x_test.reshape(len(data.x_test), -1)
    return load_model(built["digits"].folder), shap.kmeans(x_train, 10), x_test


def shap_values(game, summary, x, seed, nsamples="auto"):
    explainer = shap.KernelExplainer(game.f, summary)
    np.random.seed(seed)  # shap samples from numpy's global RandomState
    values = explainer.shap_values(x[None, :], nsamples=nsamples, l1_reg=False, silent=True)
    return np.asarray(values).reshape(-1), explainer


def test_the_shipped_background_is_shap_kmeans_of_the_training_images(setup):
    model, summary, _ = setup
    # THEN the same centres, and the same weights once normalized
    assert np.array_equal(model.task.background.x, summary.data)
    np.testing.assert_allclose(model.task.background.weights / model.task.background.weights.sum(),
                               summary.weights / summary.weights.sum(), rtol=1e-12)
    assert model.card.explain.background_rows == 10


@pytest.mark.parametrize("i", IMAGES)
def test_the_explain_answer_equals_shap_with_the_same_seed(setup, i):
    # GIVEN a held-out image, explained by the served model with seed i
    model, summary, x_test = setup
    x = x_test[i]
    answer = model.explain([x.reshape(8, 8).tolist()], {"seed": i}).outputs[0]
    # WHEN shap explains the same logit after np.random.seed(i), at its default budget
    game = model.task.explain_game(x.tolist(), {"target": answer["label"]}, "inputs[0]")
    values, explainer = shap_values(game, summary, x, seed=i)
    # THEN the two draw the same coalitions and give the same attributions
    n = explainer.nsamplesAdded
    drawn = coalitions(explainer.M, 2 * explainer.M + 2048, np.random.RandomState(i))
    assert np.array_equal(drawn.masks, explainer.maskMatrix[:n])
    np.testing.assert_allclose(drawn.weights, explainer.kernelWeights[:n], rtol=1e-12, atol=0)
    ours = np.asarray(answer["attributions"]).reshape(-1)
    assert np.abs(ours - values).max() <= EXACT
    assert answer["method"]["coalitions"] == n and answer["method"]["players"] == explainer.M
    # and both satisfy efficiency: the attributions add up to f(x) - E[f]
    assert abs(ours.sum() - (answer["value"] - answer["base_value"])) <= EXACT
    assert abs(answer["value"] - float(explainer.fx[0])) <= EXACT
    assert abs(answer["base_value"] - float(explainer.fnull[0])) <= EXACT


@pytest.mark.parametrize("i", IMAGES)
def test_shaps_own_coalitions_give_the_same_attributions(setup, i):
    """Independent of the sampler: shap's masks and kernel weights, fed to our estimator."""
    model, summary, x_test = setup
    x = x_test[i]
    game = model.task.explain_game(x.tolist(), {"target": str((i * 3) % 10)}, "inputs[0]")  # not always the top class
    values, explainer = shap_values(game, summary, x, seed=100 + i)
    n = explainer.nsamplesAdded
    ours = kernel_shap(game.f, game.x, game.background, game.weights,
                       masks=explainer.maskMatrix[:n], kernel_weights=explainer.kernelWeights[:n])
    assert ours.players == len(explainer.varyingInds)
    assert np.abs(ours.phi - values).max() <= EXACT
    fixed = np.setdiff1d(np.arange(64), explainer.varyingInds)
    assert np.all(ours.phi[fixed] == 0) and len(fixed) > 0  # border pixels 0 in every background row


@pytest.mark.parametrize("i", IMAGES)
def test_independent_samples_agree_to_monte_carlo_noise(setup, i):
    """Different random coalitions, 2**13 each. Bounds: about twice the spread measured between two
    shap runs with different seeds at this budget (corr >= 0.9997, relative L2 <= 0.02 at 2**14)."""
    model, summary, x_test = setup
    x = x_test[i]
    answer = model.explain([x.tolist()], {"seed": 1000 + i, "coalitions": 2**13}).outputs[0]
    game = model.task.explain_game(x.tolist(), {"target": answer["label"]}, "inputs[0]")
    values, _ = shap_values(game, summary, x, seed=2000 + i, nsamples=2**13)
    ours = np.asarray(answer["attributions"]).reshape(-1)
    assert np.corrcoef(ours, values)[0, 1] >= 0.995
    assert np.linalg.norm(ours - values) / np.linalg.norm(values) <= 0.06
