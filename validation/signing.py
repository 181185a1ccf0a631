"""Documents signed with the installation key (the Ed25519 key that signs labels).

A signed document is a JSON object with a ``signature`` member::

    {"...": "...", "signature": {"algorithm": "Ed25519", "key_id": "<16 hex>",
                                  "public_key": "<PEM>", "value": "<base64>"}}

``value`` signs the canonical JSON of the object without its ``signature`` member:
keys sorted, no whitespace (``separators=(",", ":")``), non-ASCII kept as UTF-8, the
whole encoded as UTF-8. The key id is the first 16 hex digits of the SHA-256 of the raw
32-byte public key, as on labels. The public key inside the document only says which
key signed it: a verifier trusts it only after comparing it (or its key id) with a key
obtained another way (``gmp-mes labels public-key --all``, kept on paper or in the QMS).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from labels import services


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def installation_key() -> Ed25519PrivateKey:
    """The installation's current signing key (raises labels' SigningKeyUnavailable)."""
    return services.keyring().private_key


def installation_public_keys() -> list[Ed25519PublicKey]:
    """Current and retired public keys: everything that ever signed here and is kept."""
    return list(services.keyring().public_keys)


def sign_document(body: dict[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    public = private_key.public_key()
    return unsigned | {"signature": {
        "algorithm": "Ed25519",
        "key_id": key_id(public),
        "public_key": public_pem(public),
        "value": base64.b64encode(private_key.sign(canonical(unsigned))).decode("ascii"),
    }}


def load_public_pems(text: str) -> list[Ed25519PublicKey]:
    blocks = ["-----BEGIN" + part for part in text.split("-----BEGIN")[1:]]
    found = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block.encode("ascii"))
        except (ValueError, TypeError):
            continue
        if isinstance(key, Ed25519PublicKey):
            found.append(key)
    return found


def verify_document(document: dict[str, Any],
                    trusted: list[Ed25519PublicKey] | None = None) -> str | None:
    """None if the signature is good (by a trusted key when ``trusted`` is given), else
    what is wrong, in one line."""
    signature = document.get("signature")
    if not isinstance(signature, dict) or signature.get("algorithm") != "Ed25519":
        return "no Ed25519 signature"
    embedded = load_public_pems(str(signature.get("public_key", "")))
    if not embedded or key_id(embedded[0]) != signature.get("key_id"):
        return "the signature's public key does not match its key id"
    key = embedded[0]
    if trusted is not None and key_id(key) not in {key_id(k) for k in trusted}:
        return f"signed by key {key_id(key)}, which is not a trusted key"
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    try:
        key.verify(base64.b64decode(str(signature.get("value", "")), validate=True),
                   canonical(unsigned))
    except (InvalidSignature, ValueError):
        return f"the signature by key {key_id(key)} does not match the content"
    return None
