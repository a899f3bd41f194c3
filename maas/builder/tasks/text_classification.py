"""text-classification, build side: a sequence-classification head's logits, softmaxed."""

from __future__ import annotations

from ..explain import WordExplain, word_card
from .base import register
from .classification import Classifier


@register
class TextClassification(Classifier):
    name = "text-classification"
    inputs = "text"
    hf_auto_class = "AutoModelForSequenceClassification"
    explain = WordExplain

    def explain_card(self, spec, exported, work):
        return (word_card(spec.explain, output="logit"), {}) if spec.explain.enabled else (None, {})
