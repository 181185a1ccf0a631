"""Input limits and response headers at the HTTP edge (issue 14, "the smaller holes").

One place decides what input may reach a schema or a service at all:

- JSON bodies: nesting at most ``MAX_JSON_DEPTH``, numbers of at most
  ``MAX_JSON_DIGITS`` digits and finite (400);
- integers (every input schema): inside a signed 64-bit range (422);
- text fields (:func:`check_text`, used by every input schema through
  ``gmp_mes.schemas.EdgeSchema``, which names the field in a 422): no control
  characters but tab and line breaks (NUL was a 500 on PostgreSQL, whose text type
  cannot hold it); query arguments: none at all (400);
- date and time fields: years 1900 to 2999 (later dates overflow when shifted to UTC
  or added to a shelf life);
- the ``next`` target after login: a path on this site, nothing a browser could read
  as another host (``/%09/host``, ``//host``, ``/\\host``) and no line break;
- ``X-Request-Id``: kept only when it is a short token, otherwise replaced, so it is
  never written raw into the log.

And one place sets the response headers: CSP (scripts only from this site or with
the request's nonce), HSTS on secure requests, ``no-store`` on the API and on every
page shown to a logged-in user (pages carry patient data).
"""

from __future__ import annotations

import json
import math
import re
import secrets
import uuid
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, g, request
from werkzeug.routing import IntegerConverter

from gmp_mes.errors import BadRequest

MAX_JSON_DEPTH = 32
MAX_JSON_DIGITS = 40
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MIN_YEAR, MAX_YEAR = 1900, 2999
# C0 controls but tab, line feed and carriage return; DEL; C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_SINGLE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class InputRefused(ValueError):
    """Input outside the edge's limits; the message says which limit."""


# --- values ---------------------------------------------------------------------------


def check_text(value: str, *, multiline: bool = True) -> None:
    """Refuse control characters (NUL included); tab and line breaks only if multiline."""
    pattern = _CONTROL if multiline else _CONTROL_SINGLE_LINE
    match = pattern.search(value)
    if match is not None:
        raise InputRefused(f"control character U+{ord(match.group()):04X} is not allowed")


def check_integer(value: int) -> None:
    if not INT64_MIN <= value <= INT64_MAX:
        raise InputRefused("number out of range (a signed 64-bit integer at most)")


def check_moment(value: date) -> None:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise InputRefused(f"date out of range (years {MIN_YEAR} to {MAX_YEAR})")
    if isinstance(value, datetime) and value.tzinfo is not None:
        offset = value.utcoffset()
        if offset is not None and abs(offset.total_seconds()) > 18 * 3600:
            raise InputRefused("time zone offset out of range")


# --- JSON bodies ----------------------------------------------------------------------


def _parse_int(text: str) -> int:
    """Integers are parsed only up to ``MAX_JSON_DIGITS`` digits (a 4,000-digit number
    costs time to convert); the 64-bit range is the schemas' (``EdgeSchema``), whose 422
    names the field."""
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise InputRefused(f"number longer than {MAX_JSON_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputRefused("number out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise InputRefused(f"{name} is not a JSON number")


def _walk(value: Any, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise InputRefused(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for item in value.values():
            _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _walk(item, depth + 1)


def load_json(data: bytes | str) -> Any:
    """Parse a JSON body within the edge's limits, or raise :class:`InputRefused`."""
    try:
        value = json.loads(
            data,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except RecursionError:
        raise InputRefused(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except InputRefused:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputRefused(f"not valid JSON ({exc})") from None
    _walk(value, 1)
    return value


def _check_json_body() -> None:
    """Every JSON body is checked before webargs or a view parses it."""
    if request.method in ("GET", "HEAD", "OPTIONS") or not request.is_json:
        return
    data = request.get_data(cache=True)
    if not data:
        return
    try:
        load_json(data)
    except InputRefused as exc:
        raise BadRequest(f"the request body was refused: {exc}") from None


# --- query strings, paths, next --------------------------------------------------------


class Int64Converter(IntegerConverter):
    """``<int:...>`` in a route matches only numbers a database column can hold."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", INT64_MAX)
        super().__init__(map, *args, **kwargs)


def _check_query() -> None:
    """No control characters in query arguments (never legitimate in a URL). Form fields
    are checked by their page's schema (``EdgeSchema``), which names the field."""
    try:
        for key, value in request.args.items(multi=True):
            check_text(key, multiline=False)
            check_text(value, multiline=False)
    except InputRefused as exc:
        raise BadRequest(f"the request was refused: {exc}") from None


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None (never an open redirect)."""
    if not target or len(target) > 2000:
        return None
    if _CONTROL_SINGLE_LINE.search(target) or "\\" in target or any(
        c.isspace() for c in target
    ):
        return None
    if not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


# --- request id and headers ------------------------------------------------------------


def assign_request_id() -> None:
    """Keep the caller's X-Request-Id only when it is a short plain token."""
    sent = request.headers.get("X-Request-Id", "")
    g.request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex[:16]


def csp_nonce() -> str:
    """The nonce of this response's CSP: inline scripts carry ``nonce="{{ csp_nonce() }}"``."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def content_security_policy(nonce: str) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


def security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("X-Request-Id", g.get("request_id", ""))
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Content-Security-Policy", content_security_policy(csp_nonce()))
    if request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    static = request.endpoint is not None and request.endpoint.endswith("static")
    if request.path.startswith("/api/") or (not static and g.get("user") is not None):
        # Pages show patients' names and dates of birth: never kept by a browser or proxy.
        headers["Cache-Control"] = "no-store"
        headers.setdefault("Pragma", "no-cache")
    return response


def install(app: Flask) -> None:
    """Register the edge checks (after authentication and role checks: an unauthorised
    caller learns nothing from input validation)."""
    app.url_map.converters["int"] = Int64Converter
    app.before_request(_check_query)
    app.before_request(_check_json_body)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
