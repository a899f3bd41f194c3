"""The model card: what the build writes beside a model and everything else reads.

One typed, versioned record per artifact (``card.json``). The build creates a `ModelCard` and
writes ``to_dict()``; the runtime, the API, the CDK app and bench read it back with
`ModelCard.from_dict`, which refuses an unknown schema version, a missing or unknown field, a
value of the wrong type, and a file name that is not a plain, verified file of the artifact.

Standard-library dataclasses rather than pydantic: the runtime layer imports nothing heavier than
onnxruntime, tokenizers and numpy, and a Lambda cold start reads the card before anything else.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError

CARD_FILE = "card.json"
CARD_SCHEMA_VERSION = 3
"""Bumped whenever a field is added, removed or changes meaning; a reader refuses other versions."""
MODEL_FILE = "model.onnx"
SIG_FILE = "card.sig"
"""The card's signature (maas_runtime.signing): beside the card, never among the files it lists."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class InputSpec:
    """What a request's inputs are: texts (through a tokenizer) or fixed-shape numeric arrays."""

    type: str
    tokenizer: str | None = None
    max_sequence_length: int | None = None
    shape: tuple[int, ...] | None = None
    min: float | None = None
    max: float | None = None
    scale: float = 1.0
    pad_to_multiple_of: int = 1
    """Text: every batch's token length is padded up to a multiple of this. The build sets it
    where the chosen graph's kernels answer a row differently by where it falls in the batch
    (maas.builder.quantize.Scheme.pad_to_multiple_of); 1 pads to the longest input only."""

    def __post_init__(self):
        needed = {"text": ("tokenizer", "max_sequence_length"), "image": ("shape", "min", "max")}.get(self.type)
        if needed is None:
            raise ArtifactError(f"model card: inputs.type must be text or image, got {self.type!r}")
        for name in needed:
            if getattr(self, name) is None:
                raise ArtifactError(f"model card: inputs.{name} is required for {self.type} inputs")
        multiple = self.pad_to_multiple_of
        if multiple < 1:
            raise ArtifactError(f"model card: inputs.pad_to_multiple_of must be at least 1, got {multiple}")
        if self.type == "text" and self.max_sequence_length % multiple:
            # A text truncated to the maximum would otherwise be padded past it.
            raise ArtifactError(f"model card: inputs.max_sequence_length ({self.max_sequence_length}) is not a "
                                f"multiple of inputs.pad_to_multiple_of ({multiple})")


@dataclass(frozen=True)
class OutputSpec:
    """What the model answers: an embedding (pooled, maybe normalized) or scores over labels."""

    type: str
    dimensions: int | None = None
    pooling: str | None = None
    normalize: bool = True
    labels: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.type == "embedding" and not self.dimensions:
            raise ArtifactError("model card: outputs.dimensions is required for an embedding")
        if self.type == "labels" and not self.labels:
            raise ArtifactError("model card: outputs.labels is required for a classifier")
        if self.type not in ("embedding", "labels"):
            raise ArtifactError(f"model card: outputs.type must be embedding or labels, got {self.type!r}")


@dataclass(frozen=True)
class ServingSpec:
    max_batch: int


@dataclass(frozen=True)
class ExplainSpec:
    """How POST /models/{name}/explain explains this model, and the limits that bound its cost.

    Kernel SHAP (maas_runtime.explain) over `players` (the image's pixels or the text's words); a
    player left out of a coalition takes the background's values (`absent` "background", from the
    `background` file of the artifact) or is removed from the attention mask ("attention-mask").
    """

    method: str
    output: str
    """What is explained unless the request says otherwise: "logit" of the target class, or "cosine"."""
    players: str
    absent: str
    max_coalitions: int
    max_evaluations: int
    """Model rows one request may evaluate (coalitions x background rows, summed over its inputs)."""
    max_inputs: int
    max_tokens: int | None = None
    """Text models: tokens one request may run through the model, over every sequence it evaluates
    (a long text costs more per coalition)."""
    coalitions: int | None = None
    """The default budget; None: shap's "auto", 2M+2048 for M players, capped by the limits."""
    background: str | None = None
    background_rows: int = 0
    background_method: str | None = None

    def __post_init__(self):
        if self.method != "kernel-shap":
            raise ArtifactError(f"model card: explain.method must be kernel-shap, got {self.method!r}")
        if self.absent not in ("background", "attention-mask"):
            raise ArtifactError(f"model card: explain.absent must be background or attention-mask, got {self.absent!r}")
        if self.absent == "background" and (self.background is None or self.background_rows < 1):
            raise ArtifactError("model card: explain.background is required when absent players take the background")


@dataclass(frozen=True)
class Sizes:
    fp32_bytes: int
    optimized_bytes: int
    ratio: float


@dataclass(frozen=True)
class ParityReport:
    """The chosen candidate against the fp32 original, and the bar it had to meet."""

    metric: str
    samples: int
    figures: dict[str, float]
    threshold: dict[str, float]
    passed: bool
    reference: str
    eval_set: str


@dataclass(frozen=True)
class QuantizationReport:
    """Every candidate the build measured and why `chosen` won.

    Each candidate entry: name, graph ("standard" or "fused": eager-attention export with ONNX
    Runtime's attention kernel), method, weights, activations, bytes, size_ratio (of fp32), parity
    (the task's figures), passed, failures, and latency {"mixed_batch" (its size), "mixed_batch_ms", "batch1_ms"} measured
    through the runtime on `latency_workload`. Fields added after schema 3 have defaults, so a
    schema-3 card without them still reads.
    """

    mode: str
    chosen: str
    reason: str
    candidates: tuple[dict[str, Any], ...] = ()
    weight_types: str | None = None
    prefer: str | None = None
    latency_workload: str | None = None
    calibration: dict[str, Any] | None = None
    """Where calibration inputs came from, SmoothQuant's settings and the sensitivity ranking."""


