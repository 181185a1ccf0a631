"""Process definitions (master batch records) from ``config/processes/*.toml`` (SPEC §3).

Over ~500 lines on purpose: the format's dataclasses, its validator and its canonical
form change together (a new field touches all three), so they stay in one module.

Pure: no database. Every file is validated completely before anything from it
is used, so a bad file never half-loads; each error names the file, the field
and what is wrong (EU GMP Annex 11 §5: data checks on entry). The canonical
JSON of a validated definition is what the database stores and digests, so a
comment or layout change in the file does not change the definition, while any
change of substance does.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from gmp_mes.audit import canonical_json, digest
from gmp_mes.durations import format_duration, parse_duration
from gmp_mes.physical import physical_problem
from gmp_mes.registry import EquipmentNeed, MaterialNeed, StepNeeds

CODE = re.compile(r"^[A-Z][A-Z0-9-]{0,31}$")
STEP_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_BAGS = 20


class Severity(enum.StrEnum):
    MINOR = "minor"
    MAJOR = "major"
    CRITICAL = "critical"


class ParamType(enum.StrEnum):
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    TEXT = "text"


CREATES = ("final_product",)
# What a step may consume (SPEC §2: the starting material is in_process for its batch from
# batch start until the step that consumes it).
CONSUMES = ("starting_material",)
# What a step may have scanned, label by label, before it is signed: every item of that
# kind the batch created (``scans = "final_product"``: the label check after the fill).
SCANS = ("final_product",)


class ProcessDefinitionError(Exception):
    """One or more problems in one definition file; ``errors`` lists (field, message)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "; ".join(f"{name}: {message}" if name else message for name, message in errors)
        super().__init__(f"{source}: {lines}")


@dataclass(frozen=True)
class Parameter:
    code: str
    name: str
    unit: str
    type: str = ParamType.NUMBER.value
    min: float | None = None
    max: float | None = None
    expected: bool | None = None
    required: bool = True
    severity: str = Severity.MAJOR.value

    @property
    def numeric(self) -> bool:
        return self.type in (ParamType.NUMBER, ParamType.INTEGER)

    def limits_text(self) -> str:
        """Human-readable acceptance range, as printed on the batch record."""
        unit = f" {self.unit}" if self.unit else ""
        if self.type == ParamType.BOOLEAN:
            return "" if self.expected is None else ("yes" if self.expected else "no")
        if self.min is not None and self.max is not None:
            return f"{fmt_number(self.min)} - {fmt_number(self.max)}{unit}"
        if self.min is not None:
            return f">= {fmt_number(self.min)}{unit}"
        if self.max is not None:
            return f"<= {fmt_number(self.max)}{unit}"
        return ""

    def within_limits(self, value: Any) -> bool:
        """True when a (type-checked) value meets the limits; text has no limits."""
        if self.type == ParamType.BOOLEAN:
            return self.expected is None or value is self.expected
        if self.numeric:
            if self.min is not None and value < self.min:
                return False
            return not (self.max is not None and value > self.max)
        return True


@dataclass(frozen=True)
class Step:
    code: str
    name: str
    index: int
    instructions: str = ""
    repeatable: bool = False
    critical: bool = False
    creates: str | None = None
    expiry_from: bool = False
    parameters: tuple[Parameter, ...] = ()
    consumes: str | None = None
    scans: str | None = None
    # What touches the cells and who and where (SPEC §11, §12): checked at the step by
    # the ``registry.step_requirements`` providers.
    needs: StepNeeds = field(default_factory=StepNeeds)

    def parameter(self, code: str) -> Parameter | None:
        return next((p for p in self.parameters if p.code == code), None)


# Qualitative outcomes are chosen, never typed (issue 13: "Negatve" must not become a
# signed failure): the accept value, its opposite and ``invalid`` (no valid result).
INVALID_OUTCOME = "invalid"
_OPPOSITES = {
    "negative": "positive", "absent": "present", "not detected": "detected",
    "conforms": "does not conform", "no growth": "growth", "pass": "fail",
    "compliant": "not compliant", "clear": "not clear",
}
_OPPOSITES.update({v: k for k, v in list(_OPPOSITES.items())})


def normal_outcome(text: str) -> str:
    """An outcome as compared and stored: lower case, single spaces."""
    return " ".join(text.split()).lower()


def opposite_outcome(accept: str) -> str:
    accept = normal_outcome(accept)
    if accept in _OPPOSITES:
        return _OPPOSITES[accept]
    return accept[4:] if accept.startswith("not ") else f"not {accept}"


