"""The model manifest (models.toml): read and validated here, and only here.

Everything downstream (build, local API, infrastructure, bench) receives the typed, frozen
pydantic models defined below, never raw TOML. Every default is written once, on its field.
Every rejection names the model and the key, e.g.
``models.minilm.optimization.pruning_sparsity: must be a number in [0.0, 0.95], got 2``.

A task's own settings (its parity bar, its explanations' limits) are declared by the task's
build half (`maas.builder.tasks`), so adding a task does not touch this file.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

TARGETS = ("lambda", "sagemaker")
SOURCE_TYPES = ("huggingface", "recipe", "onnx")
QUANTIZATION_MODES = ("auto", "dynamic-int8", "weight-only-int8", "smoothquant-int8", "per-token-int8", "none")
PREFERENCES = ("speed", "size")
ARCHITECTURES = ("arm64", "x86_64")
ARTIFACT_LOCATIONS = ("package", "s3")
TRACING_MODES = ("handler", "service")
ACCELERATORS = ("none", "tensorrt-fp16")

# Names become URL path segments, Lambda function names and CloudFormation logical ids.
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")


class ManifestError(ValueError):
    """The manifest is invalid; the message names the model and the key."""


# --- field types: strict TOML values with the messages the README documents -------------------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(message: str, value: Any):
    raise PydanticCustomError("manifest", "{message}", {"message": f"{message}, got {_show(value)}"})


def Integer(lo: int, hi: int):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            _fail(f"must be an integer in [{lo}, {hi}]", value)
        return value

    return Annotated[int, BeforeValidator(check)]


def IntegerOr(word: str, lo: int, hi: int):
    """A keyword (such as "auto") or an integer in [lo, hi]."""

    def check(value):
        if value == word:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            _fail(f"must be {word!r} or an integer in [{lo}, {hi}]", value)
        return value

    return Annotated[str | int, BeforeValidator(check)]


def Number(lo: float, hi: float):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            _fail(f"must be a number in [{float(lo)}, {float(hi)}]", value)
        return float(value)

    return Annotated[float, BeforeValidator(check)]


def OneOf(*choices: str):
    def check(value):
        if not isinstance(value, str) or value not in choices:
            _fail(f"must be one of {', '.join(choices)}", value)
        return value

    return Annotated[str, BeforeValidator(check)]


def Text(pattern: re.Pattern | None = None):
    def check(value):
        if not isinstance(value, str):
            _fail("must be a string", value)
        if pattern is not None and not pattern.match(value):
            _fail(f"must match {pattern.pattern}", value)
        return value

    return Annotated[str, BeforeValidator(check)]


def Flag():
    def check(value):
        if not isinstance(value, bool):
            _fail("must be true or false", value)
        return value

    return Annotated[bool, BeforeValidator(check)]


def Labels():
    def check(value):
        if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
            _fail("must be a non-empty list of strings", value)
        return tuple(value)

    return Annotated[tuple[str, ...], BeforeValidator(check)]


class Table(BaseModel):
    """A manifest table: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- the tables ------------------------------------------------------------------------------------


class Source(Table):
    type: OneOf(*SOURCE_TYPES)
    path: Text() | None = None
    package: Text() | None = None
    recipe: Text() | None = None
    tokenizer: Text() | None = None

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

    def tokenizer_path(self, root: Path) -> Path | None:
        if not self.tokenizer:
            return None
        path = Path(self.tokenizer)
        return path if path.is_absolute() else root / path


class Optimization(Table):
    quantization: OneOf(*QUANTIZATION_MODES) = "auto"
    pruning_sparsity: Number(0.0, 0.95) = 0.0
    max_size_ratio: Number(0.01, 1.0) | None = None
    prefer: OneOf(*PREFERENCES) = "speed"
    """Among candidates that pass every threshold: the fastest on a mixed batch of 32 unless much
    larger than the smallest (maas.builder.selection), or simply the smallest."""


class ServingLimits(Table):
    max_batch: Integer(1, 1024) = 32
    max_sequence_length: Integer(1, 8192) | None = None


