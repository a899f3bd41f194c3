"""Explanations: Kernel SHAP (Lundberg & Lee, 2017) in numpy, computed with the served model.

Written here rather than imported: the shap library pulls in scipy, scikit-learn, numba and pandas,
which a Lambda layer cannot carry, and the algorithm is short. It follows the paper's definitions
and, on purpose, shap.KernelExplainer's choices, so that the tests can compare the two sample for
sample (tests/functional/test_explain_vs_shap.py):

* a feature equal to the input in every background row does not vary: it gets 0 and is not a
  player (M counts the players);
* the coalition budget defaults to shap's "auto", 2M + 2048, and never exceeds 2^M - 2 (the empty
  and full coalitions are pinned by the efficiency constraint instead of sampled);
* subset sizes come in complementary pairs (s, M - s), taken from the outside in: a pair whose
  share of the budget covers all its subsets is enumerated exactly, the rest is sampled in
  proportion to the Shapley kernel's mass, each draw together with its complement; a repeated
  draw adds 1 to its row's weight; sampled weights are scaled to the mass enumeration left;
* a coalition's value is the background-weighted mean of f over rows taking the input's values on
  the coalition and the background row's elsewhere, evaluated in one batch (coalition-major);
* attributions solve the weighted least squares with sum(phi) = f(x) - E[f] imposed exactly (the
  last player is eliminated), with no L1 feature selection (shap's ``l1_reg=False``).

The sampler draws from a seeded ``np.random.RandomState``: its stream is frozen across numpy
versions (NEP 19), so a seed gives the same answer everywhere, and the draws are exactly shap's
after ``np.random.seed(seed)``.

f is called three times per input, as shap calls it: the background, the input alone, then every
coalition row at once. That matters for int8 models quantized dynamically (per tensor, per batch):
their output for one row depends slightly on the rest of its batch, and efficiency holds against
f(x) computed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from .card import ExplainSpec
from .errors import ArtifactError, InvalidInput, LimitExceeded, NotSupported, quoted

DEFAULT_SEED = 0
"""A fixed default: the same request gets the same (cacheable) answer."""
MAX_SEED = 2**32 - 1
COMMON_PARAMETERS = ("coalitions", "seed")
"""Parameters every explainable task takes; each task adds its own (`Task.explain_parameters`)."""


def auto_coalitions(players: int) -> int:
    """shap's "auto" budget."""
    return 2 * players + 2048


def min_coalitions(players: int) -> int:
    """Fewer coalitions than this leave the least squares barely determined: a smaller request is
    raised to it (the answer says how many were used)."""
    return min(2**players - 2, 2 * players + 2) if players < 31 else 2 * players + 2


# --- the estimator ---------------------------------------------------------------------------------


@dataclass
class Coalitions:
    masks: np.ndarray
    """(S, M) 0/1 over the players."""
    weights: np.ndarray
    """(S,) Shapley-kernel weights; they sum to 1."""
    enumerated: int
    """The first `enumerated` rows came from exact enumeration, the rest were sampled."""


