"""The signed QR payload of a chain-of-identity label (SPEC §4). Pure: no database, no files.

    GMP1:<kind>:<item or wristband id>:<coi id>:<expiry UTC YYYYMMDDHHMM or ->:<serial>:<signature>

``<serial>`` names the printed copy (1, 2, ... per item), so one damaged copy can be
voided and replaced while the other copies stay valid. Labels printed before serials
existed carry the older 6-field form without it; readers accept both.

Labels of things that are not a patient's item (SPEC §11: a material lot, kind ``LOT``;
a piece of equipment, kind ``EQP``) carry ``-`` in the COI field and always a serial:
``GMP1:LOT:LOT-000123:-:<expiry or ->:<serial>:<signature>``. An item kind with ``-``,
or a LOT/EQP payload with a COI, is malformed.

Only the QR alphanumeric character set (``0-9 A-Z space $ % * + - . / :``) is used,
so the symbol is encoded in alphanumeric mode and stays small. The signature is
Ed25519 (RFC 8032) over the ASCII bytes of everything before the last ``:``,
written in RFC 4648 base32 without padding (103 characters for 64 bytes).

Parsing is strict: every field has one canonical spelling, so a payload that
verifies has exactly one text form (a changed character never verifies,
including the unused low bits of the last base32 character).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = "GMP1"
# QR alphanumeric mode character set (ISO/IEC 18004 §7.4.4).
QR_ALPHANUMERIC = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
# Kind codes of identity.services.KIND_CODES (agreed interface); a payload with
# another code is malformed whatever its signature says.
ITEM_KIND_CODES = frozenset({"SM", "IM", "FP", "QS", "RS", "WB"})
# Kind codes of labels that name no patient (SPEC §11): what they name, for messages.
ASSET_KINDS = {"LOT": "material lot", "EQP": "equipment"}
ASSET_KIND_CODES = frozenset(ASSET_KINDS)
KIND_CODES = ITEM_KIND_CODES | ASSET_KIND_CODES
NO_COI = "-"  # the COI field of a LOT or EQP label
SIGNATURE_LENGTH = 103  # base32 of 64 bytes without padding
NO_EXPIRY = "-"
EXPIRY_FORMAT = "%Y%m%d%H%M"
MAX_LENGTH = 256  # a real payload is ~150 characters; refuse anything absurd early

_SUBJECT = re.compile(r"[0-9A-Z][0-9A-Z.\-]{0,39}")
_LOT = re.compile(r"LOT-[0-9A-Z][0-9A-Z.\-]{0,35}")  # materials' lot ids: LOT-000123
_COI = re.compile(r"[0-9A-Z]{13}[0-9A-Z*]")
_EXPIRY = re.compile(r"[0-9]{12}")
_SIGNATURE = re.compile(r"[A-Z2-7]{103}")
# The copy's serial: a positive decimal without leading zeros (one spelling per number).
_SERIAL = re.compile(r"[1-9][0-9]{0,8}")
MAX_SERIAL = 999_999_999
# Scanners (keyboard wedges) append CR, LF or TAB; people paste with spaces around.
_SCANNER_NOISE = "\r\n\t\x00 "


class InvalidLabel(ValueError):
    """The text is not a valid signed label payload; ``code`` is the reason code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LabelPayload:
    kind_code: str
    subject_id: str
    coi_id: str
    expires_at: datetime | None
    signature: str
    text: str
    serial: str | None = None  # None: a label of the older 6-field form

    @property
    def signed_part(self) -> str:
        return self.text[: self.text.rfind(":")]

    @property
    def asset(self) -> bool:
        """A label of a material lot or a piece of equipment, not of a patient's item."""
        return self.kind_code in ASSET_KIND_CODES


def normalise_scan(raw: str) -> str:
    """What a keyboard-wedge scanner typed, as the payload: trimmed and upper case."""
    if not isinstance(raw, str):
        return ""
    return raw.strip(_SCANNER_NOISE).upper()


def format_expiry(expires_at: datetime | None) -> str:
    if expires_at is None:
        return NO_EXPIRY
    if expires_at.tzinfo is None:
        raise ValueError("label expiry must be an aware UTC datetime")
    return expires_at.astimezone(UTC).strftime(EXPIRY_FORMAT)


def signed_content(
    kind_code: str,
    subject_id: str,
    coi_id: str,
    expires_at: datetime | None,
    serial: int | str | None = None,
) -> str:
    """The part of the payload the signature covers; refuses fields outside the format.

    Without ``serial`` it is the older 6-field form (what every copy of a label
    carried before serials), with it the per-copy form of SPEC §4."""
    kind_code, subject_id, coi_id = kind_code.upper(), subject_id.upper(), coi_id.upper()
    if kind_code not in KIND_CODES:
        raise ValueError(f"unknown label kind code {kind_code!r}")
    if not _subject_fits(kind_code, subject_id):
        raise ValueError(f"id {subject_id!r} cannot be carried in a {kind_code} label payload")
    if kind_code in ASSET_KIND_CODES:
        if coi_id != NO_COI:
            raise ValueError(f"a {kind_code} label names no patient: its COI field is -")
        if serial is None:
            raise ValueError(f"a {kind_code} label always carries its copy's serial")
    elif not _COI.fullmatch(coi_id):
        raise ValueError(f"COI ID {coi_id!r} is not a 14-character ISBT 128 COI")
    content = f"{PREFIX}:{kind_code}:{subject_id}:{coi_id}:{format_expiry(expires_at)}"
    if serial is None:
        return content
    serial = str(serial)
    if not _SERIAL.fullmatch(serial):
        raise ValueError(f"label serial {serial!r} is not a number from 1 to {MAX_SERIAL}")
    return f"{content}:{serial}"