class LambdaSettings(Table):
    architecture: OneOf(*ARCHITECTURES) = "arm64"
    memory_mb: Integer(128, 10240) = 1769
    timeout_s: Integer(1, 28) = 15
    reserved_concurrency: Integer(1, 10000) | None = None
    provisioned_concurrency: Integer(0, 10000) = 0
    snap_start: Flag() = False
    artifact: OneOf(*ARTIFACT_LOCATIONS) = "package"
    tracing: OneOf(*TRACING_MODES) = "handler"
    """X-Ray: "handler" records Lambda's segments and the handler's own subsegments (Powertools'
    Tracer, which imports the X-Ray SDK and, through its sampler, botocore: ~0.45 s more cold start,
    measured here); "service" records Lambda's segments only and skips that import."""


def BatchSizes():
    def check(value):
        if (not isinstance(value, list) or not value
                or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 1024 for x in value)):
            _fail("must be a non-empty list of integers in [1, 1024]", value)
        return tuple(value)

    return Annotated[tuple[int, ...], BeforeValidator(check)]


class SageMakerSettings(Table):
    """A heavy model's GPU endpoint (NVIDIA Triton on SageMaker); never part of the artifact."""

    instance_type: Text(_INSTANCE_TYPE) = "ml.g5.xlarge"
    min_instances: Integer(0, 100) = 1
    """0: scale to zero (an inference component on an endpoint that may have no instance)."""
    max_instances: Integer(1, 100) = 2
    target_invocations_per_instance: Integer(1, 100000) = 200
    """Auto scaling's target, invocations per minute per instance (per model copy with scale to zero)."""
    image_uri: Text() | None = None
    """Another serving image than AWS's Triton (it must then read what Triton reads)."""
    accelerator: OneOf(*ACCELERATORS) = "none"
    """tensorrt-fp16: Triton runs the graph through TensorRT in FP16 (faster; not the parity the build measured)."""
    max_queue_delay_us: Integer(0, 1_000_000) = 2000
    """How long Triton's dynamic batcher may hold a request to batch it with others."""
    preferred_batch_sizes: BatchSizes() | None = None
    """Batch sizes the batcher sends at once (default: powers of two from 8 below serving.max_batch, at most 3)."""


class ModelSpec(Table):
    """One model of the manifest, validated. `parity` is the task's own parity table."""

    name: str
    version: Text(_VERSION)
    task: str
    target: OneOf(*TARGETS) = "lambda"
    description: Text() = ""
    labels: Labels() | None = None
    source: Source
    optimization: Optimization = Optimization()
    serving: ServingLimits = ServingLimits()
    parity: Any
    explain: Any = None
    """The task's `explain` table (its limits and background); None for a task without explanations."""
    lambda_settings: LambdaSettings = Field(LambdaSettings(), alias="lambda")
    sagemaker: SageMakerSettings | None = None
    versions: tuple[str, ...] = ()
    """Every version of the model that is kept and callable, live included (the `versions` form);
    just this spec's version in the single-version form."""
    live: bool = True
    """Whether this is the version /models/<name>/invoke answers from."""

    @property
    def side_by_side(self) -> bool:
        """Several versions are kept: each gets its own function, which its pinned routes reach."""
        return len(self.versions) > 1

    def artifact_settings(self) -> dict:
        """What shapes the built artifact, and nothing that only shapes its deployment: the build
        cache key hashes this, so a changed memory size, concurrency, architecture, instance type,
        target or description reuses the artifact. Signing is not part of it either: a signature
        sits beside the artifact, so re-signing never rebuilds."""
        return self.model_dump(
            mode="json",
            include={"name", "version", "task", "labels", "source", "optimization", "serving", "parity", "explain"},
        )


KMS_PREFIX = "kms:"