@dataclass(frozen=True)
class QcSpec:
    test: str
    method: str | None = None
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    accept: str | None = None
    time_to_result: timedelta | None = None
    release_before_result: bool = False
    sample_step: str | None = None

    @property
    def qualitative(self) -> bool:
        return self.accept is not None

    @property
    def outcomes(self) -> tuple[str, ...]:
        """The choices of a qualitative test: accept value, its opposite, invalid."""
        if self.accept is None:
            return ()
        return (normal_outcome(self.accept), opposite_outcome(self.accept), INVALID_OUTCOME)

    def spec_text(self) -> str:
        if self.accept is not None:
            return self.accept
        unit = f" {self.unit}" if self.unit else ""
        if self.min is not None and self.max is not None:
            return f"{fmt_number(self.min)} - {fmt_number(self.max)}{unit}"
        if self.min is not None:
            return f">= {fmt_number(self.min)}{unit}"
        if self.max is not None:
            return f"<= {fmt_number(self.max)}{unit}"
        return ""


@dataclass(frozen=True)
class Curve:
    step: str
    viable_cells: str
    viability: str


# SPEC §16: a visit left unrecorded this long after its due time is overdue, unless the
# definition states its own `[follow_up] window`.
DEFAULT_FOLLOW_UP_WINDOW = timedelta(days=14)
MAX_LONG_TERM_YEARS = 30


@dataclass(frozen=True)
class FollowUp:
    """``[follow_up]`` (SPEC §16): visits after administration (ISO 8601 durations, days
    or weeks), then yearly visits on the administration's anniversaries after the last
    of them up to ``long_term_years`` years; ``window``: how long after its due time an
    unrecorded visit turns overdue (a gmp-mes extension, default 14 days)."""

    visits: tuple[str, ...]
    long_term_years: int = 0
    window: timedelta = DEFAULT_FOLLOW_UP_WINDOW
    window_declared: bool = False


@dataclass(frozen=True)
class ForecastSpec:
    """SPEC §15 ``[forecast]``: the cell count a batch must reach by its harvest day (days
    after batch start) and the probability under which people are alerted. The counts are
    ``parameter`` of ``step``; ``day_parameter`` (a parameter of that step) holds the
    culture day entered with each count, else the day is the time since batch start."""

    step: str
    parameter: str
    target: float
    harvest_day: float
    alert_below: float = 0.2
    day_parameter: str | None = None


@dataclass(frozen=True)
class ScheduleSpec:
    """SPEC §13 ``[schedule]``: how long manufacturing takes (batch start to fill) and how
    long from fill to the release decision (the QC tests and QA's review). A booking's
    windows and warnings are computed from it."""

    manufacturing: timedelta
    release: timedelta


@dataclass(frozen=True)
class ProcessDefinition:
    code: str
    version: int
    name: str
    description: str
    starting_material_hold: timedelta
    final_product_shelf_life: timedelta
    post_thaw: timedelta | None
    warn_before: tuple[str, ...]
    steps: tuple[Step, ...]
    qc: tuple[QcSpec, ...]
    storage: dict[str, str] = field(default_factory=dict)
    curve: Curve | None = None
    forecast: ForecastSpec | None = None
    follow_up: FollowUp | None = None
    schedule: ScheduleSpec | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def step(self, code: str) -> Step | None:
        return next((s for s in self.steps if s.code == code), None)

    @property
    def creating_step(self) -> Step | None:
        return next((s for s in self.steps if s.creates == "final_product"), None)

    @property
    def consuming_step(self) -> Step:
        """The step that consumes the starting material: the one declaring
        ``consumes = "starting_material"``, else the first step after receipt (the
        second step; the only one of a one-step process)."""
        declared = next((s for s in self.steps if s.consumes == "starting_material"), None)
        return declared or self.steps[min(1, len(self.steps) - 1)]

    def canonical(self) -> str:
        return canonical_json(self.raw)

    @property
    def digest(self) -> str:
        return digest(self.raw)


def fmt_number(value: float) -> str:
    """Numbers as a reviewer reads them: 1e+06 -> 1.0E6, 80.0 -> 80."""
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 1e6:
        mantissa, exponent = f"{value:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}E{int(exponent)}"
    return f"{value:g}"


# --- validation -----------------------------------------------------------------------

_TOP = {"code", "version", "name", "description", "shelf_life", "storage", "curve", "steps", "qc",
        "forecast", "follow_up", "schedule"}
_SCHEDULE = {"manufacturing", "release"}
_FOLLOW_UP = {"visits", "long_term_years", "window"}
_SHELF = {"starting_material", "final_product", "post_thaw", "warn_before"}
_STORAGE = {"starting_material", "final_product"}
_CURVE = {"step", "viable_cells", "viability"}
_FORECAST = {"step", "parameter", "target", "harvest_day", "alert_below", "day_parameter"}
_STEP = {
    "code", "name", "instructions", "repeatable", "critical", "creates", "expiry_from",
    "parameters", "consumes", "scans", "materials", "equipment", "qualification",
    "room_grade",
}
_STEP_MATERIAL = {"material", "quantity"}
_STEP_EQUIPMENT = {"type"}
ROOM_GRADES = ("A", "B", "C", "D")  # EU GMP Annex 1: A is the cleanest
# Material codes and equipment types: what a lot's and an equipment's records use.
MATERIAL_CODE = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
EQUIPMENT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
QUALIFICATION_CODE = re.compile(r"^[a-z][a-z0-9_-]{0,47}$")
_PARAM = {"code", "name", "unit", "type", "min", "max", "expected", "required", "severity"}
_QC = {
    "test", "method", "unit", "min", "max", "accept", "time_to_result",
    "release_before_result", "sample_step",
}


