"""Outcome agreements (issue 21): milestones a payer pays on, declared in
``config/agreements/*.toml``, evaluated per patient from the signed follow-up records.

A milestone is ``met``, ``not_met`` or ``pending`` (evidence not in yet). Kinds:

- ``infused``: met once the patient was infused with a batch of the agreement's process;
- ``alive_progression_free`` at ``at`` after the infusion: not met when a death on or
  before that day or a progression (PD) assessed up to ``at`` + ``window`` is recorded;
  met by an assessment from ``at`` - ``window`` on, alive, with a response of CR, PR or SD;
- ``in_remission`` at ``at``: not met on a death by then; met by an assessment within
  ``at`` +/- ``window``, alive, with a response among ``responses`` (default CR); not met
  when such an assessment has another response (NE is no assessment).

Pure: the rules take the infusion time and the current records; no database.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from gmp_mes.durations import format_duration, parse_duration

CODE = re.compile(r"^[A-Z][A-Z0-9-]{0,39}$")
MILESTONE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEFAULT_WINDOW = timedelta(days=30)
PROGRESSION_FREE = ("CR", "PR", "SD")


class Kind(enum.StrEnum):
    INFUSED = "infused"
    ALIVE_PROGRESSION_FREE = "alive_progression_free"
    IN_REMISSION = "in_remission"


class Status(enum.StrEnum):
    MET = "met"
    NOT_MET = "not_met"
    PENDING = "pending"


@dataclass(frozen=True)
class Milestone:
    code: str
    name: str
    kind: Kind
    at: timedelta = timedelta(0)
    window: timedelta = DEFAULT_WINDOW
    responses: tuple[str, ...] = ("CR",)


@dataclass(frozen=True)
class Agreement:
    code: str
    version: int
    name: str
    process: str
    milestones: tuple[Milestone, ...]
    payer: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "version": self.version, "name": self.name,
                "payer": self.payer, "process": self.process}


class AgreementError(ValueError):
    """An agreement file that is not valid: ``errors`` lists every (field, message), the
    message is one line naming the file and the fields (as processes' definition files)."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = "; ".join(f"{name}: {message}" if name else message for name, message in errors)
        super().__init__(f"agreement file {source}: {lines}")


@dataclass(frozen=True)
class Assessment:
    """What a rule reads of one current follow-up record."""

    record_id: int
    visit: str
    assessed_at: datetime
    response: str
    alive: bool
    death_date: date | None


@dataclass(frozen=True)
class Evaluation:
    milestone: Milestone
    status: Status
    evidence: tuple[int, ...]  # the follow-up record ids the status rests on
    due_at: datetime | None


def _milestone(table: object, where: str, problems: list[tuple[str, str]]) -> Milestone | None:
    """One ``[[milestones]]`` table, or None with its problems named ``milestones[i].field``."""
    if not isinstance(table, dict):
        problems.append((where, "a table ([[milestones]])"))
        return None
    before = len(problems)
    kinds = ", ".join(k.value for k in Kind)
    raw_kind = table.get("kind")
    kind = Kind(raw_kind) if raw_kind in {k.value for k in Kind} else None
    if kind is None:
        problems.append((f"{where}.kind", "required: one of " + kinds if raw_kind is None
                         else f"unknown milestone kind {raw_kind!r}: one of {kinds}"))
    mcode = table.get("code")
    if not isinstance(mcode, str) or not MILESTONE_CODE.match(mcode):
        problems.append((f"{where}.code", "required: lower-case letters, digits and "
                                          "underscores"))

    def duration(key: str, default: timedelta | None) -> timedelta:
        if key not in table:
            if default is None:
                problems.append((f"{where}.{key}", f"required for kind {raw_kind} (an ISO "
                                                   "8601 duration such as P182D)"))
            return default or timedelta(0)
        try:
            return parse_duration(table[key])
        except (ValueError, TypeError) as exc:
            problems.append((f"{where}.{key}", str(exc)))
            return timedelta(0)

    at = duration("at", None) if kind not in (Kind.INFUSED, None) else timedelta(0)
    window = duration("window", DEFAULT_WINDOW)
    responses = table.get("responses", ["CR"])
    if not isinstance(responses, list) or not responses or \
            not set(responses) <= set(PROGRESSION_FREE):
        problems.append((f"{where}.responses", "a list among CR, PR, SD"))
        responses = ["CR"]
    if len(problems) > before or kind is None:
        return None
    return Milestone(str(mcode), str(table.get("name") or mcode), kind, at, window,
                     tuple(responses))


def parse_agreement(data: dict[str, Any], source: str) -> Agreement:
    """Validate a parsed agreement file; AgreementError lists every problem, by field."""
    problems: list[tuple[str, str]] = []
    code = data.get("code")
    if not isinstance(code, str) or not CODE.match(code):
        problems.append(("code", "required: upper-case letters, digits and hyphens"))
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.append(("version", "required: a whole number from 1"))
    name, process = data.get("name"), data.get("process")
    if not isinstance(name, str) or not name.strip():
        problems.append(("name", "required"))
    if not isinstance(process, str) or not process.strip():
        problems.append(("process", "required: the process code the agreement covers"))
    milestones: list[Milestone] = []
    raw = data.get("milestones")
    if not isinstance(raw, list) or not raw:
        problems.append(("milestones", "at least one [[milestones]] table"))
        raw = []
    for i, table in enumerate(raw):
        milestone = _milestone(table, f"milestones[{i}]", problems)
        if milestone is not None:
            milestones.append(milestone)
    if len({m.code for m in milestones}) != len(milestones):
        problems.append(("milestones", "codes must differ"))
    if problems:
        raise AgreementError(source, problems)
    return Agreement(code=str(code), version=int(version), name=str(name).strip(),  # type: ignore[arg-type]
                     process=str(process).strip().upper(), milestones=tuple(milestones),
                     payer=str(data.get("payer") or ""))


def load_agreement_file(path: Path) -> Agreement:
    """One file: not TOML, unreadable or invalid is an AgreementError naming it."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise AgreementError(str(path), [("", f"not valid TOML ({exc})")]) from exc
    except OSError as exc:
        raise AgreementError(str(path), [("", f"cannot read: {exc.strerror}")]) from exc
    return parse_agreement(data, str(path))


def load_agreements(directory: Path) -> dict[str, Agreement]:
    """Every ``*.toml`` of the directory, keyed by code (the highest version wins); the
    first bad file refuses them all (which milestones a statement shows must never depend
    on which files happened to parse). Two files with one code and version are refused."""
    found: dict[str, Agreement] = {}
    seen: dict[tuple[str, int], Path] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.toml")):
        agreement = load_agreement_file(path)
        key = (agreement.code, agreement.version)
        if key in seen:
            raise AgreementError(str(path), [("version", (
                f"{agreement.code} version {agreement.version} is already defined in "
                f"{seen[key]}"))])
        seen[key] = path
        if agreement.code not in found or found[agreement.code].version < agreement.version:
            found[agreement.code] = agreement
    return found


def evaluate(milestone: Milestone, infused_at: datetime | None,
             assessments: Sequence[Assessment]) -> Evaluation:
    """One milestone for one patient (the rules of the module docstring)."""
    if infused_at is None:
        return Evaluation(milestone, Status.PENDING, (), None)
    if milestone.kind is Kind.INFUSED:
        return Evaluation(milestone, Status.MET, (), infused_at)
    due = infused_at + milestone.at
    ordered = sorted(assessments, key=lambda a: (a.assessed_at, a.record_id))
    deaths = [a for a in ordered if a.death_date is not None and a.death_date <= due.date()]
    if deaths:
        return Evaluation(milestone, Status.NOT_MET, (deaths[0].record_id,), due)
    if milestone.kind is Kind.ALIVE_PROGRESSION_FREE:
        progressed = [a for a in ordered if a.response == "PD"
                      and a.assessed_at <= due + milestone.window]
        if progressed:
            return Evaluation(milestone, Status.NOT_MET, (progressed[0].record_id,), due)
        holding = [a for a in ordered if a.assessed_at >= due - milestone.window and a.alive
                   and a.response in PROGRESSION_FREE]
        if holding:
            return Evaluation(milestone, Status.MET, (holding[0].record_id,), due)
        return Evaluation(milestone, Status.PENDING, (), due)
    around = [a for a in ordered if due - milestone.window <= a.assessed_at
              <= due + milestone.window and a.response != "NE"]
    if not around:
        return Evaluation(milestone, Status.PENDING, (), due)
    first = around[0]
    met = first.alive and first.response in milestone.responses
    return Evaluation(milestone, Status.MET if met else Status.NOT_MET, (first.record_id,), due)


def milestone_json(evaluation: Evaluation) -> dict[str, Any]:
    m = evaluation.milestone
    return {"code": m.code, "name": m.name, "kind": m.kind.value,
            "at": format_duration(m.at), "window": format_duration(m.window),
            "due_at": None if evaluation.due_at is None
            else evaluation.due_at.isoformat(),
            "status": evaluation.status.value, "evidence": list(evaluation.evidence)}
