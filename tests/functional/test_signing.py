"""Signed model cards: the build signs, the runtime and the handler refuse what does not verify.

Every tamper case is checked twice: loading with the runtime library (`load_model` with trusted
keys) and through the Lambda handler (503 artifact_invalid), locally and from S3 (moto).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from moto import mock_aws

from maas.builder import BuildError, build_models
from maas.builder.signing import (
    KmsSigner,
    LocalKeySigner,
    SigningError,
    keygen,
    kms_public_key,
    manifest_signer,
    read_public_key,
    sign_artifact,
    trusted_keys,
)
from maas.cli import main
from maas.lambda_worker import LambdaContext
from maas.local_api import LocalApi, configure_local_environment, load_function_module, manifest_stack
from maas.manifest import load_manifest
from maas_runtime import ArtifactError, Model, SignatureError, TrustedKeys, forget_models, load_model
from maas_runtime.artifact import sha256_of
from maas_runtime.card import SIG_FILE, ModelCard, check_file_name
from maas_runtime.signing import key_id, statement

configure_local_environment()
ROOT = Path(__file__).resolve().parents[2]
DIGIT = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0], [0, 4, 12, 0, 0, 8, 8, 0],
         [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0], [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]


def new_signer() -> LocalKeySigner:
    return LocalKeySigner(ed25519.Ed25519PrivateKey.generate())


def trust(*signers) -> TrustedKeys:
    return TrustedKeys([s.public_der for s in signers])


@pytest.fixture
def artifact(built, tmp_path) -> Path:
    folder = tmp_path / "digits"
    shutil.copytree(built["digits"].folder, folder)
    (folder / SIG_FILE).unlink(missing_ok=True)
    yield folder
    forget_models()


@pytest.fixture(scope="module")
def owner():
    return new_signer()


def _edit_card(folder: Path, edit) -> None:
    data = json.loads((folder / "card.json").read_text())
    edit(data)
    (folder / "card.json").write_text(json.dumps(data, indent=2))


def card_edited(folder, owner):
    _edit_card(folder, lambda d: d["outputs"]["labels"].__setitem__(0, "zero"))


def whitespace_added(folder, owner):
    (folder / "card.json").write_bytes((folder / "card.json").read_bytes() + b"\n")


def card_and_model_edited_together(folder, owner):
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")  # a "backdoored" model, its card updated to match
    _edit_card(folder, lambda d: d["files"].__setitem__("model.onnx", {"sha256": sha256_of(model), "bytes": model.stat().st_size}))


def background_swapped(folder, owner):
    background = folder / "background.npz"
    background.write_bytes(background.read_bytes().replace(b"weights", b"weightz"))


def resigned_by_another_key(folder, owner):
    _edit_card(folder, lambda d: d["outputs"]["labels"].__setitem__(0, "zero"))
    sign_artifact(folder, new_signer())


def another_key_claims_the_trusted_key_id(folder, owner):
    _edit_card(folder, lambda d: d["outputs"]["labels"].__setitem__(0, "zero"))
    path = sign_artifact(folder, new_signer())
    record = json.loads(path.read_text())
    record["key_id"] = key_id(owner.public_der)
    path.write_text(json.dumps(record))


def signature_removed(folder, owner):
    (folder / SIG_FILE).unlink()


def algorithm_confusion(folder, owner):
    """An ECDSA P-256 signature over the same statement, labelled as the trusted key's."""
    p256 = ec.generate_private_key(ec.SECP256R1())
    path = folder / SIG_FILE
    record = json.loads(path.read_text())
    record["algorithm"] = "ecdsa-p256-sha256"
    record["signature"] = base64.b64encode(
        p256.sign(statement((folder / "card.json").read_bytes()), ec.ECDSA(hashes.SHA256()))
    ).decode()
    path.write_text(json.dumps(record))


def ecdsa_bytes_labelled_ed25519(folder, owner):
    p256 = ec.generate_private_key(ec.SECP256R1())
    path = folder / SIG_FILE
    record = json.loads(path.read_text())
    record["signature"] = base64.b64encode(
        p256.sign(statement((folder / "card.json").read_bytes()), ec.ECDSA(hashes.SHA256()))
    ).decode()
    path.write_text(json.dumps(record))


def signature_garbled(folder, owner):
    (folder / SIG_FILE).write_text("{not json")


TAMPERING = [
    (card_edited, "does not match its signature"),
    (whitespace_added, "does not match its signature"),
    (card_and_model_edited_together, "does not match its signature"),
    (background_swapped, "does not match its sha256"),
    (resigned_by_another_key, "does not trust"),
    (another_key_claims_the_trusted_key_id, "does not match its signature"),
    (signature_removed, "no card.sig"),
    (algorithm_confusion, "verifies ed25519 only"),
    (ecdsa_bytes_labelled_ed25519, "does not match its signature"),
    (signature_garbled, "card.sig is malformed"),
]


