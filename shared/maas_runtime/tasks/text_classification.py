"""text-classification: texts -> the top k labels with their probabilities."""

from __future__ import annotations

from .base import LabelledTask, Prediction, Prepared, TextTask, register
from .processing import softmax


@register
class TextClassificationTask(TextTask, LabelledTask):
    name = "text-classification"
    parameters = ("top_k", "truncate")

    def prepare(self, inputs, parameters) -> Prepared:
        self.check_parameters(parameters)
        top_k = self.top_k(parameters)
        prepared = self.encode(inputs, parameters)
        prepared.options["top_k"] = top_k
        return prepared

    def finish(self, prepared, outputs) -> Prediction:
        return Prediction(outputs=self.ranked(softmax(outputs[0]), prepared.options["top_k"]), usage=prepared.usage)
