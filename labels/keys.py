"""The label signing key: creation, rotation and a per-process cache.

Layout (``settings.signing_key`` = ``instance/signing_key.pem`` by default)::

    signing_key.pem            current Ed25519 private key, PKCS#8 PEM, mode 0600
    signing_key.retired/       public keys of retired signing keys, <key id>.pub.pem

Only the current private key signs; the current public key and every retired
public key verify, so labels printed before a rotation stay valid (their
containers may be in a freezer for months). Retiring a public key for good
(a compromised key) is deleting its file from the folder, a deliberate,
documented administrative act outside this program.

Keys are files, so the loaded key ring is cached per process and reloaded when
the key file or the retired folder changes (checked with ``stat``, a few
microseconds per signature).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_MODE = 0o600
log = logging.getLogger("gmp_mes.labels")


class SigningKeyError(Exception):
    """The signing key is missing or unusable; the message says what to do (one line)."""


@dataclass(frozen=True)
class KeyRing:
    private_key: Ed25519PrivateKey
    public_keys: tuple[Ed25519PublicKey, ...]  # current first, then retired

    @property
    def current_public(self) -> Ed25519PublicKey:
        return self.public_keys[0]


def retired_dir(key_path: Path) -> Path:
    return key_path.with_name(f"{key_path.stem}.retired")


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint: SHA-256 of the raw 32-byte public key, first 16 hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _private_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_secret(path: Path, data: bytes, *, replace: bool) -> None:
    """Write with mode 0600 from the first byte (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not replace:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(path, KEY_MODE)  # the umask may have removed bits, never added any
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temporary, KEY_MODE)
    os.replace(temporary, path)


def ensure_key(key_path: Path) -> list[str]:
    """Create the signing key if missing (``gmp-mes init``); lines to print."""
    if key_path.exists():
        lines = [f"signing key: {key_path} (key id {key_id(load_private(key_path).public_key())})"]
        mode = key_path.stat().st_mode & 0o777
        if mode != KEY_MODE:
            os.chmod(key_path, KEY_MODE)
            lines.append(f"signing key: permissions tightened from {mode:o} to 600")
        return lines
    private_key = Ed25519PrivateKey.generate()
    try:
        _write_secret(key_path, _private_pem(private_key), replace=False)
    except FileExistsError:  # another init created it at the same moment: keep theirs
        return ensure_key(key_path)
    invalidate()
    return [f"signing key: created {key_path} (key id {key_id(private_key.public_key())})"]


def rotate_key(key_path: Path) -> tuple[str, str]:
    """Retire the current key (its public half stays for verification) and make a new one.

    Returns (retired key id, new key id). The retired public key is written before
    the private key is replaced, so no label ever becomes unverifiable.
    """
    old = load_private(key_path)
    old_public = old.public_key()
    folder = retired_dir(key_path)
    folder.mkdir(parents=True, exist_ok=True)
    retired = folder / f"{key_id(old_public)}.pub.pem"
    if not retired.exists():
        retired.write_text(public_pem(old_public))
    new = Ed25519PrivateKey.generate()
    _write_secret(key_path, _private_pem(new), replace=True)
    invalidate()
    return key_id(old_public), key_id(new.public_key())


def load_private(key_path: Path) -> Ed25519PrivateKey:
    try:
        data = key_path.read_bytes()
    except FileNotFoundError:
        raise SigningKeyError(
            f"no label signing key at {key_path}; run `gmp-mes init` to create it"
        ) from None
    except OSError as exc:
        raise SigningKeyError(f"label signing key {key_path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SigningKeyError(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{key_path} is not an Ed25519 key")
    return key


def load_public_keys(path: Path) -> list[Ed25519PublicKey]:
    """Every public key in a PEM file (``gmp-mes labels public-key --all`` writes several);
    a private key PEM gives its public half."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"public key {path}: {exc.strerror}") from None
    blocks = [b"-----BEGIN" + part for part in data.split(b"-----BEGIN")[1:]]
    if not blocks:
        raise SigningKeyError(f"{path} is not a PEM public key")
    found = []
    for block in blocks:
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, TypeError):
            try:
                key = serialization.load_pem_private_key(block, password=None).public_key()
            except (ValueError, TypeError):
                raise SigningKeyError(f"{path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{path} is not an Ed25519 public key")
        found.append(key)
    return found


def load_public(path: Path) -> Ed25519PublicKey:
    """The (first) public key of a PEM file."""
    return load_public_keys(path)[0]


def retired_public_keys(key_path: Path) -> list[Ed25519PublicKey]:
    folder = retired_dir(key_path)
    if not folder.is_dir():
        return []
    return [load_public(p) for p in sorted(folder.glob("*.pub.pem"))]


# --- per-process cache ------------------------------------------------------------------

_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[object, ...], KeyRing, float]] = {}
# How long a loaded ring is trusted before its files are looked at again. A rotation in
# this process invalidates at once; other processes follow within this time (labels
# signed meanwhile use the retired key, which still verifies).
RECHECK_SECONDS = 1.0


def _stamp(key_path: Path) -> tuple[object, ...]:
    def one(path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    return (one(key_path), one(retired_dir(key_path)))


def keyring(key_path: Path) -> KeyRing:
    """The key ring for ``key_path``, loaded once and reloaded when the files change."""
    key_path = Path(key_path)
    cached = _cache.get(key_path)
    now = time.monotonic()
    if cached is not None and now - cached[2] < RECHECK_SECONDS:
        return cached[1]
    stamp = _stamp(key_path)
    if cached is not None and cached[0] == stamp:
        _cache[key_path] = (stamp, cached[1], now)
        return cached[1]
    with _lock:
        private_key = load_private(key_path)
        mode = key_path.stat().st_mode & 0o777
        if mode & 0o077:
            # Anyone who can read this file can forge labels. Not refused (secret
            # stores often mount files 0644 inside a private container), but said loudly.
            log.warning("label signing key %s is readable by others (mode %o)", key_path, mode)
        current = private_key.public_key()
        current_raw = current.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        others = [
            k
            for k in retired_public_keys(key_path)
            if k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            != current_raw
        ]
        ring = KeyRing(private_key, (current, *others))
        _cache[key_path] = (stamp, ring, time.monotonic())
        return ring


def invalidate() -> None:
    with _lock:
        _cache.clear()
