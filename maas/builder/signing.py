"""Signing built artifacts: the keys a user owns, and card.sig beside each card.

What is signed and how it is checked is the runtime's (maas_runtime.signing); this module holds
the private side. A key is either a local Ed25519 private key file (PKCS#8 PEM, as `maas keygen`
or `openssl genpkey -algorithm ed25519` writes it) or an AWS KMS asymmetric key of spec
ECC_NIST_EDWARDS25519, named ``kms:<key ARN>``: KMS signs with ED25519_SHA_512 over the raw
statement (MessageType RAW), so its signatures are plain RFC 8032 Ed25519 and verify exactly as a
local key's do. The private key never leaves KMS.

Uses `cryptography` (build time only) for key files; the runtime verifies with PyNaCl.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from maas_runtime.card import CARD_FILE, SIG_FILE
from maas_runtime.signing import TrustedKeys, key_id, raw_ed25519, signature_record, statement

from ..manifest import KMS_PREFIX, Manifest
from ..paths import artifact_dir

KMS_KEY_SPEC = "ECC_NIST_EDWARDS25519"
KMS_SIGNING_ALGORITHM = "ED25519_SHA_512"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub.pem"


class SigningError(RuntimeError):
    """A key cannot be used, or an artifact cannot be signed; the message says what to do."""


class Signer(Protocol):
    public_der: bytes
    """The public key as DER SubjectPublicKeyInfo."""
    kms_key: str | None

    def sign(self, message: bytes) -> bytes: ...


def _spki(public_key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class LocalKeySigner:
    """An Ed25519 private key the user keeps in a PEM file (never in the repository)."""

    kms_key = None

    def __init__(self, key):
        self._key = key
        self.public_der = _spki(key.public_key())

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LocalKeySigner":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        path = Path(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise SigningError(f"signing key {path} not found (create one with `maas keygen {path.with_suffix('')}`)") from None
        except (ValueError, TypeError) as exc:
            raise SigningError(f"signing key {path} is not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise SigningError(f"signing key {path} is a {type(key).__name__}; maas signs with Ed25519 keys only")
        return cls(key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


class KmsSigner:
    """An AWS KMS key (spec ECC_NIST_EDWARDS25519, usage SIGN_VERIFY): KMS holds the private key."""

    def __init__(self, key: str, client=None):
        from botocore.exceptions import BotoCoreError, ClientError

        self.client = client if client is not None else _kms_client(key)
        try:
            info = self.client.get_public_key(KeyId=key)
            self.kms_key = self.client.describe_key(KeyId=key)["KeyMetadata"]["Arn"]
        except (BotoCoreError, ClientError) as exc:
            raise SigningError(f"KMS key {key}: {exc}") from None
        spec = info.get("KeySpec") or info.get("CustomerMasterKeySpec")
        if info.get("KeyUsage") != "SIGN_VERIFY" or spec != KMS_KEY_SPEC:
            raise SigningError(
                f"KMS key {key} is {spec} for {info.get('KeyUsage')}; maas signs with {KMS_KEY_SPEC} keys "
                "for SIGN_VERIFY (aws kms create-key --key-spec ECC_NIST_EDWARDS25519 --key-usage SIGN_VERIFY)"
            )
        self.public_der = info["PublicKey"]
        raw_ed25519(self.public_der)

    def sign(self, message: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self.client.sign(
                KeyId=self.kms_key, Message=message, MessageType="RAW", SigningAlgorithm=KMS_SIGNING_ALGORITHM
            )
        except (BotoCoreError, ClientError) as exc:
            raise SigningError(f"KMS key {self.kms_key} could not sign: {exc}") from None
        return answer["Signature"]


def _kms_client(key: str):
    """A KMS client in the key's own region (an ARN names it; an id or alias uses the default)."""
    import boto3

    parts = key.split(":")
    region = parts[3] if key.startswith("arn:") and len(parts) > 3 and parts[3] else None
    return boto3.client("kms", region_name=region)


def signer_for(key: str, root: Path, kms_client=None) -> Signer:
    """The signer a manifest's (or the command line's) `key` names: "kms:<ARN>" or a key file."""
    if key.startswith(KMS_PREFIX):
        return KmsSigner(key[len(KMS_PREFIX):], kms_client)
    path = Path(key)
    return LocalKeySigner.from_file(path if path.is_absolute() else root / path)


# --- signing artifacts ------------------------------------------------------------------------------