class _Checker:
    """Collects every problem of one file instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def fail(self, name: str, message: str) -> None:
        self.errors.append((name, message))

    def unknown(self, table: dict[str, Any], allowed: set[str], prefix: str) -> None:
        for key in sorted(set(table) - allowed):
            self.fail(f"{prefix}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def text(self, table: dict[str, Any], key: str, name: str, *, required: bool = True,
             pattern: re.Pattern[str] | None = None, empty_ok: bool = False) -> str | None:
        if key not in table:
            if required:
                self.fail(name, "missing required field")
            return None
        value = table[key]
        if not isinstance(value, str):
            self.fail(name, f"must be a string, not {_kind(value)}")
            return None
        if not value.strip() and not empty_ok:
            self.fail(name, "must not be empty")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(name, f"{value!r} does not match {pattern.pattern}")
            return None
        return value

    def boolean(self, table: dict[str, Any], key: str, name: str) -> bool | None:
        value = table.get(key)
        if key in table and not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {_kind(value)}")
            return None
        return value

    def number(self, table: dict[str, Any], key: str, name: str) -> float | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"must be a number, not {_kind(value)}")
            return None
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(name, "must be a finite number")
            return None
        return float(value)

    def duration(self, table: dict[str, Any], key: str, name: str, *,
                 required: bool = True) -> timedelta | None:
        if key not in table:
            if required:
                self.fail(name, "missing required field")
            return None
        value = table[key]
        if not isinstance(value, str):
            self.fail(name, f"must be an ISO 8601 duration string, not {_kind(value)}")
            return None
        try:
            parsed = parse_duration(value)
        except ValueError as exc:
            self.fail(name, str(exc))
            return None
        if parsed <= timedelta(0):
            self.fail(name, "must be longer than zero")
            return None
        return parsed

    def table(self, parent: dict[str, Any], key: str, name: str, *,
              required: bool = True) -> dict[str, Any] | None:
        if key not in parent:
            if required:
                self.fail(name, "missing required table")
            return None
        value = parent[key]
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, not {_kind(value)}")
            return None
        return value

    def tables(self, parent: dict[str, Any], key: str, name: str) -> list[dict[str, Any]]:
        value = parent.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(name, f"must be an array of tables ([[{key}]]), not {_kind(value)}")
            return []
        return value

    def keyed_tables(
        self, parent: dict[str, Any], key: str, name: str, id_key: str, what: str
    ) -> Iterator[tuple[str, str | None, dict[str, Any]]]:
        """Each table of the array ``key`` with its identifier ``id_key`` read and checked
        unique; yields the error prefix naming the table, the identifier and the table."""
        seen: set[str] = set()
        for i, table in enumerate(self.tables(parent, key, name)):
            prefix = f"{name}[{i}]"
            identifier = self.text(table, id_key, f"{prefix}.{id_key}", pattern=STEP_CODE)
            if identifier is not None:
                prefix = f"{name}[{i}] ({identifier})"
                if identifier in seen:
                    self.fail(f"{prefix}.{id_key}", f"duplicate {what} {identifier!r}")
                seen.add(identifier)
            yield prefix, identifier, table

    def physical(self, limit: float | None, unit: str | None, name: str) -> None:
        """A limit no real value can reach (a negative count, 120 %) is a definition error."""
        if limit is not None and (problem := physical_problem(limit, unit)):
            self.fail(name, f"{fmt_number(limit)} {unit or ''}: {problem}".replace("  ", " "))

    def limits(self, lo: float | None, hi: float | None, name: str) -> None:
        if lo is not None and hi is not None and lo > hi:
            self.fail(name, f"min {fmt_number(lo)} is greater than max {fmt_number(hi)}")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def parse_definition(data: dict[str, Any], source: str) -> ProcessDefinition:
    """Validate a parsed TOML document; raise ProcessDefinitionError listing every problem."""
    c = _Checker()
    c.unknown(data, _TOP, "")
    code = c.text(data, "code", "code", pattern=CODE)
    version = data.get("version")
    if "version" not in data:
        c.fail("version", "missing required field")
    elif isinstance(version, bool) or not isinstance(version, int):
        c.fail("version", f"must be a whole number, not {_kind(version)}")
        version = None
    elif version < 1:
        c.fail("version", "must be 1 or more")
        version = None
    name = c.text(data, "name", "name")
    description = c.text(data, "description", "description", required=False) or ""

    shelf = c.table(data, "shelf_life", "shelf_life") or {}
    c.unknown(shelf, _SHELF, "shelf_life.")
    hold = c.duration(shelf, "starting_material", "shelf_life.starting_material")
    shelf_fp = c.duration(shelf, "final_product", "shelf_life.final_product")
    post_thaw = c.duration(shelf, "post_thaw", "shelf_life.post_thaw", required=False)
    warn = shelf.get("warn_before", [])
    warn_before: list[str] = []
    if not isinstance(warn, list):
        c.fail("shelf_life.warn_before", f"must be an array of durations, not {_kind(warn)}")
    else:
        for i, item in enumerate(warn):
            parsed = c.duration({"w": item}, "w", f"shelf_life.warn_before[{i}]")
            if parsed is not None:
                warn_before.append(item.strip().upper())

    storage_table = c.table(data, "storage", "storage", required=False) or {}
    c.unknown(storage_table, _STORAGE, "storage.")
    storage = {
        key: value for key in sorted(_STORAGE & set(storage_table))
        if (value := c.text(storage_table, key, f"storage.{key}")) is not None
    }

    steps = _steps(c, data)
    step_codes = {s.code for s in steps}
    if "steps" in data and not steps and not any(n.startswith("steps") for n, _ in c.errors):
        c.fail("steps", "a process needs at least one step")
    if "steps" not in data:
        c.fail("steps", "missing required field: at least one [[steps]] table")
    creating = [s for s in steps if s.creates == "final_product"]
    if len(creating) > 1:
        c.fail("steps", "only one step may create the final product")
    if creating and not any(s.expiry_from for s in steps):
        c.fail("steps", "the final product needs an expiry: set expiry_from = true on a step")

    qc = _qc(c, data, step_codes)
    curve = _curve(c, data, steps)
    forecast = _forecast(c, data, steps)
    follow_up = _follow_up(c, data)
    schedule = _schedule(c, data)
    if c.errors:
        raise ProcessDefinitionError(source, c.errors)
    assert code is not None and name is not None and hold is not None and shelf_fp is not None
    definition = ProcessDefinition(
        code=code, version=int(version), name=name, description=description,  # type: ignore[arg-type]
        starting_material_hold=hold, final_product_shelf_life=shelf_fp, post_thaw=post_thaw,
        warn_before=tuple(warn_before), steps=tuple(steps), qc=tuple(qc), storage=storage,
        curve=curve or inferred_curve(steps), forecast=forecast, follow_up=follow_up,
        schedule=schedule,
    )
    # The stored document keeps the [curve] table as written (none when inferred), so the
    # digest of a definition does not change with this rule.
    object.__setattr__(definition, "raw", _canonical_raw(definition, data, curve))
    return definition


def _schedule(c: _Checker, data: dict[str, Any]) -> ScheduleSpec | None:
    """``[schedule]`` (SPEC §13): both durations, each longer than zero."""
    table = c.table(data, "schedule", "schedule", required=False)
    if table is None:
        return None
    c.unknown(table, _SCHEDULE, "schedule.")
    manufacturing = c.duration(table, "manufacturing", "schedule.manufacturing")
    release = c.duration(table, "release", "schedule.release")
    if manufacturing is None or release is None:
        return None
    return ScheduleSpec(manufacturing=manufacturing, release=release)


def _canonical_schedule(schedule: ScheduleSpec | None) -> dict[str, Any]:
    """``schedule`` only when declared: the digests of earlier versions hold."""
    if schedule is None:
        return {}
    return {"schedule": {"manufacturing": format_duration(schedule.manufacturing),
                         "release": format_duration(schedule.release)}}


def _follow_up(c: _Checker, data: dict[str, Any]) -> FollowUp | None:
    """``[follow_up]`` (SPEC §16): visits increasing and after the administration, a
    whole number of long-term years reaching past the last visit."""
    table = c.table(data, "follow_up", "follow_up", required=False)
    if table is None:
        return None
    c.unknown(table, _FOLLOW_UP, "follow_up.")
    raw_visits = table.get("visits")
    visits: list[str] = []
    if not isinstance(raw_visits, list) or not raw_visits:
        c.fail("follow_up.visits", "must be a non-empty array of durations like P28D")
        raw_visits = []
    last = timedelta(0)
    for i, text in enumerate(raw_visits):
        name = f"follow_up.visits[{i}]"
        parsed = c.duration({"v": text}, "v", name)
        if parsed is None:
            continue
        if parsed <= last:
            c.fail(name, "visits must come after the administration and after each other")
            continue
        last = parsed
        visits.append(format_duration(parsed))
    years = table.get("long_term_years", 0)
    if isinstance(years, bool) or not isinstance(years, int):
        c.fail("follow_up.long_term_years", f"must be a whole number, not {_kind(years)}")
        years = 0
    elif not 0 <= years <= MAX_LONG_TERM_YEARS:
        c.fail("follow_up.long_term_years", f"must be 0 to {MAX_LONG_TERM_YEARS}")
        years = 0
    elif years and timedelta(days=365 * years) <= last:
        c.fail("follow_up.long_term_years", "must reach beyond the last visit")
    window = c.duration(table, "window", "follow_up.window", required=False)
    if window is not None and window <= timedelta(0):
        c.fail("follow_up.window", "must be longer than zero")
    return FollowUp(visits=tuple(visits), long_term_years=years,
                    window=window or DEFAULT_FOLLOW_UP_WINDOW,
                    window_declared=window is not None)


def inferred_curve(steps: Iterable[Step]) -> Curve | None:
    """SPEC §3: without a [curve] table, the first repeatable step with a parameter in
    `cells` and one in `%` gives the expansion curve (its first such parameters)."""
    for step in steps:
        if not step.repeatable:
            continue
        cells = next((p.code for p in step.parameters
                      if p.numeric and p.unit.strip().lower() == "cells"), None)
        viability = next((p.code for p in step.parameters
                          if p.numeric and p.unit.strip() == "%"), None)
        if cells is not None and viability is not None:
            return Curve(step=step.code, viable_cells=cells, viability=viability)
    return None


def _steps(c: _Checker, data: dict[str, Any]) -> list[Step]:
    steps: list[Step] = []
    for prefix, code, table in c.keyed_tables(data, "steps", "steps", "code", "step code"):
        c.unknown(table, _STEP, f"{prefix}.")
        name = c.text(table, "name", f"{prefix}.name")
        instructions = c.text(table, "instructions", f"{prefix}.instructions", required=False)
        repeatable = c.boolean(table, "repeatable", f"{prefix}.repeatable") or False
        critical = c.boolean(table, "critical", f"{prefix}.critical") or False
        expiry_from = c.boolean(table, "expiry_from", f"{prefix}.expiry_from") or False
        creates = c.text(table, "creates", f"{prefix}.creates", required=False)
        if creates is not None and creates not in CREATES:
            c.fail(f"{prefix}.creates", f"must be one of: {', '.join(CREATES)}")
        if expiry_from and creates is None:
            c.fail(f"{prefix}.expiry_from", "only a step that creates the final product sets it")
        if repeatable and creates is not None:
            c.fail(f"{prefix}.repeatable", "a step that creates the final product runs once")
        consumes = c.text(table, "consumes", f"{prefix}.consumes", required=False)
        if consumes is not None and consumes not in CONSUMES:
            c.fail(f"{prefix}.consumes", f"must be one of: {', '.join(CONSUMES)}")
            consumes = None
        scans = c.text(table, "scans", f"{prefix}.scans", required=False)
        if scans is not None and scans not in SCANS:
            c.fail(f"{prefix}.scans", f"must be one of: {', '.join(SCANS)}")
            scans = None
        if scans is not None and creates is not None:
            c.fail(f"{prefix}.scans", "the step that creates the bags cannot check their "
                                      "labels: scan them in a step after it")
            scans = None
        if scans is not None and repeatable:
            c.fail(f"{prefix}.scans", "a label check runs once: it cannot be repeatable")
            scans = None
        params = _parameters(c, table, prefix)
        needs = _needs(c, table, prefix)
        if creates is not None and any(p.code == "bags" for p in params):
            c.fail(f"{prefix}.parameters", "'bags' is reserved for the number of bags filled")
        if code is not None and name is not None:
            steps.append(Step(code=code, name=name, index=len(steps),
                              instructions=instructions or "", repeatable=repeatable,
                              critical=critical, creates=creates, expiry_from=expiry_from,
                              parameters=tuple(params), consumes=consumes, scans=scans,
                              needs=needs))
    if sum(1 for s in steps if s.consumes) > 1:
        c.fail("steps", "only one step may consume the starting material")
    creator = next((s for s in steps if s.creates is not None), None)
    for step in steps:
        if step.scans is not None and (creator is None or step.index < creator.index):
            c.fail(f"steps[{step.index}] ({step.code}).scans",
                   f"no step before it creates the {step.scans} whose labels it checks")
    return steps


def _needs(c: _Checker, step: dict[str, Any], prefix: str) -> StepNeeds:
    """``[[steps.materials]]``, ``[[steps.equipment]]``, ``qualification`` and
    ``room_grade`` (SPEC §11). Materials are named by code; they need not exist yet."""
    materials: list[MaterialNeed] = []
    seen: set[str] = set()
    for i, table in enumerate(c.tables(step, "materials", f"{prefix}.materials")):
        name = f"{prefix}.materials[{i}]"
        c.unknown(table, _STEP_MATERIAL, f"{name}.")
        code = c.text(table, "material", f"{name}.material", pattern=MATERIAL_CODE)
        quantity = c.number(table, "quantity", f"{name}.quantity")
        if quantity is not None and quantity <= 0:
            c.fail(f"{name}.quantity", "must be more than zero")
            quantity = None
        if code is not None and code in seen:
            c.fail(f"{name}.material", f"material {code!r} is declared twice in this step")
        elif code is not None:
            seen.add(code)
            materials.append(MaterialNeed(code, quantity))
    equipment: list[EquipmentNeed] = []
    for i, table in enumerate(c.tables(step, "equipment", f"{prefix}.equipment")):
        name = f"{prefix}.equipment[{i}]"
        c.unknown(table, _STEP_EQUIPMENT, f"{name}.")
        kind = c.text(table, "type", f"{name}.type", pattern=EQUIPMENT_TYPE)
        if kind is not None:
            equipment.append(EquipmentNeed(kind))
    qualification = c.text(step, "qualification", f"{prefix}.qualification", required=False,
                           pattern=QUALIFICATION_CODE)
    grade = c.text(step, "room_grade", f"{prefix}.room_grade", required=False)
    if grade is not None and grade not in ROOM_GRADES:
        c.fail(f"{prefix}.room_grade", f"must be one of: {', '.join(ROOM_GRADES)}")
        grade = None
    return StepNeeds(tuple(materials), tuple(equipment), qualification, grade)


def _parameters(c: _Checker, step: dict[str, Any], step_prefix: str) -> list[Parameter]:
    params: list[Parameter] = []
    parameters = c.keyed_tables(step, "parameters", f"{step_prefix}.parameters", "code",
                                "parameter code")
    for prefix, code, table in parameters:
        c.unknown(table, _PARAM, f"{prefix}.")
        name = c.text(table, "name", f"{prefix}.name", required=False) or code
        unit = c.text(table, "unit", f"{prefix}.unit", empty_ok=True)
        type_: str | None = (c.text(table, "type", f"{prefix}.type", required=False)
                             or ParamType.NUMBER.value)
        if type_ not in {t.value for t in ParamType}:
            c.fail(f"{prefix}.type", f"must be one of: {', '.join(t.value for t in ParamType)}")
            type_ = None
        lo = c.number(table, "min", f"{prefix}.min")
        hi = c.number(table, "max", f"{prefix}.max")
        c.limits(lo, hi, f"{prefix}.min")
        c.physical(lo, unit, f"{prefix}.min")
        c.physical(hi, unit, f"{prefix}.max")
        if type_ in (ParamType.BOOLEAN, ParamType.TEXT) and (lo is not None or hi is not None):
            c.fail(f"{prefix}.min", f"a {type_} parameter has no numeric limits")
        expected = c.boolean(table, "expected", f"{prefix}.expected")
        if expected is not None and type_ != ParamType.BOOLEAN:
            c.fail(f"{prefix}.expected", "only a boolean parameter has an expected value")
        required = c.boolean(table, "required", f"{prefix}.required")
        severity = c.text(table, "severity", f"{prefix}.severity", required=False)
        if severity is not None and severity not in {s.value for s in Severity}:
            c.fail(f"{prefix}.severity",
                   f"must be one of: {', '.join(s.value for s in Severity)}")
        if code is not None and unit is not None and type_ is not None:
            params.append(Parameter(code=code, name=name or code, unit=unit, type=type_,
                                    min=lo, max=hi, expected=expected,
                                    required=True if required is None else required,
                                    severity=severity or Severity.MAJOR.value))
    return params


def _qc(c: _Checker, data: dict[str, Any], step_codes: set[str]) -> list[QcSpec]:
    specs: list[QcSpec] = []
    for prefix, test, table in c.keyed_tables(data, "qc", "qc", "test", "QC test"):
        c.unknown(table, _QC, f"{prefix}.")
        method = c.text(table, "method", f"{prefix}.method", required=False)
        unit = c.text(table, "unit", f"{prefix}.unit", required=False, empty_ok=True)
        lo = c.number(table, "min", f"{prefix}.min")
        hi = c.number(table, "max", f"{prefix}.max")
        c.limits(lo, hi, f"{prefix}.min")
        accept = c.text(table, "accept", f"{prefix}.accept", required=False)
        if accept is not None and normal_outcome(accept) == INVALID_OUTCOME:
            c.fail(f"{prefix}.accept", "'invalid' is the outcome of an assay with no valid "
                                       "result; it cannot be the accept value")
        c.physical(lo, unit, f"{prefix}.min")
        c.physical(hi, unit, f"{prefix}.max")
        if accept is not None and (lo is not None or hi is not None):
            c.fail(f"{prefix}.accept", "a test is either qualitative (accept) or has min/max")
        if accept is None and lo is None and hi is None and "accept" not in table:
            c.fail(f"{prefix}", "needs an acceptance criterion: accept, min or max")
        ttr = c.duration(table, "time_to_result", f"{prefix}.time_to_result", required=False)
        rbr = c.boolean(table, "release_before_result", f"{prefix}.release_before_result")
        sample_step = c.text(table, "sample_step", f"{prefix}.sample_step", required=False)
        if sample_step is not None and sample_step not in step_codes:
            c.fail(f"{prefix}.sample_step", f"unknown step {sample_step!r}")
        if test is not None:
            specs.append(QcSpec(test=test, method=method, unit=unit, min=lo, max=hi,
                                accept=accept, time_to_result=ttr,
                                release_before_result=bool(rbr), sample_step=sample_step))
    return specs


def _curve(c: _Checker, data: dict[str, Any], steps: list[Step]) -> Curve | None:
    table = c.table(data, "curve", "curve", required=False)
    if table is None:
        return None
    c.unknown(table, _CURVE, "curve.")
    step_code = c.text(table, "step", "curve.step")
    cells = c.text(table, "viable_cells", "curve.viable_cells")
    viability = c.text(table, "viability", "curve.viability")
    step = next((s for s in steps if s.code == step_code), None)
    if step_code is not None and step is None:
        c.fail("curve.step", f"unknown step {step_code!r}")
        return None
    for key, value in (("viable_cells", cells), ("viability", viability)):
        if step is not None and value is not None and step.parameter(value) is None:
            c.fail(f"curve.{key}", f"step {step.code!r} has no parameter {value!r}")
    if step_code is None or cells is None or viability is None:
        return None
    return Curve(step=step_code, viable_cells=cells, viability=viability)


def _forecast(c: _Checker, data: dict[str, Any], steps: list[Step]) -> ForecastSpec | None:
    """SPEC §15 ``[forecast]``: a cells parameter of a step, a positive target, a harvest
    day after batch start, a probability strictly between 0 and 1."""
    table = c.table(data, "forecast", "forecast", required=False)
    if table is None:
        return None
    c.unknown(table, _FORECAST, "forecast.")
    step_code = c.text(table, "step", "forecast.step")
    parameter = c.text(table, "parameter", "forecast.parameter")
    day_parameter = c.text(table, "day_parameter", "forecast.day_parameter", required=False)
    target = c.number(table, "target", "forecast.target")
    harvest_day = c.number(table, "harvest_day", "forecast.harvest_day")
    alert_below = c.number(table, "alert_below", "forecast.alert_below")
    for key, value in (("target", target), ("harvest_day", harvest_day)):
        if key not in table:
            c.fail(f"forecast.{key}", "missing required field")
        elif value is not None and value <= 0:
            c.fail(f"forecast.{key}", "must be more than 0")
    if alert_below is not None and not 0 < alert_below < 1:
        c.fail("forecast.alert_below", "must be a probability between 0 and 1 (exclusive)")
    step = next((s for s in steps if s.code == step_code), None)
    if step_code is not None and step is None:
        c.fail("forecast.step", f"unknown step {step_code!r}")
    if step is not None and parameter is not None:
        found = step.parameter(parameter)
        if found is None:
            c.fail("forecast.parameter", f"step {step.code!r} has no parameter {parameter!r}")
        elif not found.numeric or found.unit.strip().lower() != "cells":
            c.fail("forecast.parameter", f"{parameter!r} must be a number in cells")
    if step is not None and day_parameter is not None:
        found = step.parameter(day_parameter)
        if found is None:
            c.fail("forecast.day_parameter",
                   f"step {step.code!r} has no parameter {day_parameter!r}")
        elif not found.numeric:
            c.fail("forecast.day_parameter", f"{day_parameter!r} must be a number")
    if (step is None or parameter is None or target is None or harvest_day is None
            or c.errors):
        return None
    return ForecastSpec(step=step.code, parameter=parameter, target=target,
                        harvest_day=harvest_day,
                        alert_below=0.2 if alert_below is None else alert_below,
                        day_parameter=day_parameter)


def _canonical_forecast(forecast: ForecastSpec | None) -> dict[str, Any]:
    """``forecast`` only when declared: the digests of earlier versions hold."""
    if forecast is None:
        return {}
    return {"forecast": {
        "step": forecast.step, "parameter": forecast.parameter, "target": forecast.target,
        "harvest_day": forecast.harvest_day, "alert_below": forecast.alert_below,
        **({"day_parameter": forecast.day_parameter} if forecast.day_parameter else {}),
    }}


def _canonical_raw(
    definition: ProcessDefinition, data: dict[str, Any], curve: Curve | None
) -> dict[str, Any]:
    """The normalised document stored in the database (defaults made explicit)."""
    from gmp_mes.durations import format_duration

    def dur(value: timedelta | None) -> str | None:
        return None if value is None else format_duration(value)

    return {
        "code": definition.code,
        "version": definition.version,
        "name": definition.name,
        "description": definition.description,
        "shelf_life": {
            "starting_material": dur(definition.starting_material_hold),
            "final_product": dur(definition.final_product_shelf_life),
            "post_thaw": dur(definition.post_thaw),
            "warn_before": list(definition.warn_before),
        },
        "storage": dict(definition.storage),
        "curve": None if curve is None else {
            "step": curve.step,
            "viable_cells": curve.viable_cells,
            "viability": curve.viability,
        },
        **_canonical_forecast(definition.forecast),
        "steps": [
            {
                "code": s.code, "name": s.name, "instructions": s.instructions,
                "repeatable": s.repeatable, "critical": s.critical, "creates": s.creates,
                "expiry_from": s.expiry_from,
                # Written only when declared, so definitions without it keep their digest.
                **({"consumes": s.consumes} if s.consumes else {}),
                **({"scans": s.scans} if s.scans else {}),
                **_canonical_needs(s.needs),
                "parameters": [
                    {"code": p.code, "name": p.name, "unit": p.unit, "type": p.type,
                     "min": p.min, "max": p.max, "expected": p.expected,
                     "required": p.required, "severity": p.severity}
                    for p in s.parameters
                ],
            }
            for s in definition.steps
        ],
        "qc": [
            {"test": q.test, "method": q.method, "unit": q.unit, "min": q.min, "max": q.max,
             "accept": q.accept, "time_to_result": dur(q.time_to_result),
             "release_before_result": q.release_before_result, "sample_step": q.sample_step}
            for q in definition.qc
        ],
        # Written only when declared, so definitions without it keep their digest.
        **_canonical_follow_up(definition.follow_up),
        **_canonical_schedule(definition.schedule),
    }


def _canonical_follow_up(follow_up: FollowUp | None) -> dict[str, Any]:
    if follow_up is None:
        return {}
    out: dict[str, Any] = {"visits": list(follow_up.visits),
                           "long_term_years": follow_up.long_term_years}
    if follow_up.window_declared:
        out["window"] = format_duration(follow_up.window)
    return {"follow_up": out}


def _canonical_needs(needs: StepNeeds) -> dict[str, Any]:
    """A step's declared needs, each key only when declared (earlier digests hold)."""
    out: dict[str, Any] = {}
    if needs.materials:
        out["materials"] = [
            {"material": m.material, **({"quantity": m.quantity} if m.quantity else {})}
            for m in needs.materials
        ]
    if needs.equipment:
        out["equipment"] = [{"type": e.type} for e in needs.equipment]
    if needs.qualification:
        out["qualification"] = needs.qualification
    if needs.room_grade:
        out["room_grade"] = needs.room_grade
    return out