def coalitions(m: int, budget: int, rng: np.random.RandomState) -> Coalitions:
    """Coalitions of `m` >= 2 players and their kernel weights: at most `budget` rows."""
    if m < 2:
        raise ValueError("coalitions need at least two players")
    if m <= 30:
        budget = min(budget, 2**m - 2)
    half = m // 2  # sizes 1..ceil((m-1)/2), each standing for itself and m - size
    paired = (m - 1) // 2  # sizes whose complement has a different size
    mass = np.array([(m - 1.0) / (s * (m - s)) for s in range(1, half + 1)])
    mass[:paired] *= 2
    mass /= mass.sum()

    rows: list[np.ndarray] = []
    weights: list[float] = []
    left = budget
    share = mass.copy()
    full = 0
    for s in range(1, half + 1):
        count = math.comb(m, s) * (2 if s <= paired else 1)
        if left * share[s - 1] / count < 1.0 - 1e-8:
            break
        full += 1
        left -= count
        if share[s - 1] < 1.0:
            share /= 1.0 - share[s - 1]
        w = mass[s - 1] / math.comb(m, s) / (2 if s <= paired else 1)
        for on in combinations(range(m), s):
            z = np.zeros(m)
            z[list(on)] = 1.0
            rows.append(z)
            weights.append(w)
            if s <= paired:
                rows.append(1.0 - z)
                weights.append(w)
    enumerated = len(rows)

    left = budget - enumerated
    if full < half and left > 0:
        p = mass.copy()
        p[:paired] /= 2  # a paired draw yields two rows
        p = p[full:] / p[full:].sum()
        sizes = rng.choice(len(p), 4 * left, p=p) + full + 1
        seen: dict[bytes, int] = {}
        for s in sizes:
            if left <= 0:
                break
            z = np.zeros(m)
            z[rng.permutation(m)[:s]] = 1.0
            key = z.tobytes()
            at = seen.get(key)
            if at is None:
                seen[key] = len(rows)
                rows.append(z)
                weights.append(1.0)
                left -= 1
            else:
                weights[at] += 1.0
            if left > 0 and s <= paired:
                if at is None:
                    rows.append(1.0 - z)
                    weights.append(1.0)
                    left -= 1
                else:
                    weights[at + 1] += 1.0
        sampled = np.asarray(weights[enumerated:])
        weights[enumerated:] = list(sampled * (mass[full:].sum() / sampled.sum()))
    return Coalitions(np.asarray(rows, dtype=np.float64), np.asarray(weights, dtype=np.float64), enumerated)