# --- the runtime library ---------------------------------------------------------------------------


def test_a_signed_artifact_loads_with_its_key(artifact, owner):
    path = sign_artifact(artifact, owner)
    record = json.loads(path.read_text())
    assert record["format"] == "maas-card-sig/1" and record["algorithm"] == "ed25519"
    assert record["key_id"] == key_id(owner.public_der) and record["kms_key"] is None
    model = load_model(artifact, trust(owner))
    assert model.predict([DIGIT]).outputs[0][0]["label"] == "0"
    # the signature is beside the card, never one of its files
    assert SIG_FILE not in model.card.files
    with pytest.raises(ArtifactError, match="unsafe file path 'card.sig'"):
        check_file_name(SIG_FILE)


@pytest.mark.parametrize("tamper,message", TAMPERING, ids=[t.__name__ for t, _ in TAMPERING])
def test_tampered_artifacts_are_refused_at_load(artifact, owner, tamper, message):
    # GIVEN an artifact signed by the key the function trusts, WHEN someone tampers with it
    sign_artifact(artifact, owner)
    tamper(artifact, owner)
    # THEN it is refused before the card is believed
    with pytest.raises(ArtifactError, match=message):
        load_model(artifact, trust(owner))


@pytest.mark.parametrize("tamper,message", TAMPERING, ids=[t.__name__ for t, _ in TAMPERING])
def test_tampered_artifacts_get_503_from_the_handler(artifact, owner, tamper, message):
    sign_artifact(artifact, owner)
    tamper(artifact, owner)
    handler = load_function_module(ROOT / "functions" / "model")
    function = handler.create_function(handler.Config(
        model_name="digits", model_dir=str(artifact), catalog_path=str(ROOT / "build" / "catalog.json"),
        signing_public_keys=trust(owner).value(),
    ))
    response = function.invoke(_invoke_event(), LambdaContext("digits"))
    body = json.loads(response["body"])
    assert response["statusCode"] == 503 and body["error"]["code"] == "artifact_invalid"
    assert message in body["error"]["message"]
    health = function.invoke(_event("GET", "/health"), LambdaContext("digits"))
    assert health["statusCode"] == 503 and json.loads(health["body"])["error"]["code"] == "artifact_invalid"


def _event(method: str, path: str, body=None) -> dict:
    data = json.loads((ROOT / "tests" / "events" / "invoke_digits.json").read_text())
    data.update(httpMethod=method, path=path, body=json.dumps(body) if body is not None else None)
    return data


def _invoke_event() -> dict:
    return _event("POST", "/models/digits/invoke", {"inputs": [DIGIT]})


def test_rotation_trusts_either_key_and_retires_the_old_one(artifact):
    old, new = new_signer(), new_signer()
    sign_artifact(artifact, old)
    assert Model(artifact, trusted_keys=trust(old, new)).card.name == "digits"
    sign_artifact(artifact, new)
    assert Model(artifact, trusted_keys=trust(old, new)).card.name == "digits"
    sign_artifact(artifact, old)
    with pytest.raises(SignatureError, match="does not trust"):
        Model(artifact, trusted_keys=trust(new))


def test_without_trusted_keys_nothing_changes(artifact, owner):
    assert Model(artifact).card.name == "digits"  # unsigned
    sign_artifact(artifact, owner)
    card_edited(artifact, owner)
    assert Model(artifact).card.labels[0] == "zero"  # no key configured: signatures are not checked


def test_the_trusted_keys_setting_is_checked():
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SignatureError, match="Ed25519"):
        TrustedKeys.parse(base64.b64encode(p256).decode())
    with pytest.raises(SignatureError, match="not base64"):
        TrustedKeys.parse("not-base64!")
    assert TrustedKeys.from_env({}) is None
    a, b = new_signer(), new_signer()
    value = f" {base64.b64encode(a.public_der).decode()} ,{base64.b64encode(b.public_der).decode()},"
    assert set(TrustedKeys.parse(value).ids) == {key_id(a.public_der), key_id(b.public_der)}


def test_a_misconfigured_key_setting_is_a_503_not_a_crash(artifact, owner):
    sign_artifact(artifact, owner)
    handler = load_function_module(ROOT / "functions" / "model")
    function = handler.create_function(handler.Config(
        model_name="digits", model_dir=str(artifact), catalog_path=str(ROOT / "build" / "catalog.json"),
        signing_public_keys="AAAA",
    ))
    response = function.invoke(_invoke_event(), LambdaContext("digits"))
    assert response["statusCode"] == 503 and json.loads(response["body"])["error"]["code"] == "misconfigured"


