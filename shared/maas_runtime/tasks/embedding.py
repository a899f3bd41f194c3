"""embedding: texts -> one mean-pooled (by default L2-normalized) vector each."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInput
from ..explain import Game
from .base import Prediction, Prepared, TextTask, bool_param, check_texts, register
from .processing import embedding_json_values, l2_normalize, mean_pool


@register
class EmbeddingTask(TextTask):
    name = "embedding"
    parameters = ("normalize", "truncate")
    explain_parameters = ("compare_to", "truncate")
    explain_required = ("compare_to",)

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

    @staticmethod
    def pooled(vectors: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Token vectors (batch, tokens, hidden) are mean-pooled here; a graph that pools itself
        (the GPU server's copy, whose answer must fit SageMaker's 6 MB) gives (batch, hidden)."""
        if vectors.ndim == 3:
            return mean_pool(vectors, attention_mask)
        if vectors.ndim != 2:
            raise ValueError(f"an embedding graph answers (batch, tokens, hidden) or (batch, hidden), got {vectors.shape}")
        return vectors

    def finish(self, prepared, outputs) -> Prediction:
        """L2 normalization stays here whoever pools: `normalize` is a request parameter."""
        vectors = self.pooled(outputs[0], prepared.feeds["attention_mask"])
        if prepared.options["normalize"]:
            vectors = l2_normalize(vectors)
        return Prediction(outputs=embedding_json_values(vectors), usage=prepared.usage)

    def explain_game(self, item, parameters, where):
        """Why is the input similar to `parameters.compare_to`? The cosine of the two embeddings,
        attributed to the input's words (an absent word is masked out of attention and so also
        out of the mean pooling); the other text is embedded once, whole."""
        other = parameters.get("compare_to")
        if not isinstance(other, str) or not other:
            raise InvalidInput(
                "parameters.compare_to must be a non-empty string: an embedding model's explanation "
                "attributes cos(embed(input), embed(compare_to)) to the input's words"
            )
        check_texts([other], ["parameters.compare_to"])
        words = self.words(item, parameters, where)
        prepared = self.encode([other], parameters)
        anchor = l2_normalize(self.pooled(self.engine.run(prepared.feeds)[0], prepared.feeds["attention_mask"]))[0]

        def cosine(z):
            pooled = [self.pooled(out, feeds["attention_mask"]) for feeds, out in self.run_words(words, z)]
            return l2_normalize(np.concatenate(pooled)).astype(np.float64) @ anchor.astype(np.float64)

        players = len(words.tokens)
        return Game(x=np.ones(players), background=np.zeros((1, players)), f=cosine, attributions=words.attributions,
                    output="cosine", usage={"input_tokens": words.length + int(prepared.usage["input_tokens"])},
                    row_tokens=words.length)
