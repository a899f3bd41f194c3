"""The slim layers: sizes against Lambda's limit, and a layer built the same way for this machine
serving the demo models in a process that sees only the function asset, the layers and the stdlib."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from maas import layers
from maas.template_api import WorkerFunction, base_environment, load_assembly

LAMBDA_LIMIT_MB = 250
TARGET_MB = 170
"""Ours: 152 MB of code and model, plus the layers' bytecode (~9 MB, without which every cold start
compiles the layers' modules from source: test_layers_carry_the_bytecode_their_imports_need)."""


def test_function_assets_carry_the_runtimes_bytecode(synth):
    # GIVEN what cdk deploy would upload, staged where this machine has the runtime's Python
    if layers.bytecode_compiler(layers.LAYER_PYTHON_VERSION) is None:
        pytest.skip(f"no Python {layers.LAYER_PYTHON_VERSION} here: assets are staged without bytecode")
    tag = "cpython-" + layers.LAYER_PYTHON_VERSION.replace(".", "")
    handlers = [f for f in load_assembly(synth.outdir).functions.values() if f.environment.get("MAAS_MODEL_NAME")]
    assert handlers and all((f.asset / "app.py").is_file() for f in handlers)
    # THEN every model and proxy function's app.py has its bytecode for Lambda's Python beside it (/var/task is read-only)
    for function in handlers:
        assert (function.asset / "__pycache__" / f"app.{tag}.pyc").is_file(), function.logical_id


def _mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def test_largest_function_with_its_layers_fits_lambda(synth):
    # GIVEN what cdk deploy would upload (the assets of the synthesized assembly)
    assembly = load_assembly(synth.outdir)
    sizes = {}
    for function in assembly.functions.values():
        name = function.environment.get("MAAS_MODEL_NAME") or function.logical_id  # a pre-traffic hook: its id
        sizes[name] = (_mb(function.asset), sum(_mb(layer / "python") for layer in function.layers))
    largest = max(sizes, key=lambda n: sum(sizes[n]))
    own, with_layers = sizes[largest]
    print(f"\nunzipped: {largest} function {own:.1f} MB + layers {with_layers:.1f} MB = {own + with_layers:.1f} MB "
          f"(all: {', '.join(f'{n} {sum(v):.1f}' for n, v in sizes.items())})")
    # THEN it stays under Lambda's hard limit and within our target
    assert own + with_layers < LAMBDA_LIMIT_MB
    assert own + with_layers <= TARGET_MB


def test_layer_pins_match_the_tested_environment():
    # The layer ships the versions the rest of the suite runs with.
    for requirement in layers.RUNTIME.requirements + layers.API.requirements:
        name, version = requirement.split("==")
        assert importlib.metadata.version(name.split("[")[0]) == version, requirement


@pytest.fixture(scope="module")
def host_layers(repo_root):
    return layers.host_layers(repo_root / "shared", repo_root / ".cache" / "layers")


def test_layer_leaves_out_what_serving_does_not_import(host_layers):
    runtime = host_layers["runtime"]
    top = {p.name for p in runtime.content.iterdir()}
    assert {"onnxruntime", "tokenizers", "numpy", "maas_runtime"} <= top
    for left_out in ("huggingface_hub", "sympy", "google", "flatbuffers", "yaml", "hf_xet"):
        assert left_out not in top
    for pruned in ("quantization", "transformers", "tools"):
        assert not (runtime.content / "onnxruntime" / pruned).exists()
    assert not list(runtime.content.rglob("*.pyi"))
    assert "huggingface-hub" in runtime.dropped
    print(f"\nruntime layer (host build): {runtime.installed_bytes / 1e6:.1f} MB installed -> "
          f"{runtime.unzipped_bytes / 1e6:.1f} MB; dropped {sorted(runtime.dropped)}")


_COMPILED_AT_IMPORT = """
import importlib.machinery, json, sys
compiled = []
to_code = importlib.machinery.SourceFileLoader.source_to_code
def counting(self, data, path, *args, **kwargs):
    compiled.append(str(path))
    return to_code(self, data, path, *args, **kwargs)
importlib.machinery.SourceFileLoader.source_to_code = counting
sys.path[:0] = sys.argv[1:]
import numpy, onnxruntime, tokenizers, maas_runtime.session, maas_api.function, maas_api.schemas, app
print(json.dumps(compiled))
"""