class Signing(Table):
    """The top-level [signing] table: who signs the model cards, and whom the functions trust."""

    key: Text() | None = None
    """What `maas build` and `maas sign` sign with: an Ed25519 private key file (PEM, from
    `maas keygen`), or "kms:<key ARN>" for an AWS KMS ECC_NIST_EDWARDS25519 key."""
    public_keys: tuple[Text(), ...] = ()
    """Public key files (PEM) every function trusts; two while a key is rotated. Empty: the
    functions serve unsigned artifacts (signing is opt-in)."""

    def key_path(self, root: Path) -> Path | None:
        if self.key is None or self.key.startswith(KMS_PREFIX):
            return None
        path = Path(self.key)
        return path if path.is_absolute() else root / path

    def public_key_paths(self, root: Path) -> list[Path]:
        return [p if (p := Path(k)).is_absolute() else root / p for k in self.public_keys]


QUOTA_PERIODS = ("day", "month")


class Tenant(Table):
    """One customer of the API (a top-level [tenants.<name>] table): its own API key, usage plan and models."""

    name: str
    models: tuple[Text(), ...]
    """The models it may call (each at every kept version); ["*"]: every model."""
    rate: Number(0.001, 10000.0) = 10.0
    """Requests per second, on average (API Gateway's usage plan throttle; a token bucket locally)."""
    burst: Integer(1, 5000) = 20
    """Requests at once above the rate."""
    quota: Integer(1, 1_000_000_000) | None = None
    """Requests per quota_period; none: unlimited."""
    quota_period: OneOf(*QUOTA_PERIODS) = "day"

    def may_call(self, model: str) -> bool:
        return "*" in self.models or model in self.models


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: Path
    models: tuple[ModelSpec, ...]
    """One spec per model: its live version."""
    kept: tuple[ModelSpec, ...] = ()
    """Every kept version of every model (the live ones included), in manifest order."""
    signing: Signing = Signing()
    tenants: tuple[Tenant, ...] = ()
    """Customers with their own keys and quotas; none: one API key for every caller."""

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

    def versions_of(self, name: str) -> list[ModelSpec]:
        """Every kept version of the model, each a complete spec (the single-version form: its one spec)."""
        live = self.get(name)
        return [s for s in self.kept if s.name == name] or [live]

    def artifacts(self, names: list[str] | tuple[str, ...] | None = None) -> list[ModelSpec]:
        """Every kept version of the selected models (all models when `names` is empty): what the
        build builds, the catalog lists and the functions serve."""
        return [v for spec in self.select(names) for v in self.versions_of(spec.name)]


# --- errors as the README words them ----------------------------------------------------------------


def _messages(exc: ValidationError, where: str) -> str:
    unknown: dict[str, list[str]] = {}
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        if err["type"] == "extra_forbidden":
            unknown.setdefault(".".join([where, *loc[:-1]]), []).append(loc[-1])
            continue
        path = ".".join([where, *loc])
        if err["type"] == "missing":
            lines.append(f"{path}: missing required key")
        elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
            lines.append(f"{path}: must be a table, got {_show(err.get('input'))}")
        else:
            lines.append(f"{path}: {err['msg']}")
    lines += [f"{path}: unknown key(s) {', '.join(map(repr, sorted(keys)))}" for path, keys in unknown.items()]
    return "; ".join(lines)


def _validate(model: type[BaseModel], data: Any, where: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_messages(exc, where)) from None


def _task(name: str, where: str):
    from .builder.tasks import BUILD_TASKS

    if not isinstance(name, str) or name not in BUILD_TASKS:
        raise ManifestError(f"{where}.task: must be one of {', '.join(BUILD_TASKS)}, got {_show(name)}")
    return BUILD_TASKS[name]


VERSION_KEYS = frozenset({"versions", "live"})
"""The keys of a model's table that choose its versions (not settings of any one version)."""
FIXED_PER_MODEL = ("task", "target", "version", "versions", "live", "sagemaker")
"""What a version's own table may not change: every version is served the same way at the same paths."""


