"""Everything a deployment uploads, prepared in plain Python before synth (no Docker).

- `check_built`: every manifest model must have build/<name>/<version>/card.json, or synth stops
  with one message listing what to build.
- `stage_function`: a function's asset folder = its handler folder (functions/model or
  functions/sagemaker_proxy) with its bytecode + the model artifact in model/ (when packaged) +
  catalog.json.
- `stage_served_model`: what a heavy model's GPU endpoint and proxy are given (maas.triton): the
  model.tar.gz holding its Triton model repository, and the proxy's copy of the artifact without
  the graph (card, tokenizer, the served graph's KServe v2 metadata).

Staged folders live under .cache/infra/, named by a content hash that is also the CDK asset hash,
so an unchanged asset is neither copied nor re-hashed on the next synth.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from maas import layers
from maas.paths import BUILD_DIR, CACHE_KEEP, CATALOG_FILE, artifact_dir, materialize, tree_hash
from maas.triton.repository import ARCHIVE_FILE, content_key, served_model, write_archive, write_proxy_artifact
from maas_runtime import CARD_FILE, ArtifactError, ModelCard, sha256_of

STAGING_DIR = Path(".cache") / "infra"
FUNCTIONS_DIR = "functions"
MODEL_HANDLER = "model"
PROXY_HANDLER = "sagemaker_proxy"
PACKAGED_MODEL_DIR = "model"
"""Where a packaged artifact sits inside a function asset (MAAS_MODEL_DIR is relative to the handler)."""


class NotBuiltError(RuntimeError):
    """The manifest names models that `maas build` has not produced yet."""


@dataclass(frozen=True)
class StagedAsset:
    path: Path
    hash: str


def check_built(manifest) -> dict[str, ModelCard]:
    """Each model's card, or one error naming every model still to build and the command."""
    root = manifest.root
    cards, missing = {}, []
    for spec in manifest.models:
        folder = artifact_dir(root, spec.name, spec.version)
        where = (folder / CARD_FILE).relative_to(root)
        try:
            card = ModelCard.read(folder)
        except ArtifactError as exc:
            missing.append(f"{spec.name} {spec.version} ({where}: {exc})")
            continue
        if card.name != spec.name or card.version != spec.version:
            missing.append(f"{spec.name} {spec.version} ({where} is for {card.name} {card.version})")
            continue
        cards[spec.name] = card
    catalog = root / BUILD_DIR / CATALOG_FILE
    if not missing and not catalog.is_file():
        missing.append(f"the catalog ({catalog.relative_to(root)})")
    if missing:
        names = " ".join(s.name for s in manifest.models)
        raise NotBuiltError(
            "cannot synthesize: models not built: " + "; ".join(missing)
            + f". Run `.venv/bin/maas build` (or `maas build {names}`) first, then synth again."
        )
    return cards


def stage_function(root: Path, handler: str, name: str, artifact: Path | None, staging_dir: Path,
                   python_version: str = layers.LAYER_PYTHON_VERSION) -> StagedAsset:
    """The folder Lambda runs: app.py (and siblings) with their bytecode, model/ when packaged, catalog.json.

    The handler's modules are compiled as the layers' are (`layers.compile_bytecode`): Lambda's
    /var/task is read-only, so without bytecode every cold start compiles app.py again (`compile()`
    of the model handler's: 1.8 ms on the AVX-512 bench machine). The key names the compiler, so an
    asset staged without one is staged again once one is found. `python_version`: the runtime's
    (the tests stage for this machine's).
    """
    handler_dir = root / FUNCTIONS_DIR / handler
    catalog = root / BUILD_DIR / CATALOG_FILE
    compiler = layers.bytecode_compiler(python_version)
    digest = hashlib.sha256()
    digest.update(tree_hash(handler_dir).encode())
    digest.update(f"bytecode:{python_version}:{compiler[1] if compiler else None}".encode())
    digest.update(sha256_of(catalog).encode())
    if artifact is not None:
        digest.update(tree_hash(artifact).encode())
    key = digest.hexdigest()[:20]

    def fill(work: Path) -> None:
        shutil.copytree(handler_dir, work, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
        shutil.copy2(catalog, work / CATALOG_FILE)
        layers.compile_bytecode(work, compiler, python_version)
        if artifact is not None:
            shutil.copytree(artifact, work / PACKAGED_MODEL_DIR)

    path = materialize(Path(staging_dir) / "functions" / f"{name}-{key}", fill, keep=CACHE_KEEP)
    return StagedAsset(path.resolve(), key)


@dataclass(frozen=True)
class ServedAssets:
    archive: StagedAsset
    """model.tar.gz: <model>/config.pbtxt + <model>/1/model.onnx, for SageMaker's Triton."""
    proxy_artifact: Path
    """card.json, tokenizer.json, kserve-model.json: packaged with the proxy function."""


def stage_served_model(spec, artifact: Path, staging_dir: Path) -> ServedAssets:
    """The archive and the proxy's artifact copy, made once per content: the artifact, the
    manifest's `sagemaker` table and the code that makes them (maas.triton). The archive is
    reproducible byte for byte, so an unchanged model keeps its S3 object and asset hash."""
    folder = Path(staging_dir) / "sagemaker" / content_key(spec, artifact)

    def fill(work: Path) -> None:
        model = served_model(artifact, spec.sagemaker)
        write_archive(model, work / ARCHIVE_FILE)
        write_proxy_artifact(model, artifact, work / "proxy")

    materialize(folder, fill, keep=CACHE_KEEP)
    archive = (folder / ARCHIVE_FILE).resolve()
    return ServedAssets(StagedAsset(archive, sha256_of(archive)[:20]), (folder / "proxy").resolve())