def test_layers_carry_the_bytecode_their_imports_need(host_layers, artifacts, repo_root, tmp_path):
    from infra.staging import MODEL_HANDLER, stage_function

    # GIVEN the layers as built (here for this machine's Python, as for Lambda's 3.12 where one is found)
    for layer in host_layers.values():
        assert layer.bytecode["python"] == platform.python_version() and not layer.bytecode["failed"]
        sources = list(layer.content.rglob("*.py"))
        assert sources and [p for p in sources if not Path(importlib.util.cache_from_source(str(p))).is_file()] == []
        print(f"\n{layer.name} layer: {layer.bytecode['files']} modules compiled, {layer.bytecode['bytes'] / 1e6:.1f} MB")
    # WHEN an interpreter that cannot write bytecode (-B, as on Lambda's read-only /opt) imports
    # what the model handler imports from them
    # (and the model function's own app.py, from its staged asset, read-only /var/task on Lambda)
    function = stage_function(repo_root, MODEL_HANDLER, "minilm", None, tmp_path,
                              python_version=layers.host_platform().python_version).path
    assert Path(importlib.util.cache_from_source(str(function / "app.py"))).is_file()
    paths = [str(function)] + [str(layer.content) for layer in host_layers.values()]
    done = subprocess.run([sys.executable, "-I", "-B", "-c", _COMPILED_AT_IMPORT, *paths],
                          capture_output=True, text=True, timeout=300, env=base_environment())
    assert done.returncode == 0, done.stderr[-2000:]
    compiled = json.loads(done.stdout.strip().splitlines()[-1])
    # THEN no module of the layers or of the function is compiled from source: each comes from its bytecode
    assert [path for path in compiled if any(path.startswith(p) for p in paths)] == []


def _event(events_dir: Path, name: str) -> dict:
    return json.loads((events_dir / name).read_text())


@pytest.mark.parametrize("model", ["minilm", "digits"])
def test_demo_models_serve_from_the_host_built_layer_alone(model, artifacts, host_layers, repo_root, tmp_path):
    from infra.staging import MODEL_HANDLER, stage_function
    from maas.local_api import LambdaContext, load_function_module
    from maas.paths import artifact_dir

    spec = artifacts.get(model)
    folder = artifact_dir(repo_root, spec.name, spec.version)
    asset = stage_function(repo_root, MODEL_HANDLER, model, folder, tmp_path)
    env = base_environment() | {"MAAS_MODEL_NAME": model, "MAAS_MODEL_DIR": "model", "MAAS_CATALOG_PATH": "catalog.json"}
    # GIVEN a process that sees only the staged function, the two layers and the standard library
    worker = WorkerFunction(model, asset.path, [Path(host_layers["runtime"].path), Path(host_layers["api"].path)], env)
    try:
        assert not [p for p in worker.sys_path if "site-packages" in p]
        event = _event(repo_root / "tests" / "events", f"invoke_{model}.json")
        # WHEN the handler answers the canned API Gateway event
        answer = worker.invoke(event)
        files = worker.module_files(["onnxruntime", "tokenizers", "numpy", "maas_runtime", "aws_lambda_powertools", "app"])
    finally:
        worker.close()
    # THEN everything came from the layers, and the answer matches the handler run in this process
    home = {"onnxruntime": "runtime", "numpy": "runtime", "maas_runtime": "runtime", "aws_lambda_powertools": "api"}
    if spec.task != "image-classification":
        home["tokenizers"] = "runtime"  # only text tasks import it
    else:
        assert files["tokenizers"] is None
    for name, layer in home.items():
        assert Path(files[name]).resolve().is_relative_to(host_layers[layer].content.resolve()), (name, files[name])
    assert files["app"].startswith(str(asset.path))
    handler = load_function_module(repo_root / "functions" / "model")
    expected = handler.create_function(handler.Config(model_name=model, model_dir=str(folder),
                                                      catalog_path=str(repo_root / "build" / "catalog.json"))).invoke(event, LambdaContext(model))
    assert answer["statusCode"] == expected["statusCode"] == 200
    got, want = json.loads(answer["body"]), json.loads(expected["body"])
    assert got["model"] == model and len(got["outputs"]) == len(want["outputs"]) > 0
    assert json.dumps(got["outputs"]) == json.dumps(want["outputs"])  # same code, same onnxruntime build: bit-identical
