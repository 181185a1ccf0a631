"""Password hashing with Argon2id, a memory-hard KDF.

The cost can be lowered for the test suite only (``GMP_MES_PASSWORD_COST=test``);
each hash records its own parameters, so verification never depends on it.
"""

from __future__ import annotations

import os

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_PROFILES = {
    "standard": PasswordHasher(),  # RFC 9106 second recommended option: 64 MiB, t=3
    "test": PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
}
_hasher = _PROFILES[os.environ.get("GMP_MES_PASSWORD_COST", "standard")]
_DUMMY = _hasher.hash("timing-equaliser")

MIN_LENGTH = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password(stored_hash: str | None, password: str) -> bool:
    """Constant-work check; an unknown user costs as much as a wrong password."""
    try:
        return _hasher.verify(stored_hash or _DUMMY, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_problems(password: str) -> list[str]:
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(f"must be at least {MIN_LENGTH} characters")
    if password.strip() != password:
        problems.append("must not start or end with white space")
    return problems
