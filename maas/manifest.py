"""The model manifest (models.toml): read and validated here, and only here.

Everything downstream (build, local API, infrastructure, bench) receives the typed,
frozen objects defined below, never raw TOML. Every rejection names the model and the
key, e.g. ``models.minilm.optimization.pruning_sparsity: must be in [0, 0.95], got 2``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = ("embedding", "text-classification", "image-classification")
TEXT_TASKS = ("embedding", "text-classification")
TARGETS = ("lambda", "sagemaker")
SOURCE_TYPES = ("huggingface", "recipe", "onnx")
QUANTIZATION_MODES = ("auto", "dynamic-int8", "weight-only-int8", "none")
ARCHITECTURES = ("arm64", "x86_64")
ARTIFACT_LOCATIONS = ("package", "s3")

# Names become URL path segments, Lambda function names and CloudFormation logical ids.
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


class ManifestError(ValueError):
    """The manifest is invalid; the message names the model and the key."""


@dataclass(frozen=True)
class Source:
    type: str
    path: str | None = None
    package: str | None = None
    recipe: str | None = None
    tokenizer: str | None = None

    def resolve(self, root: Path) -> Path:
        """The source's folder or file on this machine (recipes have none)."""
        if self.package:
            import importlib.util

            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                raise ManifestError(
                    f"source package {self.package!r} is not installed "
                    f"(install the build extra: pip install -e '.[build]')"
                )
            base = Path(list(spec.submodule_search_locations)[0])
            return base / self.path if self.path else base
        assert self.path is not None
        path = Path(self.path)
        return path if path.is_absolute() else root / path


@dataclass(frozen=True)
class Optimization:
    quantization: str = "auto"
    pruning_sparsity: float = 0.0
    max_size_ratio: float | None = None


@dataclass(frozen=True)
class ServingLimits:
    max_batch: int = 32
    max_sequence_length: int | None = None


@dataclass(frozen=True)
class Parity:
    """What the optimized model must achieve against its fp32 original."""

    min_cosine: float | None = None
    mean_cosine: float | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None


@dataclass(frozen=True)
class LambdaSettings:
    architecture: str = "arm64"
    memory_mb: int = 1769
    timeout_s: int = 15
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    snap_start: bool = False
    artifact: str = "package"


@dataclass(frozen=True)
class SageMakerSettings:
    instance_type: str = "ml.g5.xlarge"
    min_instances: int = 1
    max_instances: int = 2
    target_invocations_per_instance: int = 200
    image_uri: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    task: str
    target: str
    source: Source
    optimization: Optimization
    serving: ServingLimits
    parity: Parity
    lambda_settings: LambdaSettings
    sagemaker: SageMakerSettings | None
    description: str = ""
    labels: tuple[str, ...] | None = None
    # Raw, normalized settings: part of the build cache key, so any change rebuilds.
    settings: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_text(self) -> bool:
        return self.task in TEXT_TASKS


@dataclass(frozen=True)
class Manifest:
    path: Path
    models: tuple[ModelSpec, ...]

    @property
    def root(self) -> Path:
        return self.path.parent

    def get(self, name: str) -> ModelSpec:
        for model in self.models:
            if model.name == name:
                return model
        known = ", ".join(m.name for m in self.models)
        raise ManifestError(f"unknown model {name!r} (the manifest has: {known})")

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[ModelSpec]:
        return [self.get(n) for n in names] if names else list(self.models)


# --- validation helpers -------------------------------------------------------------


