"""A signed deployment: the manifest's public keys reach each model function's environment, and the
function run from the synthesized assembly (`maas serve --template`) refuses a card edited there."""

from __future__ import annotations

import json
import shutil

import pytest

from maas.builder import write_catalog
from maas.builder.signing import keygen, manifest_signer, sign_models, trusted_keys
from maas.local_api import LocalApi, configure_local_environment
from maas.manifest import load_manifest
from maas.template_api import load_assembly, template_stack

MANIFEST = """
[signing]
key = "keys/deploy.key"
public_keys = ["keys/deploy.pub.pem"]

[models.digits]
version = "1.0.0"
task = "image-classification"
source = { type = "recipe", recipe = "digits" }
optimization = { quantization = "auto", pruning_sparsity = 0.5 }
serving = { max_batch = 256 }
parity = { min_accuracy = 0.95, max_accuracy_drop = 0.01 }
lambda = { architecture = "arm64", memory_mb = 512, timeout_s = 10 }
"""
DIGIT = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
         [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]


@pytest.fixture(scope="module")
def signed(artifacts, tmp_path_factory, synthesizer):
    """The built digits artifact in a project of its own, signed, and synthesized."""
    root = tmp_path_factory.mktemp("signed-deploy")
    for link in ("functions", "shared"):
        (root / link).symlink_to(artifacts.root / link)
    (root / ".cache").mkdir()
    (root / ".cache" / "layers").symlink_to(artifacts.root / ".cache" / "layers")
    shutil.copytree(artifacts.root / "build" / "digits", root / "build" / "digits")
    keygen(root / "keys" / "deploy")
    (root / "models.toml").write_text(MANIFEST)
    manifest = load_manifest(root / "models.toml")
    write_catalog(manifest)
    sign_models(manifest, None, manifest_signer(manifest))
    result = synthesizer(root / "cdk.out", {"maas:manifest": str(root / "models.toml")})
    return root, manifest, result


def _digits_function(synth) -> dict:
    (function,) = [f["Properties"] for f in synth.of_type("AWS::Lambda::Function").values()
                   if f["Properties"].get("Environment", {}).get("Variables", {}).get("MAAS_MODEL_NAME") == "digits"]
    return function


def test_each_model_function_is_given_the_trusted_keys(signed):
    _, manifest, synth = signed
    env = _digits_function(synth)["Environment"]["Variables"]
    assert env["MAAS_SIGNING_PUBLIC_KEYS"] == trusted_keys(manifest).value()
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    assert "PRIVATE" not in json.dumps(synth.template)  # only public halves reach the template


def _post(api, path, body):
    status, _, raw = api.handle("POST", path, [("Content-Type", "application/json")], json.dumps(body).encode())
    return status, json.loads(raw)


def test_the_function_from_the_assembly_serves_its_signed_model_and_refuses_an_edited_card(signed):
    root, _, synth = signed
    configure_local_environment()
    # GIVEN the function as cdk deploy would upload it (its asset, its layers, its environment)
    stack = template_stack(synth.outdir, root)
    try:
        api = LocalApi(stack.routes)
        status, body = _post(api, "/models/digits/invoke", {"inputs": [DIGIT]})
        assert status == 200 and body["outputs"][0][0]["label"] == "0"
        status, body = _post(api, "/models/digits/explain", {"inputs": [DIGIT]})
        assert status == 200 and body["outputs"][0]["label"] == "0"
    finally:
        stack.close()
    # WHEN the packaged card is edited after signing (relabelling the digits)
    asset = next(f.asset for f in load_assembly(synth.outdir).functions.values()
                 if f.environment.get("MAAS_MODEL_NAME") == "digits")
    card = asset / "model" / "card.json"
    data = json.loads(card.read_text())
    data["outputs"]["labels"] = list(reversed(data["outputs"]["labels"]))
    card.write_text(json.dumps(data, indent=2))
    # THEN the function refuses to serve it
    stack = template_stack(synth.outdir, root)
    try:
        status, body = _post(LocalApi(stack.routes), "/models/digits/invoke", {"inputs": [DIGIT]})
        assert status == 503 and body["error"]["code"] == "artifact_invalid"
        assert "does not match its signature" in body["error"]["message"]
    finally:
        stack.close()