def _merge(base: dict, override: dict) -> dict:
    """A version's table over its model's: a table key (optimization = {...}) changes only the keys
    it names, any other key replaces the model's value."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def _versions(name: str, data: dict) -> tuple[dict, list[tuple[str, dict]], str]:
    """The model's own table (without the version keys), each kept version's overrides, and the live version."""
    where = f"models.{name}"
    if "versions" not in data:
        if "live" in data:
            raise ManifestError(f"{where}.live: only a model with `versions` has a live version to choose")
        if "version" not in data:
            raise ManifestError(f"{where}.version: missing required key (or `versions` with `live` to keep several)")
        return data, [(data["version"], {})], data["version"]
    if "version" in data:
        raise ManifestError(f"{where}.version: give `version` (one) or `versions` (several with `live`), not both")
    if data.get("target") == "sagemaker":
        raise ManifestError(f"{where}.versions: versions side by side are for Lambda models (target = 'lambda'); "
                            "a heavy model keeps one version per endpoint")
    raw = data["versions"]
    if isinstance(raw, list):
        entries = [(v, {}) for v in raw]
    elif isinstance(raw, dict):
        entries = list(raw.items())
    else:
        raise ManifestError(f"{where}.versions: must be a list of versions or a table of version tables, got {_show(raw)}")
    if not entries:
        raise ManifestError(f"{where}.versions: must name at least one version")
    seen = set()
    for version, override in entries:
        if not isinstance(version, str) or not _VERSION.match(version):
            raise ManifestError(f"{where}.versions: {_show(version)} is not a version: must match {_VERSION.pattern}")
        if version in seen:
            raise ManifestError(f"{where}.versions: {version} is listed twice")
        seen.add(version)
        if not isinstance(override, dict):
            raise ManifestError(f"{where}.versions.{version}: must be a table, got {_show(override)}")
        fixed = sorted(set(override) & set(FIXED_PER_MODEL))
        if fixed:
            raise ManifestError(f"{where}.versions.{version}: {', '.join(fixed)} cannot differ between versions "
                                "(set it on the model's table)")
    live = data.get("live")
    if live is None and len(entries) == 1:
        live = entries[0][0]
    if live is None:
        raise ManifestError(f"{where}.live: missing required key: which of {', '.join(v for v, _ in entries)} "
                            f"/models/{name}/invoke answers from")
    if live not in seen:
        raise ManifestError(f"{where}.live: must be one of the versions ({', '.join(v for v, _ in entries)}), got {_show(live)}")
    base = {k: v for k, v in data.items() if k not in VERSION_KEYS}
    return base, entries, live


def _model(name: str, data: Any) -> list[ModelSpec]:
    """Every kept version of one model, each a complete spec; the live one first."""
    where = f"models.{name}"
    if not _NAME.match(name):
        raise ManifestError(f"{where}: model names must match {_NAME.pattern} (they become URL paths and AWS names)")
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: must be a table, got {_show(data)}")
    base, entries, live = _versions(name, data)
    versions = tuple(v for v, _ in entries)
    # The model's own table first (its errors name the model's keys), then each version's table
    # over it (their errors name the version's table).
    own = _version(name, {**base, "version": live}, where, versions, True)
    overrides = dict(entries)
    specs = [own if not overrides[live] else
             _version(name, {**_merge(base, overrides[live]), "version": live}, f"{where}.versions.{live}", versions, True)]
    specs += [_version(name, {**_merge(base, override), "version": version}, f"{where}.versions.{version}", versions, False)
              for version, override in entries if version != live]
    return specs


def _version(name: str, data: dict, where: str, versions: tuple[str, ...], live: bool) -> ModelSpec:
    if "task" not in data:
        raise ManifestError(f"{where}.task: missing required key")
    task = _task(data["task"], where)
    if "parity" not in data:
        raise ManifestError(f"{where}.parity: missing required key")
    parity = task.parity_settings(_validate(task.parity, data["parity"], f"{where}.parity"), f"{where}.parity")
    explain = None
    if task.explain is not None:
        explain = task.explain_settings(_validate(task.explain, data.get("explain", {}), f"{where}.explain"), f"{where}.explain")
    elif "explain" in data:
        raise ManifestError(f"{where}.explain: {data['task']} models serve no explanations")
    spec = _validate(ModelSpec, {**data, "name": name, "parity": parity, "explain": explain,
                                  "versions": versions, "live": live}, where)

    source = spec.source
    if source.type == "recipe" and not source.recipe:
        raise ManifestError(f"{where}.source.recipe: missing required key for type = 'recipe'")
    if source.type != "recipe" and not (source.path or source.package):
        raise ManifestError(f"{where}.source.path: missing required key for type = {source.type!r}")
    if source.type == "onnx" and task.inputs == "text" and not source.tokenizer:
        raise ManifestError(f"{where}.source.tokenizer: a text model brought as .onnx needs its tokenizer.json")
    if spec.labels is not None and not task.labelled:
        raise ManifestError(f"{where}.labels: a {spec.task} model has no labels")
    if task.inputs == "text" and spec.serving.max_sequence_length is None:
        raise ManifestError(f"{where}.serving.max_sequence_length: missing required key for a text model")
    if task.inputs != "text" and spec.serving.max_sequence_length is not None:
        raise ManifestError(f"{where}.serving.max_sequence_length: only text models have a sequence length")
    lam = spec.lambda_settings
    if lam.snap_start and lam.provisioned_concurrency:
        raise ManifestError(
            f"{where}.lambda.snap_start: AWS does not allow SnapStart together with provisioned_concurrency; choose one"
        )
    if spec.sagemaker is not None and spec.sagemaker.max_instances < spec.sagemaker.min_instances:
        raise ManifestError(f"{where}.sagemaker.max_instances: must be >= min_instances")
    too_large = [n for n in (spec.sagemaker.preferred_batch_sizes or ()) if n > spec.serving.max_batch] if spec.sagemaker else []
    if too_large:
        raise ManifestError(
            f"{where}.sagemaker.preferred_batch_sizes: {too_large[0]} is larger than serving.max_batch ({spec.serving.max_batch})"
        )
    if spec.target == "sagemaker" and spec.sagemaker is None:
        spec = spec.model_copy(update={"sagemaker": SageMakerSettings()})
    return spec


def parse_manifest(text: str, path: Path) -> Manifest:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{path.name}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"models", "signing", "tenants"})
    if unknown:
        raise ManifestError(f"{path.name}: unknown key(s) {', '.join(map(repr, unknown))}")
    signing = _validate(Signing, data.get("signing", {}), "signing")
    if signing.key is not None and not signing.public_keys:
        raise ManifestError(
            "signing.public_keys: missing required key when signing.key is set: list the public key file(s) "
            "the functions trust (maas keygen writes one), or the signatures would protect nothing"
        )
    if signing.key is not None and signing.key.startswith(KMS_PREFIX) and len(signing.key) == len(KMS_PREFIX):
        raise ManifestError('signing.key: "kms:" must be followed by the KMS key ARN')
    if "models" not in data:
        raise ManifestError(f"{path.name}.models: missing required key")
    models = data["models"]
    if not isinstance(models, dict):
        raise ManifestError(f"{path.name}.models: must be a table, got {_show(models)}")
    if not models:
        raise ManifestError(f"{path.name}: [models] is empty")
    kept = [_model(name, body) for name, body in models.items()]
    tenants = _tenants(data.get("tenants", {}), set(models))
    return Manifest(path=path.resolve(), models=tuple(specs[0] for specs in kept),
                    kept=tuple(spec for specs in kept for spec in specs), signing=signing, tenants=tenants)


def _tenants(data: Any, models: set[str]) -> tuple[Tenant, ...]:
    if not isinstance(data, dict):
        raise ManifestError(f"tenants: must be a table of tenants, got {_show(data)}")
    tenants = []
    for name, body in data.items():
        where = f"tenants.{name}"
        if not _NAME.match(name):
            raise ManifestError(f"{where}: tenant names must match {_NAME.pattern} (they name API keys and metrics)")
        if not isinstance(body, dict):
            raise ManifestError(f"{where}: must be a table, got {_show(body)}")
        tenant = _validate(Tenant, {**body, "name": name}, where)
        if not tenant.models:
            raise ManifestError(f"{where}.models: must name at least one model (or \"*\" for all)")
        unknown = [m for m in tenant.models if m != "*" and m not in models]
        if unknown:
            raise ManifestError(f"{where}.models: unknown model {unknown[0]!r} (the manifest has: {', '.join(sorted(models))})")
        tenants.append(tenant)
    return tuple(tenants)


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
