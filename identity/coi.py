"""ISBT 128 identifiers: the COI ID (ST-028, Data Structure 040) and the DIN
(Data Structure 001), both protected by the ISO/IEC 7064 MOD 37-2 check character
(ISBT 128 ST-001 Appendix A). Pure functions: no database, no settings.

MOD 37-2 is a pure system with radix 2 over the 37 characters ``0-9 A-Z *``: it
detects every single-character substitution and every adjacent transposition,
which is why a mistyped COI ID never resolves to another patient.
"""

from __future__ import annotations

import re

# ST-001 Appendix A: 0-9 -> 0-9, A-Z -> 10-35, '*' -> 36 (check character only).
CHECK_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ*"
_VALUE = {ch: i for i, ch in enumerate(CHECK_ALPHABET)}

# Facility Identification Number: 1 letter then 4 alphanumerics (ST-001 §2.4.1).
FIN = re.compile(r"^[A-Z][0-9A-Z]{4}$")
# COI ID data: FIN, 2-digit year, 6 alphanumerics; then the check character.
COI_BODY = re.compile(r"^[A-Z][0-9A-Z]{4}[0-9]{2}[0-9A-Z]{6}$")
# DIN: FIN, 2-digit year, 6-digit sequence number (flags are not part of it).
DIN_BODY = re.compile(r"^[A-Z][0-9A-Z]{4}[0-9]{2}[0-9]{6}$")
SEQUENCE_MAX = 999_999


def check_character(data: str) -> str:
    """The ISO/IEC 7064 MOD 37-2 check character of ``data`` (0-9, A-Z only)."""
    total = 0
    for ch in data:
        value = _VALUE.get(ch)
        if value is None or value == 36:
            raise ValueError(f"character {ch!r} cannot appear in an ISBT 128 identifier")
        total = ((total + value) * 2) % 37
    return CHECK_ALPHABET[(38 - total) % 37]


def is_valid_check(identifier: str) -> bool:
    """True when the last character is the MOD 37-2 check character of the rest."""
    if len(identifier) < 2:
        return False
    try:
        return check_character(identifier[:-1]) == identifier[-1]
    except ValueError:
        return False


def coi_problem(text: str) -> str | None:
    """Why ``text`` is not a valid 14-character COI ID (None when it is valid)."""
    if not isinstance(text, str) or len(text) != 14:
        return "a COI ID has 14 characters (facility, year, 6 characters, check character)"
    if not COI_BODY.match(text[:13]):
        return "a COI ID is a facility code, a 2-digit year and 6 letters or digits"
    if not is_valid_check(text):
        return "the check character does not match: the COI ID was mistyped"
    return None


def din_problem(text: str) -> str | None:
    """Why ``text`` is not a valid ISBT 128 DIN with its check character (None if valid).

    Accepted: the 13 data characters followed by the check character (14 in all)."""
    if not isinstance(text, str) or len(text) != 14:
        return "a DIN has 13 characters plus its check character"
    if not DIN_BODY.match(text[:13]):
        return "a DIN is a facility code, a 2-digit year and a 6-digit sequence number"
    if not is_valid_check(text):
        return "the check character does not match: the DIN was mistyped"
    return None


def make_coi(facility_id: str, year: int, sequence: int) -> str:
    """COI ID for the ``sequence``-th enrolment of ``year`` at ``facility_id``."""
    if not FIN.match(facility_id):
        raise ValueError(f"facility id {facility_id!r} is not an ISBT 128 FIN like A9999")
    if not 1 <= sequence <= SEQUENCE_MAX:
        raise ValueError("COI sequence out of range")
    body = f"{facility_id}{year % 100:02d}{sequence:06d}"
    return body + check_character(body)


def format_for_label(coi_id: str) -> tuple[str, str]:
    """Eye-readable form: ('A9999 26 000001', check character) - the check is boxed."""
    return f"{coi_id[:5]} {coi_id[5:7]} {coi_id[7:13]}", coi_id[13]
