"""embedding: texts -> one mean-pooled (by default L2-normalized) vector each."""

from __future__ import annotations

from .base import Prediction, Prepared, TextTask, bool_param, register
from .processing import embedding_json_values, l2_normalize, mean_pool


@register
class EmbeddingTask(TextTask):
    name = "embedding"
    parameters = ("normalize", "truncate")

    def prepare(self, inputs, parameters) -> Prepared:
        self.check_parameters(parameters)
        normalize = bool_param(parameters, "normalize", self.card.outputs.normalize)
        prepared = self.encode(inputs, parameters)
        prepared.options["normalize"] = normalize
        return prepared

    @classmethod
    def output_schema(cls, card) -> dict:
        dimensions = card.outputs.dimensions
        return {"type": "array", "items": {"type": "number"}, "minItems": dimensions, "maxItems": dimensions,
                "description": f"The embedding: {dimensions} floats"}

    def finish(self, prepared, outputs) -> Prediction:
        vectors = mean_pool(outputs[0], prepared.feeds["attention_mask"])
        if prepared.options["normalize"]:
            vectors = l2_normalize(vectors)
        return Prediction(outputs=embedding_json_values(vectors), usage=prepared.usage)
