"""text-classification: texts -> the top k labels with their probabilities."""

from __future__ import annotations

import numpy as np

from .base import LabelledTask, Prediction, Prepared, TextTask, register
from .processing import softmax


@register
class TextClassificationTask(TextTask, LabelledTask):
    name = "text-classification"
    parameters = ("top_k", "truncate")
    explain_parameters = ("target", "output", "truncate")

    def prepare(self, inputs, parameters) -> Prepared:
        self.check_parameters(parameters)
        top_k = self.top_k(parameters)
        prepared = self.encode(inputs, parameters)
        prepared.options["top_k"] = top_k
        return prepared

    def finish(self, prepared, outputs) -> Prediction:
        return Prediction(outputs=self.ranked(softmax(outputs[0]), prepared.options["top_k"]), usage=prepared.usage)

    def explain_game(self, item, parameters, where):
        """Players are the text's words; an absent word is masked out of attention (see `Words`),
        so the base value is the model's answer to the special tokens alone."""
        words = self.words(item, parameters, where)
        players = len(words.tokens)

        def logits(z):
            return np.concatenate([out for _, out in self.run_words(words, z)])

        return self.class_game(np.ones(players), np.zeros((1, players)), None, logits, parameters,
                               words.attributions, usage={"input_tokens": words.length}, row_tokens=words.length)