def varying_features(x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Indices of the features where x differs from some background row (shap's np.allclose test)."""
    same = np.isclose(np.asarray(x, np.float64)[None, :], np.asarray(background, np.float64), rtol=1e-5, atol=1e-8)
    return np.nonzero(~np.all(same, axis=0))[0]


def coalition_rows(x: np.ndarray, background: np.ndarray, varying: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(S*N, P): for coalition k and background row j, x on the coalition's players, background[j] elsewhere."""
    s, n = len(masks), len(background)
    rows = np.broadcast_to(background, (s, n, background.shape[1])).copy()
    take = np.zeros((s, background.shape[1]), dtype=bool)
    take[:, varying] = masks > 0.5
    np.copyto(rows, np.broadcast_to(x, rows.shape), where=take[:, None, :])
    return rows.reshape(s * n, -1)


def solve(masks: np.ndarray, weights: np.ndarray, values: np.ndarray, v0: float, fx: float) -> np.ndarray:
    """Weighted least squares of the values on the masks with sum(phi) = fx - v0 exactly."""
    delta = fx - v0
    last = masks[:, -1]
    a = masks[:, :-1] - last[:, None]
    b = values - v0 - last * delta
    wa = weights[:, None] * a
    try:
        head = np.linalg.solve(a.T @ wa, wa.T @ b)
    except np.linalg.LinAlgError:
        root = np.sqrt(weights)[:, None]
        head = np.linalg.lstsq(root * a, root[:, 0] * b, rcond=None)[0]
    return np.append(head, delta - head.sum())


@dataclass
class Attribution:
    phi: np.ndarray
    """(P,) one attribution per feature: 0 where the feature does not vary."""
    base: float
    """E[f] over the (weighted) background."""
    value: float
    """f(x); sum(phi) == value - base."""
    players: int
    coalitions: int
    enumerated: int
    evaluations: int


def kernel_shap(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    background: np.ndarray,
    weights: np.ndarray | None = None,
    budget: int | None = None,
    rng: np.random.RandomState | None = None,
    masks: np.ndarray | None = None,
    kernel_weights: np.ndarray | None = None,
) -> Attribution:
    """Kernel SHAP values of the scalar function `f` (rows (n, P) -> (n,)) at `x` (P,).

    `masks` and `kernel_weights` (over the varying features) replace the sampler: the tests feed
    shap's own coalitions through them.
    """
    x = np.asarray(x).reshape(-1)
    background = np.asarray(background)
    n, p = background.shape
    w_bg = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
    base = float(w_bg @ np.asarray(f(background), np.float64).reshape(n))
    fx = float(np.asarray(f(x[None, :]), np.float64).reshape(-1)[0])
    varying = varying_features(x, background)
    m = len(varying)
    phi = np.zeros(p)
    if m < 2:
        phi[varying] = fx - base
        return Attribution(phi, base, fx, m, 0, 0, n + 1)
    enumerated = 0
    if masks is None:
        drawn = coalitions(m, budget or auto_coalitions(m), rng if rng is not None else np.random.RandomState(DEFAULT_SEED))
        masks, kernel_weights, enumerated = drawn.masks, drawn.weights, drawn.enumerated
    rows = coalition_rows(x, background, varying, masks)
    out = np.asarray(f(rows), np.float64).reshape(len(masks), n)
    phi[varying] = solve(masks, kernel_weights, out @ w_bg, base, fx)
    return Attribution(phi, base, fx, m, len(masks), enumerated, n + 1 + len(rows))


# --- what a task poses, and a request's limits -----------------------------------------------------


@dataclass
class Game:
    """One input's explanation, as its task poses it: players' values, background and the output explained."""

    x: np.ndarray
    """(P,) the input's feature values (pixels), or ones over its players (words)."""
    background: np.ndarray
    """(N, P) what an absent feature takes, row by row."""
    f: Callable[[np.ndarray], np.ndarray]
    """Rows (n, P) -> (n,) the explained output (the target's logit, a cosine)."""
    attributions: Callable[[np.ndarray], Any]
    """phi (P,) -> the answer's `attributions` (an 8x8 map, a list of words)."""
    output: str
    answer: dict = field(default_factory=dict)
    """What the answer says besides the attributions: the label and its probability, the cosine."""
    weights: np.ndarray | None = None
    usage: dict = field(default_factory=dict)
    row_tokens: int = 0
    """Text: tokens in each evaluated sequence (ExplainSpec.max_tokens bounds their sum); 0 otherwise."""


@dataclass(frozen=True)
class Background:
    x: np.ndarray
    weights: np.ndarray


def load_background(folder: Path, spec: ExplainSpec, features: int) -> Background:
    """The artifact's background rows (`x`, in request units) and their weights (`weights`)."""
    path = Path(folder) / spec.background
    try:
        with np.load(path, allow_pickle=False) as data:
            x, weights = np.asarray(data["x"], np.float32), np.asarray(data["weights"], np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"explanation background {spec.background!r} is unreadable: {exc.__class__.__name__}") from None
    if x.shape != (spec.background_rows, features) or weights.shape != (spec.background_rows,) or not np.all(weights > 0):
        raise ArtifactError(
            f"explanation background {spec.background!r} holds {x.shape} rows and {weights.shape} weights; "
            f"the card says {spec.background_rows} rows of {features} features with positive weights"
        )
    return Background(x, weights)


def _integral(value):
    """3.0 is the integer 3 in JSON (and in JSON Schema)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _seed(parameters: dict) -> int:
    seed = _integral(parameters.get("seed", DEFAULT_SEED))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"parameters.seed must be an integer from 0 to {MAX_SEED}")
    return seed


def _requested(parameters: dict, spec: ExplainSpec) -> int | None:
    budget = _integral(parameters.get("coalitions", "auto"))
    if budget == "auto":
        return spec.coalitions
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InvalidInput('parameters.coalitions must be a positive integer or "auto"')
    if budget > spec.max_coalitions:
        raise LimitExceeded(f"parameters.coalitions is {budget}; this model explains with at most {spec.max_coalitions}")
    return budget


def _limits(spec: ExplainSpec) -> str:
    tokens = f", {spec.max_tokens} tokens" if spec.max_tokens is not None else ""
    return f"{spec.max_coalitions} coalitions, {spec.max_evaluations} model evaluations{tokens} per request"


def _budget(spec: ExplainSpec, requested: int | None, game: Game, rows: int, where: str) -> int:
    """Coalitions for one input: the request's (at least what the solve needs), or "auto" shrunk to
    the `rows` the limits leave; LimitExceeded when even the least the solve needs exceeds them."""
    n = len(game.background)
    m = len(varying_features(game.x, game.background))
    left = rows - n - 1  # the background and the input itself are evaluated too
    if m < 2:
        if left < 0:
            raise LimitExceeded(f"{where} would exceed this model's limits ({_limits(spec)})")
        return 0
    needed = min_coalitions(m)
    if requested is not None:
        budget = max(requested, needed)  # fewer would leave the least squares underdetermined
    else:
        budget = min(auto_coalitions(m), spec.max_coalitions, left // n)
    if m < 31:
        budget = min(budget, 2**m - 2)
    if budget < needed or budget > spec.max_coalitions:
        raise LimitExceeded(
            f"{where} has {m} players: its explanation needs at least {needed} coalitions x {n} background "
            f"rows, over this model's limits ({_limits(spec)})"
        )
    if budget * n > left:
        raise LimitExceeded(f"{budget} coalitions x {n} background rows for {where} exceed this model's limits ({_limits(spec)})")
    return budget


def explain(task, spec: ExplainSpec | None, inputs: list, parameters: dict) -> tuple[list, dict]:
    """Explanations of `inputs` by `task` within the card's limits: (outputs, usage)."""
    if spec is None:
        raise NotSupported(f"model {task.card.name!r} serves no explanations (its manifest sets explain.enabled = false)")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("inputs must be a non-empty list")
    if len(inputs) > spec.max_inputs:
        raise LimitExceeded(f"{len(inputs)} inputs; model {task.card.name!r} explains at most {spec.max_inputs} per request")
    allowed = COMMON_PARAMETERS + task.explain_parameters
    unknown = sorted(set(parameters) - set(allowed), key=str)
    if unknown:
        named = ", ".join(quoted(name, 40) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise InvalidInput(f"unknown parameter(s) {named}; explanations take: {', '.join(allowed)}")
    seed = _seed(parameters)
    requested = _requested(parameters, spec)
    outputs, usage, evaluations, tokens = [], {"batch_size": len(inputs)}, 0, 0
    for i, item in enumerate(inputs):
        game = task.explain_game(item, parameters, f"inputs[{i}]")
        rows = spec.max_evaluations - evaluations
        if spec.max_tokens is not None and game.row_tokens:
            rows = min(rows, (spec.max_tokens - tokens) // game.row_tokens)
        budget = _budget(spec, requested, game, rows, f"inputs[{i}]")
        result = kernel_shap(game.f, game.x, game.background, game.weights, budget, np.random.RandomState(seed))
        evaluations += result.evaluations
        tokens += result.evaluations * game.row_tokens
        for key, value in game.usage.items():
            usage[key] = usage.get(key, 0) + value
        outputs.append({
            **game.answer,
            "output": game.output,
            "value": result.value,
            "base_value": result.base,
            "attributions": game.attributions(result.phi),
            "method": {
                "name": spec.method,
                "players": result.players,
                "coalitions": result.coalitions,
                "enumerated": result.enumerated,
                "background_rows": len(game.background),
                "seed": seed,
            },
        })
    usage["model_evaluations"] = evaluations
    return outputs, usage


__all__ = [
    "COMMON_PARAMETERS",
    "DEFAULT_SEED",
    "Attribution",
    "Background",
    "Coalitions",
    "Game",
    "auto_coalitions",
    "coalition_rows",
    "coalitions",
    "explain",
    "kernel_shap",
    "load_background",
    "min_coalitions",
    "solve",
    "varying_features",
]
