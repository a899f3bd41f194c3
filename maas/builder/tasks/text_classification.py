"""text-classification, build side: a sequence-classification head's logits, softmaxed."""

from __future__ import annotations

from .base import register
from .classification import Classifier


@register
class TextClassification(Classifier):
    name = "text-classification"
    inputs = "text"
    hf_auto_class = "AutoModelForSequenceClassification"
