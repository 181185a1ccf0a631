"""Record the API's answers of a test run (issue 16: "the API's responses are the same").

With GMP_MES_RECORD_API=<file>, every ApiClient request appends one JSON line: the test,
method, path, status and the body with volatile values (times, tokens, digests, signed
payloads, generated ids) replaced by their kind, so two runs of unchanged code compare
equal and a refactor can be checked against a recording made before it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

# Replaced wherever they occur inside a string, in this order.
VOLATILE = [
    ("<payload>", re.compile(r"GMP1:\S+")),
    ("<time>", re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?"
                          r"( ?(Z|UTC|[+-]\d{2}:?\d{2}|[A-Z]{3,4}))?")),
    ("<hex>", re.compile(r"\b[0-9a-f]{16,}\b")),
    ("<b64>", re.compile(r"\b[A-Za-z0-9_\-]{32,}={0,2}")),
    ("<ITM>", re.compile(r"\bITM-[0-9A-Z]+\b")),
    ("<LBL>", re.compile(r"\bLBL-[0-9A-Z]+\b")),
]


def normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {normalise(k): normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, str):
        for kind, pattern in VOLATILE:
            value = pattern.sub(kind, value)
    return value


def record(method: str, path: str, response: Any) -> None:
    target = os.environ.get("GMP_MES_RECORD_API")
    if not target:
        return
    body: Any
    if response.mimetype in ("application/json", "application/problem+json"):
        body = normalise(response.get_json())
    else:
        body = {"mimetype": response.mimetype}
    line = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
            "method": method, "path": normalise(path.split("?")[0]),
            "status": response.status_code, "body": body}
    with open(target, "a", encoding="utf-8") as out:
        out.write(json.dumps(line, sort_keys=True) + "\n")