def encode_signature(signature: bytes) -> str:
    return base64.b32encode(signature).decode("ascii").rstrip("=")


def sign(
    private_key: Ed25519PrivateKey,
    kind_code: str,
    subject_id: str,
    coi_id: str,
    expires_at: datetime | None,
    serial: int | str | None = None,
) -> str:
    """The complete payload text for one label (one printed copy when ``serial`` is given)."""
    content = signed_content(kind_code, subject_id, coi_id, expires_at, serial)
    return f"{content}:{encode_signature(private_key.sign(content.encode('ascii')))}"


def parse(raw: str) -> LabelPayload:
    """Structure only (no signature check); raises InvalidLabel('malformed', ...)."""
    if not isinstance(raw, str):
        raise InvalidLabel("malformed", "the scanned data is not text")
    text = normalise_scan(raw)
    if not text:
        raise InvalidLabel("malformed", "nothing was scanned")
    if len(text) > MAX_LENGTH:
        raise InvalidLabel("malformed", "the scanned data is far too long for a label payload")
    if not set(text) <= QR_ALPHANUMERIC:
        raise InvalidLabel("malformed", "the scanned data contains characters no label carries")
    parts = text.split(":")
    if parts[0] == "PREVIEW":
        raise InvalidLabel("malformed", "a label preview, not a label: never use it")
    if parts[0] != PREFIX:
        raise InvalidLabel("malformed", "not a gmp-mes label (it does not start with GMP1:)")
    if len(parts) not in (6, 7):
        raise InvalidLabel(
            "malformed",
            f"a label payload has 7 fields (6 before serials) separated by ':', "
            f"this one has {len(parts)}",
        )
    serial: str | None = None
    if len(parts) == 7:
        _, kind_code, subject_id, coi_id, expiry, serial, signature = parts
    else:
        _, kind_code, subject_id, coi_id, expiry, signature = parts
    if kind_code not in KIND_CODES:
        raise InvalidLabel("malformed", f"unknown label kind code {kind_code!r}")
    if not _subject_fits(kind_code, subject_id):
        raise InvalidLabel("malformed", "the item id field is not valid"
                           if kind_code in ITEM_KIND_CODES else
                           f"the {ASSET_KINDS[kind_code]} id field is not valid")
    if kind_code in ASSET_KIND_CODES:
        if coi_id != NO_COI:
            raise InvalidLabel("malformed", f"a {ASSET_KINDS[kind_code]} label names no "
                                            "patient: its COI field must be -")
        if serial is None:
            raise InvalidLabel("malformed", f"a {ASSET_KINDS[kind_code]} label has 7 fields "
                                            "(it always carries its copy's serial)")
    elif not _COI.fullmatch(coi_id):
        raise InvalidLabel("malformed", "the COI ID field is not a 14-character ISBT 128 COI")
    expires_at = _parse_expiry(expiry)
    if serial is not None and not _SERIAL.fullmatch(serial):
        raise InvalidLabel("malformed", "the serial field is not a copy number")
    if not _SIGNATURE.fullmatch(signature):
        raise InvalidLabel("malformed", "the signature field is truncated or not base32")
    return LabelPayload(kind_code, subject_id, coi_id, expires_at, signature, text, serial)


def _subject_fits(kind_code: str, subject_id: str) -> bool:
    if kind_code == "LOT":
        return _LOT.fullmatch(subject_id) is not None
    return _SUBJECT.fullmatch(subject_id) is not None


def _parse_expiry(field: str) -> datetime | None:
    if field == NO_EXPIRY:
        return None
    if not _EXPIRY.fullmatch(field):
        raise InvalidLabel("malformed", "the expiry field is not YYYYMMDDHHMM or -")
    try:
        return datetime.strptime(field, EXPIRY_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidLabel("malformed", "the expiry field is not a real date and time") from None


def decode_signature(signature: str) -> bytes:
    """Base32 without padding, canonical only (the last character has 3 unused bits)."""
    try:
        raw = base64.b32decode(signature + "=" * (-len(signature) % 8))
    except binascii.Error:
        raise InvalidLabel("malformed", "the signature field is not base32") from None
    if len(raw) != 64 or encode_signature(raw) != signature:
        raise InvalidLabel("bad_signature", "the signature is not a canonical Ed25519 signature")
    return raw


def verify(payload: LabelPayload, public_keys: Iterable[Ed25519PublicKey]) -> Ed25519PublicKey:
    """The public key that verifies the payload; raises InvalidLabel('bad_signature', ...)."""
    signature = decode_signature(payload.signature)
    message = payload.signed_part.encode("ascii")
    for key in public_keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return key
    raise InvalidLabel(
        "bad_signature",
        "the label signature does not verify with any known key (forged or altered)",
    )


def parse_and_verify(raw: str, public_keys: Iterable[Ed25519PublicKey]) -> LabelPayload:
    payload = parse(raw)
    verify(payload, public_keys)
    return payload
