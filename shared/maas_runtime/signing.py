"""Signed model cards: which keys a function trusts, and the check made before a card is read.

The build signs the exact bytes of ``card.json``; the card lists the size and sha256 of every other
file of the artifact, so one signature covers the model, the tokenizer and the explanation
background too. The signature lives beside the card in ``card.sig`` (never inside it: the card
needs no canonical form, and the verifier parses the very bytes it verified).

What is signed is a short statement, not the card itself::

    b"maas-card-v1\\n" + sha256(card.json bytes).hexdigest()

It is domain-separated (a signature made for anything else never verifies as a card's) and fits
AWS KMS's ``MessageType=RAW`` (at most 4096 bytes; a card is larger), so a KMS key signs exactly
what a local key signs.

``card.sig`` is JSON: ``{"format", "algorithm", "key_id", "kms_key", "card_sha256", "signature"}``
where ``key_id`` is ``sha256:<hex of the DER SubjectPublicKeyInfo>`` (the same id for a local key
and a KMS key, whose GetPublicKey answers DER SPKI) and ``signature`` is base64.

Ed25519 only, verified with PyNaCl (libsodium): it adds about 3 MB to the runtime layer where
`cryptography` would add about 15 MB, and libsodium's verification is strict (non-canonical
signatures and small-order keys are refused). One algorithm also means no algorithm to confuse:
whatever ``card.sig`` claims, a trusted key only ever verifies Ed25519 signatures.

Verification is opt-in per function: with no trusted keys configured, cards load as before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping

from .card import SIG_FILE
from .errors import ArtifactError

ENV_SIGNING_PUBLIC_KEYS = "MAAS_SIGNING_PUBLIC_KEYS"
"""The keys a function trusts: comma-separated base64 DER SubjectPublicKeyInfo (old,new while rotating)."""
SIG_FORMAT = "maas-card-sig/1"
ALGORITHM = "ed25519"
STATEMENT_PREFIX = b"maas-card-v1\n"
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
"""The 12-byte DER header of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it."""
_MAX_SIG_BYTES = 4096


class SignatureError(ArtifactError):
    """card.sig is missing, malformed, by an untrusted key, or does not match the card: not served."""


def statement(card_bytes: bytes) -> bytes:
    """What a key signs for a card: 77 bytes, whatever the card's size."""
    return STATEMENT_PREFIX + hashlib.sha256(card_bytes).hexdigest().encode("ascii")


def key_id(public_der: bytes) -> str:
    return "sha256:" + hashlib.sha256(public_der).hexdigest()


def signature_record(card_bytes: bytes, signature: bytes, public_der: bytes, kms_key: str | None = None) -> dict:
    """card.sig's content (the build writes it; `TrustedKeys.verify` reads it)."""
    return {
        "format": SIG_FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key_id(public_der),
        "kms_key": kms_key,
        "card_sha256": hashlib.sha256(card_bytes).hexdigest(),
        "signature": base64.b64encode(signature).decode("ascii"),
    }


def raw_ed25519(public_der: bytes) -> bytes:
    """The 32-byte key inside an Ed25519 SubjectPublicKeyInfo, or SignatureError."""
    if len(public_der) != len(ED25519_SPKI_PREFIX) + 32 or not public_der.startswith(ED25519_SPKI_PREFIX):
        raise SignatureError("a signing public key must be an Ed25519 key (44-byte DER SubjectPublicKeyInfo)")
    return public_der[len(ED25519_SPKI_PREFIX):]


class TrustedKeys:
    """The public keys one function accepts card signatures from, by key id."""

    def __init__(self, public_ders: list[bytes]):
        if not public_ders:
            raise SignatureError("no signing public keys given")
        for der in public_ders:
            raw_ed25519(der)
        self._ders = {key_id(der): der for der in public_ders}

    @classmethod
    def parse(cls, value: str) -> "TrustedKeys":
        """From the environment variable's form: comma-separated base64 DER SPKI."""
        ders = []
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            try:
                ders.append(base64.b64decode(item, validate=True))
            except (binascii.Error, ValueError):
                raise SignatureError(f"{ENV_SIGNING_PUBLIC_KEYS}: {item[:16]!r}... is not base64") from None
        return cls(ders)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TrustedKeys | None":
        """The keys configured for this process; None when signing is not required."""
        value = (os.environ if env is None else env).get(ENV_SIGNING_PUBLIC_KEYS, "").strip()
        return cls.parse(value) if value else None

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._ders))

    def value(self) -> str:
        """The environment variable's form of these keys."""
        return ",".join(base64.b64encode(self._ders[k]).decode("ascii") for k in self.ids)

    def verify(self, card_bytes: bytes, sig_bytes: bytes | None) -> str:
        """The id of the trusted key that signed these card bytes, or SignatureError."""
        import nacl.exceptions
        import nacl.signing

        if sig_bytes is None:
            raise SignatureError(f"no {SIG_FILE} beside the card: this function only serves signed artifacts")
        if len(sig_bytes) > _MAX_SIG_BYTES:
            raise SignatureError(f"{SIG_FILE} is {len(sig_bytes)} bytes: not a signature")
        try:
            record = json.loads(sig_bytes.decode("utf-8"))
            fmt, algorithm, kid = record["format"], record["algorithm"], record["key_id"]
            signature = base64.b64decode(record["signature"], validate=True)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, binascii.Error):
            raise SignatureError(f"{SIG_FILE} is malformed") from None
        if fmt != SIG_FORMAT:
            raise SignatureError(f"{SIG_FILE} has format {str(fmt)[:40]!r}; this runtime reads {SIG_FORMAT!r}")
        if algorithm != ALGORITHM:
            raise SignatureError(f"{SIG_FILE} claims algorithm {str(algorithm)[:40]!r}; this runtime verifies {ALGORITHM} only")
        der = self._ders.get(kid) if isinstance(kid, str) else None
        if der is None:
            raise SignatureError(f"the card is signed by key {str(kid)[:80]!r}, which this function does not trust")
        try:
            nacl.signing.VerifyKey(raw_ed25519(der)).verify(statement(card_bytes), signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            raise SignatureError("card.json does not match its signature: refusing to load the model") from None
        return kid


__all__ = [
    "ALGORITHM",
    "ENV_SIGNING_PUBLIC_KEYS",
    "SIG_FILE",
    "SIG_FORMAT",
    "SignatureError",
    "TrustedKeys",
    "key_id",
    "raw_ed25519",
    "signature_record",
    "statement",
]
