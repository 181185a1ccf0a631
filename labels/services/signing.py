"""Signing and checking label payloads: the installation's signing key, the online
check of a scanned payload (signature, recorded copy, not voided) and the offline check
with public key files only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from flask import current_app, has_app_context
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from gmp_mes.errors import DomainError
from labels import keys
from labels.models import AssetLabelPrint, LabelPrint, LabelVoid
from labels.payload import InvalidLabel, LabelPayload, normalise_scan, parse, sign, verify
from labels.services._common import subjects

# Set by labels.init_app from the settings of the application last created, for
# callers without an application context (scheduler threads, tests' sessions).
_default_key_path: Path | None = None


class SigningKeyUnavailable(DomainError):
    """A configuration fault, not bad input: the installation has no usable key."""

    status, code, title = 503, "signing_key_unavailable", "Service unavailable"


@dataclass(frozen=True)
class PayloadCheck:
    """Result of an online check. ``payload`` is what the text says (parsed), but it
    is trustworthy only when ``reasons`` is empty."""

    payload: LabelPayload | None
    reasons: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reasons


def set_default_key_path(path: Path) -> None:
    global _default_key_path
    _default_key_path = Path(path)


def key_path() -> Path:
    if has_app_context():
        return Path(current_app.config["GMP_SETTINGS"].signing_key)
    if _default_key_path is None:
        raise SigningKeyUnavailable("no application configured: the signing key is unknown")
    return _default_key_path


def keyring() -> keys.KeyRing:
    try:
        return keys.keyring(key_path())
    except keys.SigningKeyError as exc:
        raise SigningKeyUnavailable(str(exc)) from exc


def signing_key_ids(session: Session) -> set[str]:
    """Ids of every key that signed a label in this database (backups record them)."""
    return (set(session.scalars(select(LabelPrint.key_id).distinct()))
            | set(session.scalars(select(AssetLabelPrint.key_id).distinct())))


def unknown_signing_keys(session: Session, key_path: Path) -> list[str]:
    """Key ids that signed labels here but are neither the key at ``key_path`` nor one of
    its retired public keys: a new key made now would make those labels fail as forged."""
    known = {keys.key_id(k) for k in keys.retired_public_keys(key_path)}
    if key_path.exists():
        known.add(keys.key_id(keys.load_private(key_path).public_key()))
    return sorted(signing_key_ids(session) - known)


def payload_digest(text: str) -> str:
    """SHA-256 of the normalised scan text (any text: a refused scan is digested too)."""
    return hashlib.sha256(normalise_scan(text).encode("utf-8", "replace")).hexdigest()


def sign_payload(kind_code: str, subject_id: str, coi_id: str, expires_at: datetime | None) -> str:
    return sign(keyring().private_key, kind_code, subject_id, coi_id, expires_at)


def payload_for_item(session: Session, item_id: str) -> str:
    """The signed 6-field payload (no serial, no print record) of the item's current
    label data, as labels carried before serials (404 when no such item). For the
    demo, benchmarks and tests; printed labels carry a serial per copy."""
    subject = subjects().subject(session, item_id)
    return sign_payload(subject.kind_code, subject.item_id, subject.coi_id, subject.expires_at)


def check_payload(session: Session, raw: str) -> PayloadCheck:
    """Online check of scanned text: structure, signature, a recorded copy, not voided.
    Never raises for bad input; reason codes ``malformed``, ``bad_signature``,
    ``unknown_copy``, ``voided``. A LOT or EQP payload (SPEC §11) is valid only when its
    copy is recorded in ``asset_label_print``."""
    try:
        payload = parse(raw)
    except InvalidLabel as exc:
        return PayloadCheck(None, [(exc.code, exc.message)])
    try:
        verify(payload, keyring().public_keys)
    except InvalidLabel as exc:
        return PayloadCheck(payload, [(exc.code, exc.message)])
    digest = payload_digest(payload.text)
    if payload.asset:
        # parse() refuses a LOT/EQP payload without a serial: always a recorded copy.
        if session.connection().execute(_ASSET_COPY_OF_PAYLOAD, {"digest": digest}).first():
            return PayloadCheck(payload, [])
        return PayloadCheck(payload, [_unknown_copy(payload)])
    if payload.serial is None:
        # A 6-field label from before serials: valid unless its print was voided.
        voided_by = _void_of(session, digest)
        if voided_by is not None:
            return PayloadCheck(
                payload, [("voided", f"this label was voided ({voided_by}); it must not be used")]
            )
        return PayloadCheck(payload, [])
    copy = session.connection().execute(_COPY_OF_PAYLOAD, {"digest": digest}).first()
    if copy is None:
        return PayloadCheck(payload, [_unknown_copy(payload)])
    if copy.voided:
        return PayloadCheck(
            payload,
            [("voided", f"this label copy was voided ({copy.label_id}, copy {payload.serial}); "
                        "it must not be used")],
        )
    return PayloadCheck(payload, [])


def _unknown_copy(payload: LabelPayload) -> tuple[str, str]:
    # Signed with our key but never recorded as printed: not a label we issued.
    return ("unknown_copy", f"copy {payload.serial} of this label was never recorded as "
                            "printed; it must not be used")


# Built once: check_payload runs on every scan.
_VOID_OF_PAYLOAD = (
    select(LabelVoid.__table__.c.label_id)
    .where(LabelVoid.__table__.c.payload_digest == bindparam("digest"))
    .limit(1)
)
_printed, _voids = LabelPrint.__table__, LabelVoid.__table__
# The printed copy a serial payload names, and whether it is voided: one indexed read.
_COPY_OF_PAYLOAD = (
    select(_printed.c.label_id, _voids.c.id.is_not(None).label("voided"))
    .select_from(_printed.outerjoin(_voids, _voids.c.label_id == _printed.c.label_id))
    .where(_printed.c.payload_digest == bindparam("digest"))
    .limit(1)
)


_assets = AssetLabelPrint.__table__
# The printed copy of a LOT or EQP payload: one read of the unique payload_digest index.
_ASSET_COPY_OF_PAYLOAD = (
    select(_assets.c.label_id).where(_assets.c.payload_digest == bindparam("digest")).limit(1)
)


def _void_of(session: Session, digest: str) -> str | None:
    """The voided label whose payload has this digest, if any."""
    return session.connection().execute(_VOID_OF_PAYLOAD, {"digest": digest}).scalar()


def verify_offline(raw: str, public_key_paths: list[Path] | tuple[Path, ...]) -> LabelPayload:
    """Offline check with public key files only (no database: voids are not known).

    Raises InvalidLabel (code ``malformed`` or ``bad_signature``), or
    keys.SigningKeyError when a key file cannot be read.
    """
    if not public_key_paths:
        raise keys.SigningKeyError("no public key given")
    public_keys = [k for p in public_key_paths for k in keys.load_public_keys(Path(p))]
    payload = parse(raw)
    verify(payload, public_keys)
    return payload