# --- from S3 (moto) ---------------------------------------------------------------------------------


@mock_aws
@pytest.mark.parametrize("signed", [True, False])
def test_an_s3_artifact_is_fetched_with_its_signature_and_checked(artifact, owner, tmp_path, signed):
    if signed:
        sign_artifact(artifact, owner)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="artifacts")
    for path in artifact.iterdir():
        s3.upload_file(str(path), "artifacts", f"models/digits/1.0.0/{path.name}")
    handler = load_function_module(ROOT / "functions" / "model")
    function = handler.create_function(handler.Config(
        model_name="digits", model_s3_uri="s3://artifacts/models/digits/1.0.0/", tmp_dir=str(tmp_path),
        catalog_path=str(ROOT / "build" / "catalog.json"), signing_public_keys=trust(owner).value(),
    ), s3=s3)
    response = function.invoke(_invoke_event(), LambdaContext("digits"))
    body = json.loads(response["body"])
    if signed:
        assert response["statusCode"] == 200, body
    else:
        assert response["statusCode"] == 503 and "no card.sig" in body["error"]["message"]
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("maas-model-")]  # nothing unverified kept


# --- keys the user owns: a local file, or AWS KMS ------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path):
    private, public = keygen(tmp_path / "keys" / "maas")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert read_public_key(public) == LocalKeySigner.from_file(private).public_der
    with pytest.raises(SigningError, match="refusing to overwrite"):
        keygen(tmp_path / "keys" / "maas")
    p256 = tmp_path / "p256.pem"
    p256.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(SigningError, match="Ed25519 keys only"):
        LocalKeySigner.from_file(p256)


ARN = "arn:aws:kms:eu-west-1:111122223333:key/0a1b2c3d-0000-4000-8000-00000000ed25"


def _stubbed_kms(local: ed25519.Ed25519PrivateKey, messages: list[bytes], spec: str = "ECC_NIST_EDWARDS25519"):
    """moto cannot create ECC_NIST_EDWARDS25519 keys: the KMS answers are stubbed, signed by a local key."""
    kms = boto3.client("kms", region_name="eu-west-1")
    stub = Stubber(kms)
    der = local.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    stub.add_response("get_public_key", {"KeyId": ARN, "PublicKey": der, "KeySpec": spec, "KeyUsage": "SIGN_VERIFY",
                                         "SigningAlgorithms": ["ED25519_SHA_512"]}, {"KeyId": ARN})
    stub.add_response("describe_key", {"KeyMetadata": {"KeyId": ARN.rsplit("/", 1)[1], "Arn": ARN}}, {"KeyId": ARN})
    for message in messages:
        # Stubber checks the request: the raw 77-byte statement, MessageType RAW, pure Ed25519
        stub.add_response("sign", {"KeyId": ARN, "Signature": local.sign(message), "SigningAlgorithm": "ED25519_SHA_512"},
                          {"KeyId": ARN, "Message": message, "MessageType": "RAW", "SigningAlgorithm": "ED25519_SHA_512"})
    stub.activate()
    return kms, stub, der


def test_a_kms_key_signs_what_the_runtime_verifies(artifact):
    local = ed25519.Ed25519PrivateKey.generate()
    kms, stub, der = _stubbed_kms(local, [statement((artifact / "card.json").read_bytes())])
    signer = KmsSigner(ARN, kms)
    record = json.loads(sign_artifact(artifact, signer).read_text())
    stub.assert_no_pending_responses()
    assert record["kms_key"] == ARN and record["key_id"] == key_id(der)
    assert Model(artifact, trusted_keys=TrustedKeys([der])).card.name == "digits"
    card_edited(artifact, None)
    with pytest.raises(SignatureError, match="does not match"):
        Model(artifact, trusted_keys=TrustedKeys([der]))


def test_kms_public_key_file_and_wrong_key_specs(tmp_path):
    local = ed25519.Ed25519PrivateKey.generate()
    kms, _, der = _stubbed_kms(local, [])
    path = kms_public_key(f"kms:{ARN}", tmp_path / "kms", kms)
    assert path.name == "kms.pub.pem" and read_public_key(path) == der
    kms, _, _ = _stubbed_kms(local, [], spec="ECC_NIST_P256")
    with pytest.raises(SigningError, match="ECC_NIST_EDWARDS25519"):
        KmsSigner(ARN, kms)


@mock_aws
def test_moto_kms_keys_of_another_spec_are_refused_with_the_command_to_make_one():
    kms = boto3.client("kms", region_name="eu-west-1")
    arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    with pytest.raises(SigningError, match="aws kms create-key --key-spec ECC_NIST_EDWARDS25519"):
        KmsSigner(arn, kms)


