"""Serving footprint on disk: installed distributions (from their RECORD files) plus the model files.

Two views: the packages each stack names directly, and their whole dependency closure (what
`pip install` puts in a Lambda layer or a container). Bytecode caches are left out of both (a
wheel does not ship them); what `cdk deploy` uploads (`deployed_bytes`) counts the layers as built,
their bytecode included.
"""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

# What the kit's Lambda function imports at serve time (pydantic: request validation;
# aws-xray-sdk: Powertools' Tracer imports it even with tracing disabled).
KIT_PACKAGES = ("onnxruntime", "tokenizers", "numpy", "aws-lambda-powertools", "pydantic", "aws-xray-sdk")
# What a user would otherwise deploy for the same model.
BASELINE_PACKAGES = ("torch", "transformers", "safetensors", "tokenizers", "numpy")
# Lambda's Python runtime already has these; they are not part of the package.
PROVIDED_BY_LAMBDA = {"boto3", "botocore", "s3transfer", "jmespath", "urllib3", "python-dateutil", "six"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_bytes(name: str) -> int:
    dist = md.distribution(name)
    total = 0
    for f in dist.files or []:
        if "__pycache__" in f.parts:
            continue
        if f.size is not None:
            total += f.size
            continue
        path = Path(dist.locate_file(f))
        if path.is_file():
            total += path.stat().st_size
    return total


def closure(roots: tuple[str, ...]) -> list[str]:
    """The roots and everything they require (without extras), as installed here."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        key = _norm(name)
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[key] = dist.metadata["Name"]
        for req in dist.requires or []:
            if ";" in req and "extra" in req.split(";", 1)[1]:
                continue
            match = _NAME.match(req.strip())
            if match:
                todo.append(match.group(0))
    return sorted(seen.values(), key=str.lower)


def stack_bytes(roots: tuple[str, ...], model_files: list[Path], extra_dirs: list[Path] = ()) -> dict:
    named = {name: distribution_bytes(name) for name in roots}
    deps = [d for d in closure(roots) if _norm(d) not in PROVIDED_BY_LAMBDA]
    everything = {name: distribution_bytes(name) for name in deps}
    own_code = sum(_tree_bytes(d) for d in extra_dirs)
    model = sum(p.stat().st_size for p in model_files)
    return {
        "packages": named,
        "packages_bytes": sum(named.values()),
        "closure": everything,
        "closure_bytes": sum(everything.values()),
        "own_code_bytes": own_code,
        "model_bytes": model,
        "total_bytes": sum(named.values()) + own_code + model,
        "total_closure_bytes": sum(everything.values()) + own_code + model,
    }


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def baseline_weight_files(folder: Path) -> list[Path]:
    """What transformers reads to serve the model: config, tokenizer, safetensors weights."""
    wanted = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
    files = [folder / n for n in wanted if (folder / n).exists()]
    return files + sorted(folder.glob("*.safetensors"))


def deployed_bytes(architecture: str, root: Path, model_files: list[Path], log=print) -> dict:
    """What `cdk deploy` uploads for one model function, unzipped: the slim layers as maas.layers
    builds them for the function's architecture (cached after the first build) + handler code + model."""
    from ..layers import build_layers

    try:
        layers = build_layers(architecture, root / "shared", log=log)
    except Exception as exc:  # no package index and no cache: report it, keep the other figures
        return {"error": f"{exc.__class__.__name__}: {exc}"}
    layer_bytes = {name: layer.unzipped_bytes for name, layer in layers.items()}
    handler = _tree_bytes(root / "functions" / "model")
    model = sum(p.stat().st_size for p in model_files)
    return {
        "architecture": architecture,
        "layers": layer_bytes,
        "handler_code_bytes": handler,
        "model_bytes": model,
        "total_bytes": sum(layer_bytes.values()) + handler + model,
    }