def from_canonical(raw: dict[str, Any], source: str = "database") -> ProcessDefinition:
    """Rebuild a definition from its stored canonical JSON (validated again)."""
    data = {k: v for k, v in raw.items() if v not in (None, {}, "") or k == "description"}
    data["shelf_life"] = {k: v for k, v in raw["shelf_life"].items() if v is not None}
    data["steps"] = [
        {**{k: v for k, v in s.items() if v not in (None, "") and k != "parameters"},
         "parameters": [{k: v for k, v in p.items() if v is not None} for p in s["parameters"]]}
        for s in raw["steps"]
    ]
    data["qc"] = [{k: v for k, v in q.items() if v is not None} for q in raw["qc"]]
    if not data.get("description"):
        data.pop("description", None)
    return parse_definition(data, source)


# --- files ----------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedFile:
    path: Path
    definition: ProcessDefinition


def load_file(path: Path) -> ProcessDefinition:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ProcessDefinitionError(str(path), [("", f"not valid TOML ({exc})")]) from exc
    except OSError as exc:
        raise ProcessDefinitionError(str(path), [("", f"cannot read: {exc.strerror}")]) from exc
    return parse_definition(data, str(path))


def load_directories(directories: Iterable[Path | None]) -> list[LoadedFile]:
    """Every ``*.toml`` of the directories, all validated; raise on the first bad file.

    Duplicate code+version across files is an error too: which file would win
    must never depend on directory order.
    """
    loaded: list[LoadedFile] = []
    seen: dict[tuple[str, int], Path] = {}
    for directory in directories:
        if directory is None or not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.toml")):
            definition = load_file(path)
            key = (definition.code, definition.version)
            if key in seen:
                raise ProcessDefinitionError(str(path), [(
                    "version",
                    f"{definition.code} version {definition.version} is already defined "
                    f"in {seen[key]}",
                )])
            seen[key] = path
            loaded.append(LoadedFile(path, definition))
    return loaded
