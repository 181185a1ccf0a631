"""Password hashing with Argon2id, a memory-hard KDF, and the password policy.

The cost can be lowered for the test suite only (``GMP_MES_PASSWORD_COST=test``);
each hash records its own parameters, so verification never depends on it.

Policy (21 CFR 11.300(b), NIST SP 800-63B §3.1.1.2): a minimum length, not one of
the 30,000 most common passwords of the leaked-password corpora that the kept
``zxcvbn`` package ships (its ``passwords`` frequency list), and not containing the
user name. Composition rules are deliberately not imposed (SP 800-63B).
"""

from __future__ import annotations

import os
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_PROFILES = {
    "standard": PasswordHasher(),  # RFC 9106 second recommended option: 64 MiB, t=3
    "test": PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
}
_hasher = _PROFILES[os.environ.get("GMP_MES_PASSWORD_COST", "standard")]
_DUMMY = _hasher.hash("timing-equaliser")

MIN_LENGTH = 12
MAX_LENGTH = 256  # Argon2 takes any length; a bound keeps a request from costing a lot


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored_hash: str | None, password: str) -> bool:
    """Constant-work check; an unknown user costs as much as a wrong password."""
    try:
        return _hasher.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@cache
def common_passwords() -> frozenset[str]:
    """The common/breached password list shipped with zxcvbn (lower case)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(word.lower() for word in FREQUENCY_LISTS["passwords"])


def password_problems(
    password: str, *, username: str | None = None, min_length: int = MIN_LENGTH
) -> list[str]:
    """Why ``password`` is refused (empty when it is acceptable); never echoes it."""
    problems = []
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters")
    if len(password) > MAX_LENGTH:
        problems.append(f"must be at most {MAX_LENGTH} characters")
    if password.strip() != password:
        problems.append("must not start or end with white space")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in password):
        problems.append("must not contain control characters")
    lowered = password.lower()
    if lowered in common_passwords() or lowered.strip("0123456789!.") in common_passwords():
        problems.append("is a commonly used or breached password; choose another")
    name = (username or "").strip().lower()
    if name and len(name) >= 3 and name in lowered:
        problems.append("must not contain the user name")
    return problems


def one_time_password() -> str:
    """A random password an administrator hands over; it must be changed at first use."""
    return secrets.token_urlsafe(12)
