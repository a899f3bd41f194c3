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
        """Token vectors (batch, tokens, hidden) are mean-pooled here; a graph that pools itself
        (the GPU server's copy, whose answer must fit SageMaker's 6 MB) gives (batch, hidden).
        L2 normalization stays here either way: `normalize` is a request parameter."""
        vectors = outputs[0]
        if vectors.ndim == 3:
            vectors = mean_pool(vectors, prepared.feeds["attention_mask"])
        elif vectors.ndim != 2:
            raise ValueError(f"an embedding graph answers (batch, tokens, hidden) or (batch, hidden), got {vectors.shape}")
        if prepared.options["normalize"]:
            vectors = l2_normalize(vectors)
        return Prediction(outputs=embedding_json_values(vectors), usage=prepared.usage)
