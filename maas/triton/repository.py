"""What a heavy model's servers are given, made from its built artifact (never part of the build).

- the SageMaker archive (`write_archive`): model.tar.gz holding a Triton model repository,
  ``<model>/config.pbtxt`` + ``<model>/1/model.onnx`` (the served graph), byte-for-byte
  reproducible so an unchanged model keeps its S3 object and its CDK asset hash;
- the proxy's copy of the artifact (`write_proxy_artifact`): card.json and the files the task
  opens (tokenizer.json), without the graph, plus the served graph's KServe v2 metadata;
- a local repository for `maas serve` (`write_local_repository`, or `local_repository_from_archive`
  for `maas serve --template`): the same graph and batching, with our Python-backend model.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from maas.paths import tree_hash
from maas_runtime import CARD_FILE, ModelCard, verify_artifact
from maas_runtime.kserve import METADATA_FILE

from . import config as triton_config
from .graph import metadata, served_graph

PYTHON_BACKEND_MODEL = Path(__file__).resolve().parent / "python_backend" / "model.py"
ARCHIVE_FILE = "model.tar.gz"
GZIP_LEVEL = 1
"""A graph's float weights barely compress; a higher level only costs synth seconds."""


def content_key(spec, artifact: Path) -> str:
    """What everything made here depends on: the artifact, the manifest's `sagemaker` table and
    this package's code. Staged folders are named by it, so they are made once per content."""
    digest = hashlib.sha256()
    digest.update(tree_hash(Path(artifact)).encode())
    digest.update(spec.sagemaker.model_dump_json().encode())
    digest.update(tree_hash(Path(__file__).resolve().parent).encode())
    return f"{spec.name}-{digest.hexdigest()[:20]}"


@dataclass(frozen=True)
class ServedModel:
    """One model as the servers see it: the graph's bytes, its metadata, its GPU config."""

    card: ModelCard
    graph: bytes
    metadata: dict
    config: object
    """The GPU ModelConfig (model_config_pb2.ModelConfig)."""

    @property
    def name(self) -> str:
        return self.card.name


def served_model(folder: Path, settings) -> ServedModel:
    """The served model for the artifact in ``folder`` (verified first) and the manifest's `sagemaker` settings."""
    card = verify_artifact(folder)
    graph = served_graph(card, folder)
    meta = metadata(card.name, graph, triton_config.GPU_PLATFORM)
    config = triton_config.gpu_config(meta, settings, card.serving.max_batch)
    # Triton's schema reads back exactly what was made (render -> parse round trip).
    if triton_config.parse(triton_config.render(config)) != config:
        raise triton_config.ConfigError(f"{card.name}: config.pbtxt does not survive a round trip through Triton's schema")
    return ServedModel(card, graph.SerializeToString(), meta, config)


def write_archive(model: ServedModel, output: Path) -> Path:
    """model.tar.gz for SageMaker's Triton: sorted entries, zero times and owners, no gzip name or time."""
    members = {
        f"{model.name}/{triton_config.CONFIG_FILE}": triton_config.render(model.config).encode("utf-8"),
        f"{model.name}/{triton_config.VERSION}/{triton_config.MODEL_FILENAME}": model.graph,
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for folder in (model.name, f"{model.name}/{triton_config.VERSION}"):
                    tar.addfile(_info(folder, tarfile.DIRTYPE, 0o755))
                for name, data in sorted(members.items()):
                    info = _info(name, tarfile.REGTYPE, 0o644)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return output


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_proxy_artifact(model: ServedModel, folder: Path, dest: Path) -> Path:
    """card.json + every listed file but the graph, and kserve-model.json, into ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in [CARD_FILE, *(n for n in model.card.files if n != model.card.model_file)]:
        shutil.copy2(Path(folder) / name, dest / name)
    (dest / METADATA_FILE).write_text(json.dumps(model.metadata, indent=2) + "\n", encoding="utf-8")
    return dest


def write_local_repository(config, graph: bytes | Path, dest: Path) -> Path:
    """A Triton model repository in ``dest`` for the local tritonserver (or the stand-in):
    ``<model>/config.pbtxt`` (Python backend, CPU) + ``<model>/1/model.onnx`` + ``<model>/1/model.py``."""
    local = triton_config.local_config(config)
    version = Path(dest) / local.name / triton_config.VERSION
    version.mkdir(parents=True, exist_ok=True)
    (version.parent / triton_config.CONFIG_FILE).write_text(triton_config.render(local), encoding="utf-8")
    target = version / triton_config.MODEL_FILENAME
    if isinstance(graph, bytes):
        target.write_bytes(graph)
    else:
        shutil.copyfile(graph, target)
    shutil.copyfile(PYTHON_BACKEND_MODEL, version / PYTHON_BACKEND_MODEL.name)
    return Path(dest)


def local_repository_from_archive(archive: Path, dest: Path) -> tuple[Path, str]:
    """The local repository for a synthesized model.tar.gz, and its model's name."""
    unpacked = Path(dest) / "archive"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    models = [p for p in unpacked.iterdir() if (p / triton_config.CONFIG_FILE).is_file()]
    if len(models) != 1:
        raise triton_config.ConfigError(f"{archive.name} must hold one model folder with a {triton_config.CONFIG_FILE}")
    config = triton_config.parse((models[0] / triton_config.CONFIG_FILE).read_text(encoding="utf-8"))
    graph = models[0] / triton_config.VERSION / (config.default_model_filename or triton_config.MODEL_FILENAME)
    write_local_repository(config, graph, Path(dest) / "repository")
    shutil.rmtree(unpacked)
    return Path(dest) / "repository", config.name