class _Table:
    """One TOML table being read; tracks which keys were used to reject the rest."""

    def __init__(self, where: str, data: Any):
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: must be a table, got {_show(data)}")
        self.where = where
        self.data = data
        self.used: set[str] = set()

    def _take(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ManifestError(f"{self.where}.{key}: missing required key")
            return None
        return self.data[key]

    def str(self, key: str, *, required: bool = False, choices=None, pattern=None, default=None):
        value = self._take(key, required)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ManifestError(f"{self.where}.{key}: must be a string, got {_show(value)}")
        if choices and value not in choices:
            raise ManifestError(
                f"{self.where}.{key}: must be one of {', '.join(choices)}, got {value!r}"
            )
        if pattern and not pattern.match(value):
            raise ManifestError(f"{self.where}.{key}: {value!r} does not match {pattern.pattern}")
        return value

    def int(self, key: str, *, lo: int, hi: int, default=None, required: bool = False):
        value = self._take(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ManifestError(
                f"{self.where}.{key}: must be an integer in [{lo}, {hi}], got {_show(value)}"
            )
        return value

    def float(self, key: str, *, lo: float, hi: float, default=None):
        value = self._take(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ManifestError(
                f"{self.where}.{key}: must be a number in [{lo}, {hi}], got {_show(value)}"
            )
        return float(value)

    def bool(self, key: str, *, default: bool):
        value = self._take(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ManifestError(f"{self.where}.{key}: must be true or false, got {_show(value)}")
        return value

    def table(self, key: str, *, required: bool = False) -> _Table | None:
        value = self._take(key, required)
        return None if value is None else _Table(f"{self.where}.{key}", value)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ManifestError(f"{self.where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _source(t: _Table, task: str) -> Source:
    kind = t.str("type", required=True, choices=SOURCE_TYPES)
    source = Source(
        type=kind,
        path=t.str("path"),
        package=t.str("package"),
        recipe=t.str("recipe"),
        tokenizer=t.str("tokenizer"),
    )
    if kind == "recipe" and not source.recipe:
        raise ManifestError(f"{t.where}.recipe: missing required key for type = 'recipe'")
    if kind != "recipe" and not (source.path or source.package):
        raise ManifestError(f"{t.where}.path: missing required key for type = {kind!r}")
    if kind == "onnx" and task in TEXT_TASKS and not source.tokenizer:
        raise ManifestError(f"{t.where}.tokenizer: a text model brought as .onnx needs its tokenizer.json")
    t.done()
    return source


def _parity(t: _Table, task: str) -> Parity:
    if task == "embedding":
        parity = Parity(
            min_cosine=t.float("min_cosine", lo=0.0, hi=1.0, default=None),
            mean_cosine=t.float("mean_cosine", lo=0.0, hi=1.0, default=None),
        )
        t.done()
        if parity.min_cosine is None and parity.mean_cosine is None:
            raise ManifestError(f"{t.where}.min_cosine: an embedding model needs min_cosine or mean_cosine")
    else:
        parity = Parity(
            min_accuracy=t.float("min_accuracy", lo=0.0, hi=1.0, default=None),
            max_accuracy_drop=t.float("max_accuracy_drop", lo=0.0, hi=1.0, default=None),
        )
        t.done()
        if parity.min_accuracy is None and parity.max_accuracy_drop is None:
            raise ManifestError(
                f"{t.where}.min_accuracy: a classifier needs min_accuracy or max_accuracy_drop"
            )
    return parity


def _model(name: str, data: Any) -> ModelSpec:
    where = f"models.{name}"
    if not _NAME.match(name):
        raise ManifestError(
            f"{where}: model names must match {_NAME.pattern} (they become URL paths and AWS names)"
        )
    t = _Table(where, data)
    version = t.str("version", required=True, pattern=_VERSION)
    task = t.str("task", required=True, choices=TASKS)
    target = t.str("target", default="lambda", choices=TARGETS)
    description = t.str("description", default="")
    labels = t._take("labels", False)
    if labels is not None:
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ManifestError(f"{where}.labels: must be a non-empty list of strings, got {_show(labels)}")
        if task == "embedding":
            raise ManifestError(f"{where}.labels: an embedding model has no labels")
        labels = tuple(labels)

    source = _source(t.table("source", required=True), task)

    o = t.table("optimization") or _Table(f"{where}.optimization", {})
    optimization = Optimization(
        quantization=o.str("quantization", default="auto", choices=QUANTIZATION_MODES),
        pruning_sparsity=o.float("pruning_sparsity", lo=0.0, hi=0.95, default=0.0),
        max_size_ratio=o.float("max_size_ratio", lo=0.01, hi=1.0, default=None),
    )
    o.done()

    s = t.table("serving") or _Table(f"{where}.serving", {})
    serving = ServingLimits(
        max_batch=s.int("max_batch", lo=1, hi=1024, default=32),
        max_sequence_length=s.int("max_sequence_length", lo=1, hi=8192, default=None),
    )
    s.done()
    if task in TEXT_TASKS and serving.max_sequence_length is None:
        raise ManifestError(f"{where}.serving.max_sequence_length: missing required key for a text model")
    if task not in TEXT_TASKS and serving.max_sequence_length is not None:
        raise ManifestError(f"{where}.serving.max_sequence_length: only text models have a sequence length")

    parity = _parity(t.table("parity", required=True), task)

    lam = t.table("lambda") or _Table(f"{where}.lambda", {})
    lambda_settings = LambdaSettings(
        architecture=lam.str("architecture", default="arm64", choices=ARCHITECTURES),
        memory_mb=lam.int("memory_mb", lo=128, hi=10240, default=1769),
        timeout_s=lam.int("timeout_s", lo=1, hi=28, default=15),
        reserved_concurrency=lam.int("reserved_concurrency", lo=1, hi=10000, default=None),
        provisioned_concurrency=lam.int("provisioned_concurrency", lo=0, hi=10000, default=0),
        snap_start=lam.bool("snap_start", default=False),
        artifact=lam.str("artifact", default="package", choices=ARTIFACT_LOCATIONS),
    )
    lam.done()
    if lambda_settings.snap_start and lambda_settings.provisioned_concurrency:
        raise ManifestError(
            f"{where}.lambda.snap_start: AWS does not allow SnapStart together with "
            f"provisioned_concurrency; choose one"
        )

    sm = t.table("sagemaker")
    sagemaker = None
    if sm is not None:
        sagemaker = SageMakerSettings(
            instance_type=sm.str("instance_type", default="ml.g5.xlarge", pattern=re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")),
            min_instances=sm.int("min_instances", lo=1, hi=100, default=1),
            max_instances=sm.int("max_instances", lo=1, hi=100, default=2),
            target_invocations_per_instance=sm.int("target_invocations_per_instance", lo=1, hi=100000, default=200),
            image_uri=sm.str("image_uri"),
        )
        sm.done()
        if sagemaker.max_instances < sagemaker.min_instances:
            raise ManifestError(f"{where}.sagemaker.max_instances: must be >= min_instances")
    if target == "sagemaker" and sagemaker is None:
        sagemaker = SageMakerSettings()
    t.done()

    return ModelSpec(
        name=name,
        version=version,
        task=task,
        target=target,
        source=source,
        optimization=optimization,
        serving=serving,
        parity=parity,
        lambda_settings=lambda_settings,
        sagemaker=sagemaker,
        description=description,
        labels=labels,
        settings=data,
    )


def parse_manifest(text: str, path: Path) -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path.name}: not valid TOML: {exc}") from None
    top = _Table(path.name, data)
    models = top.table("models", required=True)
    if not models.data:
        raise ManifestError(f"{path.name}: [models] is empty")
    specs = tuple(_model(name, body) for name, body in models.data.items())
    models.used.update(models.data)
    top.done()
    return Manifest(path=path.resolve(), models=specs)


def load_manifest(path: str | Path = "models.toml") -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    return parse_manifest(path.read_text(encoding="utf-8"), path)


def find_manifest(start: Path | None = None) -> Path:
    """models.toml in the current folder or the nearest parent (as git finds .git)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "models.toml").is_file():
            return folder / "models.toml"
    raise ManifestError("no models.toml in this folder or any parent; pass --manifest")
