"""Request and response bodies of the API, as pydantic models (they also make /openapi.json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # Each model's validator and serializer are built when first used, not at import: a cold
    # start builds the few its first request needs (about 40 ms of import less on 2 cores).
    model_config = ConfigDict(defer_build=True)


class _Strict(_Model):
    model_config = ConfigDict(extra="forbid")


class InvokeRequest(_Strict):
    """Text models take strings; the image model takes 8x8 pixel arrays (0-16)."""

    inputs: list[Any] = Field(
        ...,
        min_length=1,
        description="One request's batch: strings for text models, 8x8 (or flat 64) pixel arrays for images.",
        examples=[["The cat sat on the mat."]],
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="Per-task options: embedding {normalize, truncate}; classifiers {top_k}.",
    )


class InvokeResponse(_Model):
    model: str
    version: str
    outputs: list[Any]
    usage: dict[str, int] = Field(
        ...,
        description="batch_size; text models also input_tokens and truncated_inputs (how many inputs were longer "
                    "than the model's max_sequence_length tokens and were truncated)",
    )


class ExplainRequest(InvokeRequest):
    """What to explain: one input (up to the model's explain.max_inputs), as the invoke route takes it."""

    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description='coalitions ("auto" or a number), seed (default 0); classifiers: target (a label, default '
        "the top class), output (logit or probability); embeddings: compare_to (required: the text whose "
        "cosine similarity is explained), truncate.",
    )


class ExplainMethod(_Model):
    name: str
    players: int = Field(description="Features that vary against the background (pixels) or words.")
    coalitions: int
    enumerated: int = Field(description="Coalitions enumerated exactly; the rest were sampled.")
    background_rows: int
    seed: int


class Explanation(_Model):
    """One input's attributions: they sum to value - base_value. Classifiers add the class
    explained (`label`, `logit`, `probability`); the OpenAPI document lists them per model."""

    model_config = ConfigDict(extra="allow")

    output: str = Field(description="What is explained: logit, probability or cosine.")
    value: float = Field(description="The output for the input.")
    base_value: float = Field(description="The output's mean over the background (every player absent).")
    attributions: list[Any] = Field(
        description="Images: a map shaped like the input (8x8); texts: [{word, start, end, attribution}] in text order."
    )
    method: ExplainMethod


class ExplainResponse(_Model):
    model: str
    version: str
    outputs: list[Explanation]
    usage: dict[str, Any]


class EmbeddingsRequest(_Model):
    """The OpenAI embeddings request. Token-id inputs are not supported: send text."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=200)
    input: str | list[str] = Field(..., description="A string or a list of strings.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class Embedding(_Model):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(_Model):
    prompt_tokens: int
    total_tokens: int
    truncated_inputs: int = Field(
        0,
        description="How many inputs were longer than the model's max_sequence_length tokens and were truncated "
                    "(OpenAI's answer has no such field; OpenAI clients keep it as an extra one). "
                    "POST /models/<name>/invoke with parameters.truncate false refuses such inputs instead.",
    )


class EmbeddingsResponse(_Model):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


class ModelSummary(_Model):
    name: str
    version: str = Field(..., description="The live version: what invoke_path answers from")
    versions: list[str] = Field(default_factory=list, description="Every kept version, oldest first "
                                "(each at /models/<name>/versions/<version>/invoke)")
    task: str
    target: str
    description: str = ""
    invoke_path: str


class ModelList(_Model):
    models: list[ModelSummary]


class Health(_Model):
    """The model answered its smoke input through the loaded session (a failure is a 503 error instead)."""

    status: Literal["ok"]
    model: str
    version: str
    loaded: bool
    checked_at: str = Field(..., description="When the smoke input last ran (UTC, ISO 8601); checks are reused briefly")


class ErrorDetail(_Model):
    code: str
    message: str


class ErrorResponse(_Model):
    error: ErrorDetail
    request_id: str | None = None
