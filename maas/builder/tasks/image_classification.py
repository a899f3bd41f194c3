"""image-classification, build side: fixed-shape pixel arrays to logits (trained by a recipe)."""

from __future__ import annotations

from ..explain import PixelExplain, background_card
from .base import register
from .classification import Classifier


@register
class ImageClassification(Classifier):
    name = "image-classification"
    inputs = "image"
    explain = PixelExplain

    def explain_card(self, spec, exported, work):
        """Pixels are the players; absent pixels take k-means centres of the training images."""
        if not spec.explain.enabled:
            return None, {}
        return background_card(spec.explain, exported.train_inputs, work, output="logit")
