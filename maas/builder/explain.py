"""Explanations, build side: the manifest's `explain` tables and what the artifact ships for them.

A task that serves explanations names its table (`BuildTask.explain`) and builds its card section
(`BuildTask.explain_card`) with the helpers here; the serving half is maas_runtime.explain.

The limits bound what one request may cost: Kernel SHAP evaluates the model once per coalition
and background row, so latency and memory grow with `coalitions x background rows`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..manifest import Flag, Integer, IntegerOr, ManifestError, Table

if TYPE_CHECKING:
    from maas_runtime.card import ExplainSpec

BACKGROUND_FILE = "background.npz"
METHOD = "kernel-shap"
KMEANS_SEED = 0


class ExplainTable(Table):
    """What every explainable task's `explain` table has (its limits' defaults are the task's own)."""

    enabled: Flag() = True
    coalitions: IntegerOr("auto", 16, 1_000_000) = "auto"
    """"auto": shap's 2M + 2048 for M players, within the limits."""
    max_inputs: Integer(1, 16) = 1
    max_coalitions: int
    max_evaluations: int


class PixelExplain(ExplainTable):
    """Images: every pixel is a player; absent pixels take a background of k-means centres."""

    max_coalitions: Integer(16, 65536) = 8192
    max_evaluations: Integer(1000, 10_000_000) = 100_000
    """21,530 at the default budget for an 8x8 image (52 players, 10 background rows)."""
    background_size: Integer(1, 100) = 10


class WordExplain(ExplainTable):
    """Texts: every word is a player and costs one sequence through the model per coalition."""

    max_coalitions: Integer(16, 8192) = 512
    max_evaluations: Integer(16, 100_000) = 1024
    max_tokens: Integer(256, 10_000_000) = 8192
    """Tokens over every sequence one request runs: a sequence costs about its length, so this
    bounds a long text's latency where max_coalitions alone would not."""


def check_settings(settings: ExplainTable, where: str) -> ExplainTable:
    if isinstance(settings.coalitions, int) and settings.coalitions > settings.max_coalitions:
        raise ManifestError(
            f"{where}.coalitions: must be at most max_coalitions ({settings.max_coalitions}), got {settings.coalitions}"
        )
    return settings


def kmeans_background(data: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k weighted centres summarizing `data` (rows of request-unit features), as shap.kmeans makes them.

    scikit-learn's KMeans (seed 0, 10 initializations), each coordinate then moved to the nearest
    value that feature takes in the data (a pixel stays a pixel value), weighted by cluster size.
    """
    from sklearn.cluster import KMeans

    data = np.asarray(data, dtype=np.float64)
    k = min(k, len(data))
    fit = KMeans(n_clusters=k, random_state=KMEANS_SEED, n_init=10).fit(data)
    centres = fit.cluster_centers_.copy()
    for j in range(data.shape[1]):
        column = data[:, j]
        centres[:, j] = column[np.abs(column[None, :] - centres[:, j : j + 1]).argmin(axis=1)]
    return centres, np.bincount(fit.labels_, minlength=k).astype(np.float64)


def background_card(settings: PixelExplain, train_inputs: np.ndarray | None, work: Path,
                    output: str) -> tuple["ExplainSpec", dict[str, Path]]:
    """The card section and background.npz of a model whose absent features take a background."""
    from maas_runtime.card import ExplainSpec

    if train_inputs is None or not len(train_inputs):
        raise ValueError(
            "explanations need the training data for their background, which this source does not provide; "
            "set explain.enabled = false"
        )
    centres, weights = kmeans_background(train_inputs, settings.background_size)
    path = Path(work) / BACKGROUND_FILE
    with open(path, "wb") as fh:
        np.savez(fh, x=centres.astype(np.float32), weights=weights.astype(np.float32))
    spec = ExplainSpec(
        method=METHOD, output=output, players="pixels", absent="background",
        coalitions=None if settings.coalitions == "auto" else settings.coalitions,
        max_coalitions=settings.max_coalitions, max_evaluations=settings.max_evaluations,
        max_inputs=settings.max_inputs, background=BACKGROUND_FILE, background_rows=len(centres),
        background_method=f"k-means ({len(centres)} centres, seed {KMEANS_SEED}, rounded to data values) "
        f"of {len(train_inputs)} training inputs, weighted by cluster size",
    )
    return spec, {BACKGROUND_FILE: path}


def word_card(settings: WordExplain, output: str) -> "ExplainSpec":
    """The card section of a text model: words are players, absent words leave the attention mask."""
    from maas_runtime.card import ExplainSpec

    return ExplainSpec(
        method=METHOD, output=output, players="words", absent="attention-mask",
        coalitions=None if settings.coalitions == "auto" else settings.coalitions,
        max_coalitions=settings.max_coalitions, max_evaluations=settings.max_evaluations,
        max_inputs=settings.max_inputs, max_tokens=settings.max_tokens, background_rows=1,
        background_method="every word absent (special tokens kept)",
    )