# --- the build signs; re-signing never rebuilds -----------------------------------------------------------


MANIFEST = """
[signing]
key = "keys/ci.key"
public_keys = ["keys/ci.pub.pem"]

[models.digits]
version = "1.0.0"
task = "image-classification"
source = {{ type = "recipe", recipe = "digits" }}
optimization = {{ quantization = "dynamic-int8" }}
serving = {{ max_batch = 16 }}
parity = {{ min_accuracy = 0.9 }}
{extra}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("signed-project")
    (root / "functions").symlink_to(ROOT / "functions")  # what `maas serve` runs
    assert main(["keygen", str(root / "keys" / "ci")]) == 0
    assert main(["keygen", str(root / "keys" / "next")]) == 0
    (root / "models.toml").write_text(MANIFEST.format(extra=""))
    return root


def test_the_build_signs_and_a_rebuild_keeps_the_signature(project, capsys):
    manifest = load_manifest(project / "models.toml")
    (first,) = build_models(manifest)
    sig = first.folder / SIG_FILE
    signed_at = sig.stat().st_mtime_ns
    assert load_model(first.folder, trusted_keys(manifest)).card.name == "digits"
    (second,) = build_models(manifest)
    assert second.reused and sig.stat().st_mtime_ns == signed_at
    assert "signed card.json" in capsys.readouterr().err


def test_resigning_with_a_rotated_key_does_not_rebuild(project, capsys):
    manifest = load_manifest(project / "models.toml")
    (built,) = build_models(manifest)
    card = (built.folder / "card.json").read_bytes()
    # WHEN a key that the deployment does not trust yet is used, THEN it is refused before anything is signed
    assert main(["--manifest", str(project / "models.toml"), "sign", "--key", str(project / "keys" / "next.key")]) == 1
    assert "not among signing.public_keys" in capsys.readouterr().err
    # WHEN both keys are trusted (rotation) and the new one signs
    (project / "models.toml").write_text(MANIFEST.format(extra="").replace(
        'public_keys = ["keys/ci.pub.pem"]', 'public_keys = ["keys/ci.pub.pem", "keys/next.pub.pem"]'))
    assert main(["--manifest", str(project / "models.toml"), "sign", "--key", str(project / "keys" / "next.key")]) == 0
    # THEN the card is untouched (no rebuild), signed by the new key, and a build reuses the artifact
    assert (built.folder / "card.json").read_bytes() == card
    record = json.loads((built.folder / SIG_FILE).read_text())
    assert record["key_id"] == key_id(read_public_key(project / "keys" / "next.pub.pem"))
    manifest = load_manifest(project / "models.toml")
    next_only = TrustedKeys([read_public_key(project / "keys" / "next.pub.pem")])
    assert load_model(built.folder, next_only).card == ModelCard.read(built.folder)
    (again,) = build_models(manifest, sign_key=str(project / "keys" / "next.key"))
    assert again.reused and json.loads((built.folder / SIG_FILE).read_text()) == record
    (project / "models.toml").write_text(MANIFEST.format(extra=""))


def test_a_bad_signing_key_stops_the_build_before_it_starts(project, tmp_path):
    manifest = load_manifest(project / "models.toml")
    with pytest.raises(BuildError, match="not found"):
        build_models(manifest, sign_key=str(tmp_path / "missing.key"))
    with pytest.raises(SigningError, match="not among signing.public_keys"):
        manifest_signer(manifest, str(project / "keys" / "next.key"))


def test_maas_serve_passes_the_manifest_keys_to_the_handlers(project, built):
    manifest = load_manifest(project / "models.toml")
    (result,) = build_models(manifest)
    stack = manifest_stack(manifest)
    api = LocalApi(stack.routes)
    try:
        body = json.dumps({"inputs": [DIGIT]}).encode()
        status, _, _ = api.handle("POST", "/models/digits/invoke", [("Content-Type", "application/json")], body)
        assert status == 200
    finally:
        stack.close()
    # a card edited after signing: `maas serve` refuses it like the deployed function would
    forget_models()
    saved = (result.folder / "card.json").read_bytes()
    try:
        card_edited(result.folder, None)
        stack = manifest_stack(manifest)
        api = LocalApi(stack.routes)
        status, _, raw = api.handle("POST", "/models/digits/invoke", [("Content-Type", "application/json")], body)
        assert status == 503 and json.loads(raw)["error"]["code"] == "artifact_invalid"
        stack.close()
    finally:
        (result.folder / "card.json").write_bytes(saved)
        forget_models()
