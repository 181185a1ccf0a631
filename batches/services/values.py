"""Entered step values: typed, unit-checked and evaluated against the limits."""

from __future__ import annotations

import math
from typing import Any

from gmp_mes.errors import ValidationFailed, field_error
from gmp_mes.physical import physical_problem
from processes.definitions import MAX_BAGS, ParamType, Step

MAX_TEXT = 500


def check_values(step: Step, values: object) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """Type- and unit-check the entered values; return (values, per-parameter results, bags).

    Wrong types, wrong units, unknown or missing parameters and physically impossible
    values (a negative count, 120 %, 1e308 cells) are entry errors (422).
    Values outside the limits are recorded as entered and evaluated, never rejected
    or clamped (EU GMP Chapter 4.8: the record shows what was actually found).
    """
    if not isinstance(values, dict):
        raise field_error("values", "must be an object of parameter code -> value")
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    bags = 1
    for key in values:
        if step.parameter(key) is None and not (step.creates and key == "bags"):
            known = ", ".join(p.code for p in step.parameters) or "none"
            errors[f"values.{key}"] = [f"unknown parameter of step {step.code} (known: {known})"]
    if step.creates:
        raw_bags = values.get("bags", 1)
        if isinstance(raw_bags, bool) or not isinstance(raw_bags, int | float) or (
            isinstance(raw_bags, float) and not raw_bags.is_integer()
        ):
            errors["values.bags"] = ["must be a whole number"]
        elif not 1 <= raw_bags <= MAX_BAGS:
            errors["values.bags"] = [f"must be between 1 and {MAX_BAGS}"]
        else:
            bags = int(raw_bags)
            clean["bags"] = bags
    results: list[dict[str, Any]] = []
    for param in step.parameters:
        name = f"values.{param.code}"
        if param.code not in values or values[param.code] is None:
            if param.required:
                errors[name] = ["missing required value"]
            continue
        raw = values[param.code]
        if isinstance(raw, dict):
            unknown = set(raw) - {"value", "unit"}
            if unknown or "value" not in raw:
                errors[name] = ['must be a value or {"value": ..., "unit": ...}']
                continue
            unit = raw.get("unit")
            if unit is not None and (not isinstance(unit, str) or unit.strip() != param.unit):
                errors[name] = [f"unit must be {param.unit!r}" if param.unit else "has no unit"]
                continue
            raw = raw["value"]
        value, problem = _typed(param.type, raw)
        if not problem and param.numeric:
            # Physical range before limits (issue 13): an impossible value is an entry
            # error, never a recorded result evaluated against the limits.
            problem = physical_problem(value, param.unit)
        if problem:
            errors[name] = [problem]
            continue
        clean[param.code] = value
        results.append({
            "code": param.code, "name": param.name, "value": value, "unit": param.unit,
            "limits": param.limits_text(), "in_limits": param.within_limits(value),
            "severity": param.severity,
        })
    if errors:
        raise ValidationFailed(f"step {step.code}: values refused", errors=errors)
    return clean, results, bags


def _typed(kind: str, raw: Any) -> tuple[Any, str | None]:
    if kind == ParamType.BOOLEAN:
        return (raw, None) if isinstance(raw, bool) else (None, "must be true or false")
    if kind == ParamType.TEXT:
        if not isinstance(raw, str) or not raw.strip():
            return None, "must be non-empty text"
        if len(raw) > MAX_TEXT:
            return None, f"must be at most {MAX_TEXT} characters"
        return raw.strip(), None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None, "must be a number"
    if not math.isfinite(raw):
        return None, "must be a finite number"
    if kind == ParamType.INTEGER:
        if isinstance(raw, float) and not raw.is_integer():
            return None, "must be a whole number"
        return int(raw), None
    return raw, None