def sign_artifact(folder: Path, signer: Signer) -> Path:
    """Sign the card in `folder` as it is on disk; write card.sig beside it (atomically)."""
    card = (Path(folder) / CARD_FILE).read_bytes()
    record = signature_record(card, signer.sign(statement(card)), signer.public_der, signer.kms_key)
    TrustedKeys([signer.public_der]).verify(card, json.dumps(record).encode())  # never write a signature that fails
    path = Path(folder) / SIG_FILE
    tmp = path.with_name(f".{SIG_FILE}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def signed_by(folder: Path, signer: Signer) -> bool:
    """Whether `folder`'s card already carries a valid signature by this signer's key."""
    path = Path(folder) / SIG_FILE
    if not path.is_file():
        return False
    try:
        TrustedKeys([signer.public_der]).verify((Path(folder) / CARD_FILE).read_bytes(), path.read_bytes())
    except Exception:  # noqa: BLE001 - any failure means: sign again
        return False
    return True


@dataclass
class Signed:
    name: str
    folder: Path
    key_id: str
    resigned: bool


def check_trusted(manifest: Manifest, signer: Signer) -> None:
    """Refuse to sign with a key the deployment would not trust: its functions would refuse the model."""
    trusted = trusted_keys(manifest)
    if trusted is not None and key_id(signer.public_der) not in trusted.ids:
        raise SigningError(
            f"the signing key ({key_id(signer.public_der)}) is not among signing.public_keys: the functions "
            "would refuse these artifacts; add its public key file there (both keys while rotating)"
        )


def manifest_signer(manifest: Manifest, key: str | None = None, kms_client=None) -> Signer:
    """The signer for `key` (default: the manifest's signing.key), checked against signing.public_keys."""
    key = key or manifest.signing.key
    if not key:
        raise SigningError("no signing key: set signing.key in models.toml or pass --key")
    signer = signer_for(key, manifest.root, kms_client)
    check_trusted(manifest, signer)
    return signer


def sign_models(manifest: Manifest, names, signer: Signer, *, force: bool = True) -> list[Signed]:
    """Sign the built artifact of each model (every model when `names` is empty). `force=False`
    keeps a signature this key already made (a build that reused its artifact signs nothing)."""
    done = []
    for spec in manifest.artifacts(names):
        folder = artifact_dir(manifest.root, spec.name, spec.version)
        if not (folder / CARD_FILE).is_file():
            raise SigningError(f"{spec.name} {spec.version} is not built: run `maas build {spec.name}` first")
        resign = force or not signed_by(folder, signer)
        if resign:
            sign_artifact(folder, signer)
        done.append(Signed(spec.name, folder, key_id(signer.public_der), resign))
    return done


# --- keys ---------------------------------------------------------------------------------------------


def write_public_key(public_der: bytes, path: Path) -> Path:
    """A public key file (PEM SubjectPublicKeyInfo): what signing.public_keys lists."""
    from cryptography.hazmat.primitives import serialization

    raw_ed25519(public_der)
    pem = serialization.load_der_public_key(public_der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    return path


def keygen(prefix: str | os.PathLike) -> tuple[Path, Path]:
    """A new Ed25519 key pair: <prefix>.key (private, mode 0600) and <prefix>.pub.pem."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    prefix = Path(prefix)
    private, public = Path(f"{prefix}{PRIVATE_SUFFIX}"), Path(f"{prefix}{PUBLIC_SUFFIX}")
    for path in (private, public):
        if path.exists():
            raise SigningError(f"{path} exists: refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private.parent.mkdir(parents=True, exist_ok=True)
    # Created with 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return private, write_public_key(_spki(key.public_key()), public)


def kms_public_key(key: str, prefix: str | os.PathLike, kms_client=None) -> Path:
    """<prefix>.pub.pem holding a KMS signing key's public key (KMS GetPublicKey), for signing.public_keys."""
    signer = KmsSigner(key[len(KMS_PREFIX):] if key.startswith(KMS_PREFIX) else key, kms_client)
    path = Path(f"{prefix}{PUBLIC_SUFFIX}")
    return write_public_key(signer.public_der, path)


def read_public_key(path: Path) -> bytes:
    """The DER SubjectPublicKeyInfo in a PEM public key file."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except FileNotFoundError:
        raise SigningError(f"public key file {path} not found") from None
    except ValueError as exc:
        raise SigningError(f"{path} is not a PEM public key: {exc}") from None
    der = _spki(key)
    try:
        raw_ed25519(der)
    except Exception:  # noqa: BLE001
        raise SigningError(f"{path} is not an Ed25519 public key") from None
    return der


def trusted_keys(manifest: Manifest) -> TrustedKeys | None:
    """The keys every function of this manifest trusts (signing.public_keys); None: signing is off."""
    paths = manifest.signing.public_key_paths(manifest.root)
    return TrustedKeys([read_public_key(p) for p in paths]) if paths else None
