"""image-classification, build side: fixed-shape pixel arrays to logits (trained by a recipe)."""

from __future__ import annotations

from .base import register
from .classification import Classifier


@register
class ImageClassification(Classifier):
    name = "image-classification"
    inputs = "image"

