"""Domain errors: one exception type per problem ``code`` (SPEC §7).

Services raise these; the HTTP edge renders them as RFC 9457 problem+json and
the CLI as one line. A follow-up runs in its own transaction after the failed
one rolled back, for things that must be recorded even though the request
failed (a wrong signature password counts toward lockout).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from sqlalchemy.orm import Session

FollowUp = Callable[[Session], None]


class DomainError(Exception):
    status: ClassVar[int] = 409
    code: ClassVar[str] = "conflict"
    title: ClassVar[str] = "Conflict"

    def __init__(
        self,
        detail: str,
        *,
        errors: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
        follow_up: FollowUp | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra or {}
        self.follow_up = follow_up
        self.headers: dict[str, str] = {}  # extra response headers (Retry-After)


class BadRequest(DomainError):
    status, code, title = 400, "malformed_body", "Bad request"


class Unauthenticated(DomainError):
    status, code, title = 401, "unauthenticated", "Unauthorized"


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"


class AccountLocked(Unauthenticated):
    code = "account_locked"


class AccountInactive(Unauthenticated):
    code = "account_inactive"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden_role", "Forbidden"


class SegregationOfDuties(Forbidden):
    code = "segregation_of_duties"


class PasswordChangeRequired(Forbidden):
    """The password is one-time (an administrator set it) or expired: change it first."""

    code = "password_change_required"


class RateLimited(DomainError):
    """Too many failed passwords from one client or for one account (21 CFR 11.300(d))."""

    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, *, retry_after: int, **kw: Any) -> None:
        super().__init__(detail, extra={"retry_after": retry_after}, **kw)
        self.headers = {"Retry-After": str(retry_after)}


class SignatureRejected(DomainError):
    """Wrong password at signing: 401 because the credential is bad."""

    status, code, title = 401, "signature_rejected", "Signature refused"


class NotFound(DomainError):
    status, code, title = 404, "not_found", "Not found"


class Conflict(DomainError):
    status, code, title = 409, "conflict", "Conflict"


class AlreadyExists(Conflict):
    code = "already_exists"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class Expired(Conflict):
    code = "expired"


class Blocked(Conflict):
    code = "blocked"


class CoiMismatch(Conflict):
    code = "coi_mismatch"


class ValidationFailed(DomainError):
    status, code, title = 422, "validation_error", "Unprocessable content"

    def __init__(self, detail: str, *, errors: dict[str, list[str]] | None = None, **kw: Any):
        super().__init__(detail, errors=errors or {}, **kw)


def conflict(code: str, detail: str, **kw: Any) -> Conflict:
    """A 409 with a specific code (``qc_incomplete``, ``open_deviation``, ...)."""
    error = Conflict(detail, **kw)
    error.code = code  # type: ignore[misc]
    return error


def field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors={field: [message]})
