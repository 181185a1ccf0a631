"""Physical ranges of measured values, checked before any acceptance limit (issue 13).

A limit says what is acceptable; a physical range says what can exist at all. A
negative endotoxin concentration would otherwise pass a max-only specification and
1e308 cells would be "in limits": such an entry is a typing or transfer error and is
refused (422) instead of being recorded and evaluated (EU GMP Annex 11 §6: built-in
checks for the correct entry of critical data; 21 CFR 211.68).
"""

from __future__ import annotations

import math

# No measurement in a cell therapy plant comes near this; larger numbers are typos or
# overflowed transfers (1e308).
MAX_MAGNITUDE = 1e15
# More cells than a whole human body holds (about 3.7e13, Bianconi et al., Ann Hum Biol
# 2013) cannot be in a bag, a culture or a dose.
MAX_CELLS = 1e13
ABSOLUTE_ZERO_C = -273.15

_VOLUMES = {"ml", "l", "µl", "ul", "dl"}
_MASSES = {"g", "mg", "µg", "ug", "ng", "kg"}
_TIMES = {"s", "min", "h", "d"}
_COUNTS = {"cells", "cfu", "copies", "count", "bags"}


def _kind(unit: str | None) -> str | None:
    """What a unit measures, as far as its physical range goes (None: unknown)."""
    text = (unit or "").strip().lower()
    if not text:
        return None
    if text == "%":
        return "percent"
    if text in ("°c", "degc"):
        return "celsius"
    if text == "k":
        return "kelvin"
    if text == "ph":
        return "ph"
    if text.split("/")[0] == "cells":
        return "cells"
    if "/" in text:
        return "concentration"  # EU/mL, pg/mL, cells/kg, copies/cell, TU/cell, cfu/m³ ...
    if text in _VOLUMES:
        return "volume"
    if text in _MASSES:
        return "mass"
    if text in _TIMES:
        return "time"
    if text in _COUNTS:
        return "count"
    return None


def physical_problem(value: float, unit: str | None) -> str | None:
    """Why ``value`` in ``unit`` cannot be a real measurement, or None when it can."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    try:
        number = float(value)
    except OverflowError:
        return "is not a plausible measurement (out of range)"
    if not math.isfinite(number):
        return "must be a finite number"
    if abs(number) > MAX_MAGNITUDE:
        return f"is not a plausible measurement (more than {MAX_MAGNITUDE:g} in magnitude)"
    kind = _kind(unit)
    if kind == "percent" and not 0 <= number <= 100:
        return "a percentage must be between 0 and 100"
    if kind == "celsius" and number < ABSOLUTE_ZERO_C:
        return "is below absolute zero"
    if kind == "ph" and not 0 <= number <= 14:
        return "a pH must be between 0 and 14"
    if kind in ("cells", "concentration", "volume", "mass", "time", "count", "kelvin") \
            and number < 0:
        return f"must not be negative (a {kind} in {unit})"
    if kind == "cells" and number > MAX_CELLS:
        return f"more than {MAX_CELLS:g} cells is not a plausible count"
    return None