@dataclass(frozen=True)
class OptimizationReport:
    graph: dict[str, Any]
    pruning: dict[str, Any]
    quantization: QuantizationReport


@dataclass(frozen=True)
class BuildInfo:
    date: str
    cache_key: str
    seconds: float
    tools: dict[str, str | None]
    platform: str


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: str
    inputs: InputSpec
    outputs: OutputSpec
    serving: ServingSpec
    files: dict[str, FileEntry]
    model_file: str = MODEL_FILE
    sizes: Sizes | None = None
    optimization: OptimizationReport | None = None
    parity: ParityReport | None = None
    build: BuildInfo | None = None
    explain: ExplainSpec | None = None
    schema_version: int = CARD_SCHEMA_VERSION

    def __post_init__(self):
        _check_version(self.schema_version)
        for name in self.files:
            check_file_name(name)
        background = self.explain.background if self.explain is not None else None
        roles = (("model_file", self.model_file), ("inputs.tokenizer", self.inputs.tokenizer), ("explain.background", background))
        for role, name in roles:
            if name is not None and name not in self.files:
                raise ArtifactError(f"model card: {role} {name!r} is not among the verified files it lists")

    # --- reading and writing ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any) -> "ModelCard":
        if not isinstance(data, dict):
            raise ArtifactError("model card is not a JSON object")
        _check_version(data.get("schema_version"))
        return _convert(cls, data, "card")

    @classmethod
    def from_bytes(cls, data: bytes) -> "ModelCard":
        """The card from card.json's bytes (after their signature was checked, where one is required)."""
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise ArtifactError(f"model card {CARD_FILE} is unreadable: {exc.__class__.__name__}") from None
        return cls.from_dict(parsed)

    @classmethod
    def read(cls, folder: str | Path) -> "ModelCard":
        return cls.from_bytes(read_card_bytes(folder))

    def to_dict(self) -> dict:
        return _plain(self)

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    def public(self) -> dict:
        """What a client may see: everything but the build machine's details."""
        data = self.to_dict()
        data.pop("build", None)
        return data

    @property
    def labels(self) -> tuple[str, ...] | None:
        return self.outputs.labels

    def replace(self, **changes) -> "ModelCard":
        return dataclasses.replace(self, **changes)


def _check_version(version: Any) -> None:
    if version != CARD_SCHEMA_VERSION:
        raise ArtifactError(
            f"model card schema version {version!r} is not the one this runtime reads "
            f"({CARD_SCHEMA_VERSION}): rebuild the model with this kit's `maas build`"
        )


def read_card_bytes(folder: str | Path) -> bytes:
    """card.json's bytes, read once: what a signature is checked against and then parsed."""
    try:
        return (Path(folder) / CARD_FILE).read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"no model card at {CARD_FILE} in {Path(folder).name!r}") from None
    except OSError as exc:
        raise ArtifactError(f"model card {CARD_FILE} is unreadable: {exc.__class__.__name__}") from None


def check_file_name(name: str) -> str:
    """An artifact's file names are plain names in its own folder: no paths, no hidden files, and
    neither the card nor its signature (neither can be covered by the card's own hashes)."""
    if (not isinstance(name, str) or not name or name.startswith(".") or name in (CARD_FILE, SIG_FILE)
            or any(c in name for c in "/\\:\0")):
        raise ArtifactError(f"model card names an unsafe file path {name!r}")
    return name


# --- dataclass <-> JSON, strictly -----------------------------------------------------------------


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _convert(kind: Any, value: Any, where: str) -> Any:
    """`value` (parsed JSON) as `kind` (a type hint of this module), or ArtifactError naming `where`."""
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ArtifactError(f"model {where} must be an object")
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ArtifactError(f"model {where} has unknown field(s) {', '.join(unknown)}")
        missing = [
            f.name for f in dataclasses.fields(kind)
            if f.name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ArtifactError(f"model {where} is missing {', '.join(missing)}")
        return kind(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()})
    if origin is tuple:
        if not isinstance(value, list):
            raise ArtifactError(f"model {where} must be a list")
        item = typing.get_args(kind)[0]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ArtifactError(f"model {where} must be an object")
        item = typing.get_args(kind)[1]
        return {str(k): _convert(item, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return _checked(float(value) if ok else value, ok, where, "a number")
    if kind is int:
        return _checked(value, isinstance(value, int) and not isinstance(value, bool), where, "an integer")
    if kind is bool:
        return _checked(value, isinstance(value, bool), where, "true or false")
    if kind is str:
        return _checked(value, isinstance(value, str), where, "a string")
    raise TypeError(f"no conversion for {kind!r}")  # a field type this module does not handle


def _checked(value: Any, ok: bool, where: str, what: str) -> Any:
    if not ok:
        raise ArtifactError(f"model {where} must be {what}, got {type(value).__name__}")
    return value


__all__ = [
    "CARD_FILE",
    "CARD_SCHEMA_VERSION",
    "MODEL_FILE",
    "SIG_FILE",
    "BuildInfo",
    "ExplainSpec",
    "FileEntry",
    "InputSpec",
    "ModelCard",
    "OptimizationReport",
    "OutputSpec",
    "ParityReport",
    "QuantizationReport",
    "ServingSpec",
    "Sizes",
    "check_file_name",
    "read_card_bytes",
]
