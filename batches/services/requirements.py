"""What a step needs (SPEC §11, §12): material lots, equipment, qualifications, rooms.

batches does not know these domains: it builds one ``registry.StepContext`` and asks every
``registry.step_requirements`` provider (materials, equipment; the rooms issue adds
qualifications and rooms the same way). The step is refused with every reason of every
provider at once, or recorded with what they signed; their ``apply`` runs once the step
record exists, in the same transaction (lots consumed, equipment use logged). A kind of
need the step declares that no installed provider checks is refused
(``requirement_unchecked``): a declared control never passes unseen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from batches.models import Batch
from gmp_mes import registry
from gmp_mes.errors import Conflict, conflict
from gmp_mes.models import User
from gmp_mes.registry import Reason, StepContext, StepResources
from processes.definitions import ProcessDefinition, Step

NOTHING_GIVEN = StepResources()


@dataclass
class Requirements:
    """Every provider's answer for one step, merged."""

    reasons: list[Reason] = field(default_factory=list)
    # Per need checked (the provider's owner name): what the signatures bind.
    signed: dict[str, object] = field(default_factory=dict)
    applies: list[Callable[[Session, int], None]] = field(default_factory=list)

    def refusal(self, step: Step) -> Conflict:
        """409 with the code of the first reason and every reason listed (SPEC §11)."""
        return conflict(
            self.reasons[0]["code"],
            f"step {step.code} cannot be recorded: "
            + "; ".join(r["message"] for r in self.reasons),
            extra={"reasons": self.reasons},
        )


def check_requirements(
    session: Session,
    batch: Batch,
    definition: ProcessDefinition,
    step: Step,
    *,
    performer: User,
    verifier_username: str | None,
    given: StepResources,
    at: datetime,
    recording: bool,
) -> Requirements:
    """Ask every provider about this step; nothing is written here. With ``recording``
    the providers lock the rows they read until commit (two steps never both take the
    last vial)."""
    answer = Requirements()
    declared = registry.declared_needs(step.needs)
    if not declared and given == NOTHING_GIVEN:
        return answer  # the common step: no provider is asked (O(1), issue 15)
    context = StepContext(
        batch_number=batch.batch_number, coi_id=batch.coi_id,
        process_code=definition.code, process_version=definition.version,
        step_code=step.code, needs=step.needs, given=given, at=at,
        performer_id=performer.id, verifier_username=verifier_username,
        site_code=performer.site.code, recording=recording,
    )
    owners = registry.step_requirements.owners()
    for need in declared:
        if need not in {owner for owner, _ in owners}:
            answer.reasons.append({
                "code": "requirement_unchecked",
                "message": f"step {step.code} declares {need.replace('_', ' ')}, which no "
                           "installed domain checks: it cannot be recorded here",
            })
    for owner, provider in owners:
        check = provider(session, context)
        answer.reasons.extend(check.reasons)
        if check.signed is not None:
            answer.signed[owner] = check.signed
        if check.apply is not None:
            answer.applies.append(check.apply)
    return answer
