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
    """An agreement file that is not valid (every problem listed)."""


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


def parse_agreement(data: dict[str, Any], source: str) -> Agreement:
    problems: list[str] = []
    code = data.get("code")
    if not isinstance(code, str) or not CODE.match(code):
        problems.append("code: upper-case letters, digits and hyphens")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        problems.append("version: a whole number from 1")
    name, process = data.get("name"), data.get("process")
    if not isinstance(name, str) or not name.strip():
        problems.append("name: required")
    if not isinstance(process, str) or not process.strip():
        problems.append("process: the process code the agreement covers")
    milestones: list[Milestone] = []
    raw = data.get("milestones")
    if not isinstance(raw, list) or not raw:
        problems.append("milestones: at least one [[milestones]] table")
        raw = []
    for i, table in enumerate(raw):
        where = f"milestones[{i}]"
        try:
            kind = Kind(table.get("kind"))
            mcode = table.get("code")
            if not isinstance(mcode, str) or not MILESTONE_CODE.match(mcode):
                raise ValueError("code: lower-case letters, digits and underscores")
            at = parse_duration(table["at"]) if kind is not Kind.INFUSED else timedelta(0)
            window = parse_duration(table["window"]) if "window" in table else DEFAULT_WINDOW
            responses = tuple(table.get("responses", ["CR"]))
            if not set(responses) <= set(PROGRESSION_FREE):
                raise ValueError("responses: among CR, PR, SD")
            milestones.append(Milestone(mcode, str(table.get("name") or mcode), kind, at,
                                        window, responses))
        except (KeyError, ValueError, AttributeError) as exc:
            problems.append(f"{where}: {exc}")
    if len({m.code for m in milestones}) != len(milestones):
        problems.append("milestones: codes must differ")
    if problems:
        raise AgreementError(f"{source}: " + "; ".join(problems))
    return Agreement(code=str(code), version=int(version), name=str(name).strip(),  # type: ignore[arg-type]
                     process=str(process).strip().upper(), milestones=tuple(milestones),
                     payer=str(data.get("payer") or ""))


def load_agreements(directory: Path) -> dict[str, Agreement]:
    """Every ``*.toml`` of the directory, keyed by code (the highest version wins)."""
    found: dict[str, Agreement] = {}
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as handle:
            agreement = parse_agreement(tomllib.load(handle), str(path))
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
